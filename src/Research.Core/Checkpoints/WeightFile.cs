using Research.Core.Files;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Research.Core.Checkpoints;

/// <summary>The outcome of loading weights by parameter name.</summary>
/// <param name="Loaded">Parameters whose values came from the file.</param>
/// <param name="Missing">Parameters of the model absent from the file (kept as initialised).</param>
/// <param name="Unexpected">Tensors in the file that the model has no parameter for.</param>
/// <param name="ShapeMismatch">Names present in both with different shapes (not loaded).</param>
public sealed record LoadReport(IReadOnlyList<string> Loaded, IReadOnlyList<string> Missing, IReadOnlyList<string> Unexpected, IReadOnlyList<string> ShapeMismatch)
{
    public bool IsComplete => Missing.Count == 0 && Unexpected.Count == 0 && ShapeMismatch.Count == 0;
}

/// <summary>Model weights as safetensors keyed by parameter name (TorchSharp.PyBridge reads and writes the format).</summary>
public static class WeightFile
{
    public const string FileName = "model.safetensors";

    public static void Save(nn.Module module, string path) =>
        Save(module.state_dict().Select(kv => (kv.Key, kv.Value)), path);

    /// <summary>Writes named tensors through <see cref="OutputFile"/> (a temporary file beside, then renamed; a path that is
    /// not a file is refused).</summary>
    public static void Save(IEnumerable<(string Name, Tensor Value)> tensors, string path)
    {
        using var _ = NewDisposeScope();
        var state = tensors.ToDictionary(t => t.Name, t => t.Value.detach().cpu().contiguous());
        OutputFile.Write(path, temporary => Safetensors.SaveStateDict(temporary, state));
    }

    /// <summary>A checkpoint directory holds <c>model.safetensors</c>; a file path is used as it is.</summary>
    public static string Resolve(string path) => Directory.Exists(path) ? Path.Combine(path, FileName) : path;

    /// <summary>
    /// The weights file <paramref name="path"/> names (a folder: its <c>model.safetensors</c>), cleared for reading: weights
    /// in a checkpoint folder (<see cref="Checkpoint.IsCheckpoint"/>) only when its manifest verifies — a folder whose
    /// <c>manifest.json</c> is gone is refused, not read unchecked — and every file's structure checked
    /// (<see cref="SafetensorsCheck"/>). A bare <c>.safetensors</c> file has no manifest by design; only its structure is checked.
    /// </summary>
    /// <exception cref="FileNotFoundException">There is no such file.</exception>
    /// <exception cref="InvalidDataException">The checkpoint does not verify, or the file is malformed; the message names it.</exception>
    public static string Verified(string path)
    {
        var file = Resolve(path);
        if (!File.Exists(file)) throw new FileNotFoundException($"init_from: no weights at {file}", file);
        var dir = Path.GetDirectoryName(Path.GetFullPath(file))!;
        if (Checkpoint.IsCheckpoint(dir) && Checkpoint.Verify(dir) is { } problem)
            throw new InvalidDataException($"init_from {file}: its checkpoint is refused: {problem}");
        SafetensorsCheck.Check(file);
        return file;
    }

    /// <summary>
    /// Whether a tensor stored as <paramref name="stored"/> may be loaded into a tensor of dtype <paramref name="target"/>:
    /// the same dtype, or two floating-point dtypes — a published fp16 or bf16 file into fp32 weights, fp32 weights into a
    /// half-precision model — where the conversion is a rounding. Integers and floating point never mix: an F32 tensor
    /// relabelled I32 in its header holds the same bytes, read as integers of about 10⁹, and a cast would load them.
    /// </summary>
    public static bool Loadable(ScalarType stored, ScalarType target) => stored == target || (IsFloating(stored) && IsFloating(target));

    static bool IsFloating(ScalarType t) => t is ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float32 or ScalarType.Float64;

    /// <summary>The problem of loading <paramref name="stored"/> (tensor <paramref name="name"/> of <paramref name="file"/>)
    /// into a tensor of dtype <paramref name="target"/>, or null when <see cref="Loadable"/>.</summary>
    public static string? DTypeProblem(string file, string name, ScalarType stored, ScalarType target) =>
        Loadable(stored, target) ? null
            : $"{file}: tensor '{name}' is stored as {SafetensorsName(stored)}, where the model's tensor is {SafetensorsName(target)}; " +
              "integer and floating-point values do not convert (a relabelled or damaged header)";

    /// <summary>Refuses, naming the file, the tensor and both dtypes, the first of <paramref name="targets"/> whose stored
    /// tensor (by the same name) cannot be loaded into it (<see cref="Loadable"/>); names absent from the file are the
    /// caller's to report.</summary>
    /// <exception cref="InvalidDataException">A stored tensor's dtype does not suit its target.</exception>
    public static void CheckDTypes(string file, IReadOnlyDictionary<string, Tensor> stored, IEnumerable<(string Name, Tensor Target)> targets)
    {
        foreach (var (name, target) in targets)
            if (stored.TryGetValue(name, out var t) && DTypeProblem(file, name, t.dtype, target.dtype) is { } problem)
                throw new InvalidDataException(problem);
    }

    /// <summary>The dtype as a safetensors header writes it (what one who edited the header reads there).</summary>
    internal static string SafetensorsName(ScalarType t) => t switch
    {
        ScalarType.Float64 => "F64", ScalarType.Float32 => "F32", ScalarType.Float16 => "F16", ScalarType.BFloat16 => "BF16",
        ScalarType.Int64 => "I64", ScalarType.Int32 => "I32", ScalarType.Int16 => "I16", ScalarType.Int8 => "I8",
        ScalarType.Byte => "U8", ScalarType.Bool => "BOOL", _ => t.ToString(),
    };

    /// <summary>
    /// Loads tensors by name into <paramref name="module"/>. Strict: any missing (except names under
    /// <paramref name="skipPrefixes"/>, which will be re-initialised), unexpected or mis-shaped key is an error
    /// that lists them all, and nothing is changed. Not strict: what matches is loaded and the rest reported.
    /// </summary>
    public static LoadReport Load(nn.Module module, string path, bool strict, IReadOnlyCollection<string> skipPrefixes)
    {
        var file = Verified(path);
        bool Skipped(string name) => skipPrefixes.Any(p => name == p || name.StartsWith(p + "."));
        var stored = SafetensorsCheck.Load(file);
        try
        {
            var own = module.state_dict();
            // Strict or not: a tensor of the wrong kind of dtype is damage, not a layout that partly matches.
            CheckDTypes(file, stored, own.Where(kv => !Skipped(kv.Key)).Select(kv => (kv.Key, kv.Value)));
            var missing = own.Keys.Where(k => !stored.ContainsKey(k) && !Skipped(k)).ToList();
            var unexpected = stored.Keys.Where(k => !own.ContainsKey(k)).ToList();
            var mismatch = own.Keys.Where(k => stored.TryGetValue(k, out var t) && !Skipped(k) && !t.shape.SequenceEqual(own[k].shape))
                .Select(k => $"{k} (model {Shape(own[k])}, file {Shape(stored[k])})").ToList();
            if (strict && (missing.Count > 0 || unexpected.Count > 0 || mismatch.Count > 0))
                throw new InvalidDataException(
                    $"init_from {file}: strict load failed — missing: [{string.Join(", ", missing)}]; " +
                    $"unexpected: [{string.Join(", ", unexpected)}]; shape mismatch: [{string.Join(", ", mismatch)}]. " +
                    "Set [model] strict = false to load what matches, or reinit = [...] for new heads.");
            var loaded = new List<string>();
            using (no_grad())
                foreach (var (name, target) in own)
                {
                    if (Skipped(name) || !stored.TryGetValue(name, out var src) || !src.shape.SequenceEqual(target.shape)) continue;
                    target.copy_(src.to(target.dtype));
                    loaded.Add(name);
                }
            return new LoadReport(loaded, own.Keys.Where(k => !loaded.Contains(k)).ToList(), unexpected, mismatch);
        }
        finally { foreach (var t in stored.Values) t.Dispose(); }
    }

    static string Shape(Tensor t) => "[" + string.Join("×", t.shape) + "]";
}
