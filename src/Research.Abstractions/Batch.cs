using System.Collections;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Abstractions;

/// <summary>
/// A batch: named tensors whose first dimension is the batch dimension B. A model reads the names it knows; a task reads
/// <see cref="Targets"/>; nothing else in the core looks inside, so a new kind of input needs no contract change.
/// </summary>
/// <remarks>
/// Well-known names: <c>input</c> ([B, …] float, the MLP's and CNN's input), <c>input_ids</c>, <c>attention_mask</c> and
/// <c>token_type_ids</c> ([B, T] int64; mask 1 = token, 0 = padding), <c>image</c> ([B, C, H, W] float), <c>targets</c>
/// ([B] class ids, or [B, T] token ids; <see cref="IgnoreIndex"/> marks items that do not count). A batch does not own
/// its tensors: whoever made them frees them (<see cref="DisposeTensors"/>; the core does so for the batches it makes).
/// </remarks>
public sealed class Batch : IReadOnlyDictionary<string, Tensor>
{
    public const string Input = "input", InputIds = "input_ids", AttentionMask = "attention_mask",
        TokenTypeIds = "token_type_ids", Image = "image", Targets = "targets";

    /// <summary>A target equal to this does not count (padding, ignored tokens), as in PyTorch's cross-entropy.</summary>
    public const long IgnoreIndex = -100;

    readonly Dictionary<string, Tensor> _tensors;

    /// <summary>A batch of the given tensors, which must agree on the batch dimension.</summary>
    public Batch(IEnumerable<KeyValuePair<string, Tensor>> tensors)
    {
        _tensors = new Dictionary<string, Tensor>(tensors, StringComparer.Ordinal);
        if (_tensors.Count == 0) throw new ArgumentException("a batch needs at least one tensor", nameof(tensors));
        var sizes = _tensors.Where(kv => kv.Value.dim() == 0).Select(kv => kv.Key).ToList();
        if (sizes.Count > 0) throw new ArgumentException($"batch tensor '{sizes[0]}' is a scalar; every tensor has the batch dimension first");
        Size = _tensors.First().Value.shape[0];
        var other = _tensors.FirstOrDefault(kv => kv.Value.shape[0] != Size);
        if (other.Key != null)
            throw new ArgumentException($"batch tensors disagree on the batch dimension: '{_tensors.First().Key}' has {Size}, '{other.Key}' has {other.Value.shape[0]}");
    }

    /// <summary>A classification batch: <c>input</c> and <c>targets</c>.</summary>
    public Batch(Tensor input, Tensor targets) : this([new(Input, input), new(Targets, targets)]) { }

    /// <summary>B, the rows of the batch.</summary>
    public long Size { get; }

    /// <summary>The tensor of a name; the error lists the names there are.</summary>
    public Tensor this[string name] => _tensors.TryGetValue(name, out var t) ? t
        : throw new KeyNotFoundException($"the batch has no tensor '{name}' (it has: {string.Join(", ", _tensors.Keys)})");

    /// <summary><c>targets</c>: the shorthand every task uses.</summary>
    public Tensor TargetsTensor => this[Targets];

    /// <summary>Which targets count (targets ≠ <see cref="IgnoreIndex"/>), shaped like the targets; owned by the caller.</summary>
    public Tensor ItemMask() => this[Targets].ne(IgnoreIndex);

    /// <summary>N, the targets that count: what a loss over this batch is normalised by.</summary>
    public long Items
    {
        get
        {
            using var mask = ItemMask();
            using var sum = mask.sum();
            return sum.item<long>();
        }
    }

    /// <summary>The rows at <paramref name="indices"/> (int64, [n]) of every tensor, as new tensors.</summary>
    public Batch Select(Tensor indices) => new(_tensors.Select(kv => KeyValuePair.Create(kv.Key, kv.Value.index_select(0, indices))));

    /// <summary>Rows [start, start + length) of every tensor, as views.</summary>
    public Batch Narrow(long start, long length) => new(_tensors.Select(kv => KeyValuePair.Create(kv.Key, kv.Value.narrow(0, start, length))));

    /// <summary>
    /// The rows of several batches in one (a batch mixed with memory items). Each part has the same names; a tensor of
    /// rank ≥ 2 whose axis 1 differs between parts (token sequences) is right-padded to the longest, with
    /// <see cref="IgnoreIndex"/> for targets and 0 otherwise (an attention mask of 0 is padding).
    /// </summary>
    public static Batch Concat(IReadOnlyList<Batch> parts)
    {
        if (parts.Count == 0) throw new ArgumentException("nothing to concatenate", nameof(parts));
        if (parts.Count == 1) return new Batch(parts[0]._tensors.Select(kv => KeyValuePair.Create(kv.Key, kv.Value.clone())));
        var names = parts[0]._tensors.Keys.ToList();
        foreach (var p in parts.Skip(1))
            if (p._tensors.Count != names.Count || names.Any(n => !p._tensors.ContainsKey(n)))
                throw new ArgumentException($"batches with different tensors cannot be concatenated: [{string.Join(", ", names)}] and [{string.Join(", ", p._tensors.Keys)}]");
        return new Batch(names.Select(name =>
        {
            var tensors = parts.Select(p => p._tensors[name]).ToList();
            if (tensors[0].dim() >= 2)
            {
                var longest = tensors.Max(t => t.shape[1]);
                double fill = name == Targets ? IgnoreIndex : 0;
                tensors = tensors.Select(t => t.shape[1] == longest ? t
                    : nn.functional.pad(t, PadAxis1(t.dim(), longest - t.shape[1]), value: fill)).ToList();
            }
            return KeyValuePair.Create(name, cat(tensors, 0));
        }));
    }

    /// <summary>F.pad's argument that right-pads axis 1 of a tensor of the given rank (pads are listed from the last axis).</summary>
    static long[] PadAxis1(long rank, long amount)
    {
        var pad = new long[2 * (rank - 1)];
        pad[^1] = amount;
        return pad;
    }

    /// <summary>Disposes every tensor (for whoever made them).</summary>
    public void DisposeTensors()
    {
        foreach (var t in _tensors.Values) t.Dispose();
    }

    public IEnumerable<string> Keys => _tensors.Keys;
    public IEnumerable<Tensor> Values => _tensors.Values;
    public int Count => _tensors.Count;
    public bool ContainsKey(string key) => _tensors.ContainsKey(key);
    public bool TryGetValue(string key, out Tensor value) => _tensors.TryGetValue(key, out value!);
    public IEnumerator<KeyValuePair<string, Tensor>> GetEnumerator() => _tensors.GetEnumerator();
    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
}
