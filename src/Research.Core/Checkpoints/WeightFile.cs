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
    /// Loads tensors by name into <paramref name="module"/>. Strict: any missing (except names under
    /// <paramref name="skipPrefixes"/>, which will be re-initialised), unexpected or mis-shaped key is an error
    /// that lists them all, and nothing is changed. Not strict: what matches is loaded and the rest reported.
    /// </summary>
    public static LoadReport Load(nn.Module module, string path, bool strict, IReadOnlyCollection<string> skipPrefixes)
    {
        var file = Resolve(path);
        if (!File.Exists(file)) throw new FileNotFoundException($"init_from: no weights at {file}", file);
        // Weights inside a checkpoint are read only if the checkpoint verifies (its SHA-256 manifest).
        var dir = Path.GetDirectoryName(Path.GetFullPath(file))!;
        if (File.Exists(Path.Combine(dir, Checkpoint.Manifest)) && Checkpoint.Verify(dir) is { } problem)
            throw new InvalidDataException($"init_from {file}: its checkpoint is refused: {problem}");
        SafetensorsCheck.Check(file);
        bool Skipped(string name) => skipPrefixes.Any(p => name == p || name.StartsWith(p + "."));
        var stored = Safetensors.LoadStateDict(file);
        try
        {
            var own = module.state_dict();
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
