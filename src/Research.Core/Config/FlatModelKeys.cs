using System.Text.Json.Nodes;

namespace Research.Core.Config;

/// <summary>
/// The identity form of <c>[model]</c> for the kinds of release 2.2. Up to 2.2 one flat <c>[model]</c> section served every
/// kind, so the canonical config of every run stored then holds all the keys below, those its kind did not read at their
/// defaults. Now each kind has its own options (<see cref="ModelKindOptions"/>) and the canonical config holds only the
/// chosen kind's keys; the identity adds back each key below that the kind does not own, at its 2.2 default, so the
/// identity of every config 2.2 accepted is unchanged (tests/Fixtures/identities/identities-2.2.tsv) and stored runs
/// resume and finished sweep trials are adopted as before.
/// </summary>
/// <remarks>Frozen: this is 2.2's section as it was. A key a kind gains later is not in it, and a kind registered later
/// (not one of <see cref="Kinds"/>) gets none of these keys.</remarks>
public static class FlatModelKeys
{
    /// <summary>The kinds of release 2.2.</summary>
    public static IReadOnlyList<string> Kinds { get; } = ["mlp", "cnn", "gpt", "bert", "resnet"];

    /// <summary>2.2's kind-specific <c>[model]</c> keys and their 2.2 defaults, as canonical JSON text.</summary>
    public static IReadOnlyList<(string Key, string Default)> Defaults { get; } =
    [
        ("hidden", "[256,256]"), ("width", "0"), ("layers", "0"), ("heads", "0"), ("intermediate", "0"),
        ("max_positions", "0"), ("dropout", "0"), ("blocks", "[]"), ("image_side", "64"), ("batch_norm", "\"update\""),
    ];

    /// <summary>Adds to a canonical <c>[model]</c> object of a 2.2 kind the keys of <see cref="Defaults"/> it lacks.</summary>
    public static void Restore(JsonObject model)
    {
        if (model["kind"] is not JsonValue kind || !kind.TryGetValue<string>(out var name) || !Kinds.Contains(name)) return;
        foreach (var (key, value) in Defaults)
            if (!model.ContainsKey(key)) model[key] = JsonNode.Parse(value);
    }
}
