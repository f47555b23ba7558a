using System.Security.Cryptography;
using System.Text.Json;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Research.Core.Checkpoints;

/// <summary>One evaluation as a checkpoint stores it (reduce-on-plateau reads the history after a resume).</summary>
public sealed record SavedEvaluation(long Step, int Epoch, Dictionary<string, double> Metrics);

/// <summary>
/// The JSON state of a checkpoint: where in the run it was taken and everything besides tensors that the
/// continuation depends on. Data order needs no RNG state: it is derived from (seed, epoch), so the position
/// (<see cref="Epoch"/>, <see cref="WindowInEpoch"/>) is enough. The loop has no other random stream (no dropout).
/// </summary>
/// <param name="Step">Optimizer updates taken (the schedule's t).</param>
/// <param name="Epoch">The epoch the next window belongs to.</param>
/// <param name="WindowInEpoch">Accumulation windows of that epoch already consumed.</param>
/// <param name="Windows">Windows run so far, skipped ones included.</param>
/// <param name="ConfigHash">SHA-256 of the resolved config text: a resume with another config is refused.</param>
public sealed record CheckpointState(
    int Format, string RunId, long Step, int Epoch, long WindowInEpoch, long Windows, long SkippedSteps,
    double LossScale, int ScalerGoodSteps, List<SavedEvaluation> Evaluations, double? Best,
    string ConfigHash, long Seed, int Threads, string WrittenUtc);

/// <summary>
/// A checkpoint is a directory: <c>model.safetensors</c> (the fp32 weights of record by parameter name — the master
/// copy under mixed precision), <c>optimizer.safetensors</c> (moments as <c>slot/parameter</c>),
/// <c>regularizers.safetensors</c> (<c>index.name/key</c>), <c>state.json</c>, and <c>manifest.json</c> with the
/// SHA-256 of every other file. It is written under a temporary name, each file flushed to disk, then renamed:
/// a crash leaves either the whole checkpoint or none. Loading verifies the manifest.
/// </summary>
public static class Checkpoint
{
    public const int FormatVersion = 1;
    public const string Model = "model.safetensors", Optimizer = "optimizer.safetensors", Regularizers = "regularizers.safetensors",
        State = "state.json", Manifest = "manifest.json";
    static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    /// <summary>Writes <paramref name="name"/> under <paramref name="checkpointsDir"/>, replacing one of that name.</summary>
    public static string Write(string checkpointsDir, string name, CheckpointState state,
        IEnumerable<(string Name, Tensor Value)> weights, IEnumerable<(string Name, Tensor Value)> optimizer,
        IEnumerable<(string Name, Tensor Value)> regularizers)
    {
        Directory.CreateDirectory(checkpointsDir);
        var final = Path.Combine(checkpointsDir, name);
        var tmp = Path.Combine(checkpointsDir, $".{name}.tmp-{Guid.NewGuid():N}");
        Directory.CreateDirectory(tmp);
        using (NewDisposeScope())
        {
            SaveTensors(Path.Combine(tmp, Model), weights);
            SaveTensors(Path.Combine(tmp, Optimizer), optimizer);
            SaveTensors(Path.Combine(tmp, Regularizers), regularizers);
        }
        WriteDurably(Path.Combine(tmp, State), JsonSerializer.SerializeToUtf8Bytes(state, Json));
        var manifest = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var f in new[] { Model, Optimizer, Regularizers, State }) manifest[f] = Sha256(Path.Combine(tmp, f));
        WriteDurably(Path.Combine(tmp, Manifest), JsonSerializer.SerializeToUtf8Bytes(manifest, Json));
        if (Directory.Exists(final))
        {
            var old = Path.Combine(checkpointsDir, $".{name}.old-{Guid.NewGuid():N}");
            Directory.Move(final, old);
            Directory.Move(tmp, final);
            Directory.Delete(old, recursive: true);
        }
        else Directory.Move(tmp, final);
        return final;
    }

    static void SaveTensors(string path, IEnumerable<(string Name, Tensor Value)> tensors)
    {
        var dict = tensors.ToDictionary(t => t.Name, t => t.Value.detach().cpu().contiguous());
        if (dict.Count == 0) dict["__empty__"] = zeros(0);
        Safetensors.SaveStateDict(path, dict);
        using var f = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        f.Flush(flushToDisk: true);
    }

    static void WriteDurably(string path, byte[] bytes)
    {
        using var f = new FileStream(path, FileMode.CreateNew, FileAccess.Write);
        f.Write(bytes);
        f.Flush(flushToDisk: true);
    }

    static string Sha256(string path)
    {
        using var f = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(f));
    }

    /// <summary>Null when the checkpoint is complete and every file matches its manifest; else the problem, naming the file.</summary>
    public static string? Verify(string dir)
    {
        var manifestPath = Path.Combine(dir, Manifest);
        if (!File.Exists(manifestPath)) return $"{manifestPath} is missing";
        Dictionary<string, string>? manifest;
        try { manifest = JsonSerializer.Deserialize<Dictionary<string, string>>(File.ReadAllBytes(manifestPath)); }
        catch (JsonException e) { return $"{manifestPath} is not valid JSON: {e.Message}"; }
        if (manifest is null) return $"{manifestPath} is empty";
        foreach (var f in new[] { Model, Optimizer, Regularizers, State })
        {
            var path = Path.Combine(dir, f);
            if (!manifest.TryGetValue(f, out var expected)) return $"{manifestPath} does not list {f}";
            if (!File.Exists(path)) return $"{path} is missing";
            if (Sha256(path) != expected) return $"{path} does not match its SHA-256 in the manifest (truncated or corrupt)";
        }
        return null;
    }

    public static CheckpointState ReadState(string dir) =>
        JsonSerializer.Deserialize<CheckpointState>(File.ReadAllBytes(Path.Combine(dir, State)))
        ?? throw new InvalidDataException($"{Path.Combine(dir, State)} is empty");

    /// <summary>Periodic checkpoints of a run, newest first (<c>step-000123</c>).</summary>
    public static IEnumerable<string> Periodic(string checkpointsDir) =>
        Directory.Exists(checkpointsDir)
            ? Directory.GetDirectories(checkpointsDir, "step-*").OrderByDescending(d => d, StringComparer.Ordinal)
            : [];

    /// <summary>
    /// The newest periodic checkpoint that verifies. Each corrupt one is reported (and kept for inspection) and
    /// the previous one is tried.
    /// </summary>
    public static (string Dir, CheckpointState State)? LatestValid(string checkpointsDir, Action<string> report)
    {
        foreach (var dir in Periodic(checkpointsDir))
        {
            var problem = Verify(dir);
            if (problem is null) return (dir, ReadState(dir));
            report($"checkpoint {dir} is refused: {problem}; trying the previous one");
        }
        return null;
    }

    /// <summary>Deletes all but the newest <paramref name="keep"/> periodic checkpoints.</summary>
    public static void Prune(string checkpointsDir, int keep)
    {
        foreach (var dir in Periodic(checkpointsDir).Skip(keep)) Directory.Delete(dir, recursive: true);
    }

    /// <summary>The tensors of one file, owned by the caller.</summary>
    public static Dictionary<string, Tensor> Load(string dir, string file) => Safetensors.LoadStateDict(Path.Combine(dir, file));

    public static string PeriodicName(long step) => $"step-{step:D9}";
}
