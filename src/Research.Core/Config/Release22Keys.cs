using System.Text.Json.Nodes;

namespace Research.Core.Config;

/// <summary>
/// The identity form of <c>[model]</c> and <c>[data]</c> for the kinds and sources of release 2.2. Up to 2.2 one flat
/// <c>[model]</c> section served every kind and one flat <c>[data]</c> section every dataset, so the canonical config of
/// every run stored then holds all the keys below, those its kind or dataset did not read at their defaults. Now each kind
/// and each source has its own options (<see cref="ModelKindOptions"/>, <c>Research.Core.Data.DataSources</c>) and the
/// canonical config holds only the keys the run reads; the identity adds back each key below that is missing, at its 2.2
/// default, so the identity of every config 2.2 accepted is unchanged (tests/Fixtures/identities/) and stored runs resume
/// and finished sweep trials are adopted as before.
/// </summary>
/// <remarks>Frozen: these are 2.2's sections as they were, their defaults written out rather than read from today's
/// options, so a default changed later cannot move a stored identity. A key a kind or source gains later is not here, and
/// a kind or source registered later gets none of these keys.</remarks>
public static class Release22Keys
{
    /// <summary>The model kinds of release 2.2.</summary>
    public static IReadOnlyList<string> Kinds { get; } = ["mlp", "cnn", "gpt", "bert", "resnet"];

    /// <summary>The datasets of release 2.2.</summary>
    public static IReadOnlyList<string> Sources { get; } = ["fashion-mnist", "synthetic", "fortunes", "fortunes-de"];

    /// <summary>2.2's kind-specific <c>[model]</c> keys and their 2.2 defaults, as canonical JSON text.</summary>
    public static IReadOnlyList<(string Key, string Default)> Model { get; } =
    [
        ("hidden", "[256,256]"), ("width", "0"), ("layers", "0"), ("heads", "0"), ("intermediate", "0"),
        ("max_positions", "0"), ("dropout", "0"), ("blocks", "[]"), ("image_side", "64"), ("batch_norm", "\"update\""),
    ];

    /// <summary>2.2's dataset-specific <c>[data]</c> keys and their 2.2 defaults, as canonical JSON text.</summary>
    public static IReadOnlyList<(string Key, string Default)> Data { get; } =
    [
        ("path", "\"\""), ("task", "\"classify\""), ("tokenizer", "\"bytes\""), ("context", "128"), ("stride", "0"),
        ("topics", "[]"), ("min_topic_entries", "580"), ("test_fraction", "0.1"),
        ("synthetic_samples", "2000"), ("synthetic_features", "16"), ("synthetic_classes", "4"),
    ];

    /// <summary>Adds to the identity form of a canonical config the keys of <see cref="Model"/> and <see cref="Data"/> its
    /// <c>[model]</c> (of a 2.2 kind) and <c>[data]</c> (of a 2.2 dataset) lack.</summary>
    public static void Restore(JsonObject canonical)
    {
        Restore(canonical["model"], "kind", Kinds, Model);
        Restore(canonical["data"], "dataset", Sources, Data);
    }

    static void Restore(JsonNode? section, string chooser, IReadOnlyList<string> of, IReadOnlyList<(string Key, string Default)> keys)
    {
        if (section is not JsonObject table || table[chooser] is not JsonValue v || !v.TryGetValue<string>(out var name) || !of.Contains(name)) return;
        foreach (var (key, value) in keys)
            if (!table.ContainsKey(key)) table[key] = JsonNode.Parse(value);
    }
}
