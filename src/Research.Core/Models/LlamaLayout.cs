using System.Text.RegularExpressions;
using Research.Core.Checkpoints;
using Research.Core.Files;
using static TorchSharp.torch;

namespace Research.Core.Models;

/// <summary>
/// Hugging Face's safetensors layout of a Llama-family model (<c>LlamaForCausalLM</c>, <c>Qwen2ForCausalLM</c>): the
/// tensors carry <see cref="Llama"/>'s own parameter names, weights [out, in] as torch's Linear stores them, in a folder
/// beside its <c>config.json</c>. What differs from loading by name: a tied model's file may hold a copy of the embedding
/// as <c>lm_head.weight</c>, and older files hold each layer's rotary <c>inv_freq</c> buffer.
/// </summary>
public static partial class LlamaLayout
{
    /// <summary>The untied output projection's key.</summary>
    public const string LmHead = "lm_head.weight";

    /// <summary>The embedding's key.</summary>
    public const string Embedding = "model.embed_tokens.weight";

    [GeneratedRegex(@"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")]
    private static partial Regex RotaryBuffer();

    /// <summary>
    /// Loads a safetensors file (or a folder holding <c>model.safetensors</c>) into <paramref name="model"/>, strictly: every
    /// body parameter's tensor must be there with its shape and a floating-point dtype (cast to the model's); a tied model
    /// accepts an <c>lm_head.weight</c> only equal to the embedding bitwise, a classifier ignores it (its <c>head</c> stays
    /// new); rotary <c>inv_freq</c> buffers are skipped (recomputed from rope_theta); any other tensor is an error. Nothing
    /// changes on a problem.
    /// </summary>
    /// <exception cref="InvalidDataException">One line per problem, each naming the file and the key.</exception>
    public static void Load(Llama model, string path)
    {
        var folder = Directory.Exists(path) ? path : null;
        if (folder is not null && !File.Exists(WeightFile.Resolve(path)) && File.Exists(Path.Combine(folder, "model.safetensors.index.json")))
            throw new InvalidDataException($"init_from {folder}: the weights are sharded (model.safetensors.index.json), which this kind does not read; merge them into one model.safetensors");
        var file = WeightFile.Verified(path);
        var stored = SafetensorsCheck.Load(file);
        try
        {
            var problems = new List<string>();
            var body = Body(model).ToList();
            foreach (var (name, p) in body)
            {
                if (!stored.TryGetValue(name, out var t)) problems.Add($"{file}: no tensor '{name}' (expected {Show(p.shape)}; {model.Config})");
                else if (!t.shape.SequenceEqual(p.shape)) problems.Add($"{file}: tensor '{name}' is {Show(t.shape)}, expected {Show(p.shape)} ({model.Config})");
                else if (WeightFile.DTypeProblem(file, name, t.dtype, p.dtype) is { } problem) problems.Add(problem);
            }
            var names = body.Select(b => b.name).ToHashSet();
            if (!names.Contains(LmHead) && model.Classes == 0 && stored.TryGetValue(LmHead, out var head) && stored.TryGetValue(Embedding, out var embed)
                && !(head.shape.SequenceEqual(embed.shape) && head.dtype == embed.dtype && eq(head, embed).all().item<bool>()))
                problems.Add($"{file}: tensor '{LmHead}' differs from '{Embedding}', and this model ties them (tie_word_embeddings): set it false to read an untied head");
            foreach (var key in stored.Keys.Order(StringComparer.Ordinal))
                if (!names.Contains(key) && key != LmHead && !RotaryBuffer().IsMatch(key))
                    problems.Add($"{file}: unexpected tensor '{key}' (not in the Llama layout of {model.Config})");
            if (problems.Count > 0) throw new InvalidDataException(string.Join("\n", problems));
            using var _ = no_grad();
            foreach (var (name, p) in body) p.copy_(stored[name]);
        }
        finally { foreach (var t in stored.Values) t.Dispose(); }
    }

    /// <summary>
    /// Writes <paramref name="model"/>'s body to <paramref name="path"/> in Hugging Face's layout (its parameter names, in the
    /// model's dtype; a tied model without <c>lm_head.weight</c>, as <c>save_pretrained</c> leaves it out) and its
    /// <c>config.json</c> beside it, so the folder is one <c>from_pretrained</c> reads.
    /// </summary>
    public static void Save(Llama model, string path)
    {
        WeightFile.Save(Body(model).Select(b => (b.name, (Tensor)b.parameter)), path);
        var config = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, "config.json");
        OutputFile.WriteAllText(config, model.Config.ToJson());
    }

    /// <summary>The parameters the layout holds: all but a classification head.</summary>
    static IEnumerable<(string name, TorchSharp.Modules.Parameter parameter)> Body(Llama model) =>
        model.named_parameters().Where(p => !p.name.StartsWith("head."));

    static string Show(long[] shape) => "[" + string.Join(", ", shape) + "]";
}
