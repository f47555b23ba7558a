using static TorchSharp.torch;

namespace Research.Plugins.Methods;

/// <summary>
/// The flat state dictionaries of <see cref="Research.Abstractions.IStateful"/>: tensors by parameter name under a prefix
/// (<c>anchor/layers.0.weight</c>), and counters as 0-d int64 tensors, so that a checkpoint (which saves exactly the state)
/// restores them.
/// </summary>
static class StateEntries
{
    /// <summary><c>prefix/name</c> → tensor for every entry; nothing when <paramref name="tensors"/> is null.</summary>
    public static IEnumerable<KeyValuePair<string, Tensor>> Prefixed(string prefix, IReadOnlyDictionary<string, Tensor>? tensors) =>
        tensors?.Select(kv => KeyValuePair.Create($"{prefix}/{kv.Key}", kv.Value)) ?? [];

    /// <summary>The entries under <c>prefix/</c> with the prefix removed, or null when there are none.</summary>
    public static Dictionary<string, Tensor>? Part(IReadOnlyDictionary<string, Tensor> state, string prefix)
    {
        var part = state.Where(kv => kv.Key.StartsWith(prefix + "/", StringComparison.Ordinal))
            .ToDictionary(kv => kv.Key[(prefix.Length + 1)..], kv => kv.Value);
        return part.Count == 0 ? null : part;
    }

    /// <summary>The tensor of a key, or null.</summary>
    public static Tensor? Entry(IReadOnlyDictionary<string, Tensor> state, string key) =>
        state.TryGetValue(key, out var t) ? t : null;

    /// <summary>A counter's value; an absent counter is 0.</summary>
    public static long Value(Tensor? counter) => counter is null ? 0 : counter.item<long>();

    /// <summary>A new 0-d int64 tensor holding a counter.</summary>
    public static Tensor Counter(long value) => tensor(value);

    /// <summary>The state of several parts in one dictionary (absent parts are skipped).</summary>
    public static IReadOnlyDictionary<string, Tensor> Of(params IEnumerable<KeyValuePair<string, Tensor>>[] parts) =>
        new Dictionary<string, Tensor>(parts.SelectMany(p => p), StringComparer.Ordinal);

    /// <summary>One entry, or nothing when the tensor is null.</summary>
    public static IEnumerable<KeyValuePair<string, Tensor>> One(string key, Tensor? value) =>
        value is null ? [] : [KeyValuePair.Create(key, value)];
}
