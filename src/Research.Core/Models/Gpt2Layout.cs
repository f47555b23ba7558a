using System.Text.RegularExpressions;
using Research.Core.Checkpoints;
using static TorchSharp.torch;

namespace Research.Core.Models;

/// <summary>
/// Hugging Face's GPT-2 safetensors layout (<c>GPT2LMHeadModel</c>) for a <see cref="Gpt"/>: our name <c>n</c> is the key
/// <c>transformer.n</c>, and the Conv1D weights (<c>attn.c_attn</c>, <c>attn.c_proj</c>, <c>mlp.c_fc</c>, <c>mlp.c_proj</c>)
/// are stored [in, out], the transpose of our Linear's [out, in]. Files written by <c>GPT2Model</c> (and the hub's own
/// <c>gpt2</c> file) have the same keys without <c>transformer.</c>; both are read, and told from this framework's own
/// checkpoints by <see cref="Recognise"/>.
/// </summary>
public static partial class Gpt2Layout
{
    /// <summary>The prefix <c>GPT2LMHeadModel</c> gives its body's tensors.</summary>
    public const string Prefix = "transformer.";

    /// <summary>The output projection's key: tied to the token embedding, so a file may hold a copy of <c>wte</c> here.</summary>
    public const string LmHead = "lm_head.weight";

    /// <summary>The causal-mask buffers older versions of transformers saved with each block; they carry no weights.</summary>
    [GeneratedRegex(@"^h\.\d+\.attn\.(bias|masked_bias)$")]
    private static partial Regex MaskBuffer();

    /// <summary>The layouts a GPT's weights come in.</summary>
    public enum Layout
    {
        /// <summary>Neither layout: not a GPT's weights (or not a file at all).</summary>
        None,
        /// <summary>This framework's names, Linear weights [out, in] (a checkpoint of a gpt run).</summary>
        Ours,
        /// <summary>Hugging Face's GPT-2: <c>GPT2LMHeadModel</c>'s <c>transformer.*</c> or its base <c>GPT2Model</c>'s names
        /// without the prefix, Conv1D weights [in, out], a tied <c>lm_head.weight</c> present or not.</summary>
        Gpt2,
    }

    /// <summary>
    /// Which layout a safetensors file (or a folder with <c>model.safetensors</c>) is in, from its header alone. The two
    /// share their names but for GPT-2's optional <c>transformer.</c> prefix, so names decide where they can — the prefix,
    /// <c>lm_head.weight</c> and the per-block mask buffers are GPT-2's only — and otherwise the attention's input projection
    /// does: <c>h.{i}.attn.c_attn.weight</c> is [d, 3d] in GPT-2's Conv1D and [3d, d] in our Linear (the square
    /// <c>attn.c_proj</c> would load either way, silently wrong). A model of no blocks has no such weight, and there the
    /// two layouts hold the same tensors: it is read as ours. <see cref="Layout.None"/> when the file has no
    /// <c>wte.weight</c> (with or without the prefix) or is no file.
    /// </summary>
    /// <exception cref="InvalidDataException">The file is not a well-formed safetensors file.</exception>
    public static Layout Recognise(string path)
    {
        var file = WeightFile.Resolve(path);
        if (!File.Exists(file)) return Layout.None;
        var shapes = SafetensorsCheck.Shapes(file);
        if (shapes.ContainsKey(Prefix + "wte.weight")) return Layout.Gpt2;
        if (!shapes.ContainsKey("wte.weight")) return Layout.None;
        if (shapes.ContainsKey(LmHead) || shapes.Keys.Any(k => MaskBuffer().IsMatch(k))) return Layout.Gpt2;
        foreach (var (name, shape) in shapes)
            if (AttentionInput().IsMatch(name) && shape.Length == 2)
                return shape[1] == 3 * shape[0] ? Layout.Gpt2 : shape[0] == 3 * shape[1] ? Layout.Ours : Layout.None;
        return Layout.Ours;
    }

    [GeneratedRegex(@"^h\.\d+\.attn\.c_attn\.weight$")]
    private static partial Regex AttentionInput();

    /// <summary>
    /// What a file that is in neither layout is told: the names and shapes this model reads, in GPT-2's layout and in ours,
    /// and the first tensors the file holds instead.
    /// </summary>
    public static string Expected(Gpt model, string path)
    {
        var file = WeightFile.Resolve(path);
        var found = File.Exists(file) ? SafetensorsCheck.Shapes(file).Take(4).Select(kv => $"{kv.Key} {Show(kv.Value)}").ToList() : [];
        var d = model.Shape.Width;
        var first = string.Join(", ", Body(model).Take(3).Select(p => $"{p.name} {Show(p.parameter.shape)}"));
        return $"init_from {file}: not a GPT's weights in a layout this gpt reads ({model.Shape}). Expected GPT-2's safetensors layout — " +
               $"{first}, h.{{i}}.attn.c_attn.weight [{d}, {3 * d}] (Conv1D weights [in, out]), …, ln_f.bias [{d}], " +
               $"the names with or without '{Prefix}', a tied '{LmHead}' optional — or this framework's checkpoint (the same names " +
               $"without a prefix, Linear weights [out, in]: h.{{i}}.attn.c_attn.weight [{3 * d}, {d}]); " +
               $"the file holds {(found.Count == 0 ? "no tensors" : string.Join(", ", found) + (found.Count == 4 ? ", …" : ""))}. " +
               "Set [model] strict = false to load the tensors whose names match.";
    }

    /// <summary>Whether our parameter is a Conv1D weight in Hugging Face's layout (stored transposed).</summary>
    public static bool IsConv1DWeight(string name) =>
        name.EndsWith(".weight") && (name.Contains(".attn.c_") || name.Contains(".mlp.c_"));

    /// <summary>
    /// Loads a GPT-2 safetensors file (or a directory holding <c>model.safetensors</c>) into <paramref name="model"/>,
    /// strictly: every parameter's tensor must be there with its shape and a floating-point dtype (cast to the model's,
    /// <see cref="WeightFile.Loadable"/>); weights in a checkpoint folder are read only when its manifest verifies;
    /// <c>lm_head.weight</c>, if present, must equal <c>wte</c> bitwise (this model ties them); the per-block
    /// <c>attn.bias</c>/<c>attn.masked_bias</c> buffers are skipped; any other tensor is an error. The file's structure
    /// is checked (<see cref="WeightFile.Verified"/>) before anything is read, and on any problem nothing is changed.
    /// </summary>
    /// <exception cref="InvalidDataException">One line per problem, each naming the file and the key.</exception>
    public static void Load(Gpt model, string path)
    {
        var file = WeightFile.Verified(path);
        var stored = SafetensorsCheck.Load(file);
        try
        {
            var prefix = stored.Keys.Any(k => k.StartsWith(Prefix)) ? Prefix : "";
            var problems = new List<string>();
            var expected = new HashSet<string>();
            foreach (var (name, p) in Body(model))
            {
                var key = prefix + name;
                expected.Add(key);
                long[] shape = IsConv1DWeight(name) ? [p.shape[1], p.shape[0]] : p.shape;
                if (!stored.TryGetValue(key, out var t)) problems.Add($"{file}: no tensor '{key}' (expected {Show(shape)})");
                else if (!t.shape.SequenceEqual(shape))
                    problems.Add($"{file}: tensor '{key}' is {Show(t.shape)}, expected {Show(shape)}" + (IsConv1DWeight(name) ? " (Conv1D weights are stored [in, out])" : ""));
                else if (WeightFile.DTypeProblem(file, key, t.dtype, p.dtype) is { } problem) problems.Add(problem);
            }
            if (stored.TryGetValue(LmHead, out var head) && stored.TryGetValue(prefix + "wte.weight", out var wte)
                && !(head.shape.SequenceEqual(wte.shape) && head.dtype == wte.dtype && eq(head, wte).all().item<bool>()))
                problems.Add($"{file}: tensor '{LmHead}' differs from '{prefix}wte.weight'; this GPT ties its output projection to the token embedding, so an untied head cannot be loaded");
            foreach (var key in stored.Keys.Order(StringComparer.Ordinal))
                if (!expected.Contains(key) && key != LmHead && !(key.StartsWith(prefix) && MaskBuffer().IsMatch(key[prefix.Length..])))
                    problems.Add($"{file}: unexpected tensor '{key}' (not in GPT-2's layout for {model.Shape})");
            if (problems.Count > 0) throw new InvalidDataException(string.Join("\n", problems));

            using var _ = no_grad();
            foreach (var (name, p) in Body(model))
            {
                var t = stored[prefix + name];
                p.copy_(IsConv1DWeight(name) ? t.t() : t);
            }
        }
        finally { foreach (var t in stored.Values) t.Dispose(); }
    }

    /// <summary>
    /// Writes <paramref name="model"/> in <c>GPT2LMHeadModel</c>'s layout (<c>transformer.*</c>, Conv1D weights [in, out],
    /// in the model's dtype) to <paramref name="path"/>. Like <c>save_pretrained</c> it leaves out the tied
    /// <c>lm_head.weight</c> and the mask buffers; unlike it, no <c>config.json</c> and no <c>__metadata__</c>.
    /// </summary>
    public static void Save(Gpt model, string path) =>
        WeightFile.Save(Body(model).Select(np => (Prefix + np.name, IsConv1DWeight(np.name) ? np.parameter.t() : (Tensor)np.parameter)), path);

    /// <summary>The parameters GPT-2's layout holds: all but a classification head (which a language model file has not; it
    /// stays as initialised, and <c>research export</c> writes the body).</summary>
    static IEnumerable<(string name, TorchSharp.Modules.Parameter parameter)> Body(Gpt model) =>
        model.named_parameters().Where(p => !p.name.StartsWith("head."));

    static string Show(long[] shape) => "[" + string.Join(", ", shape) + "]";
}
