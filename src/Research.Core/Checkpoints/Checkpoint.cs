using System.Security.Cryptography;
using System.Text.Json;
using Research.Core.Files;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Research.Core.Checkpoints;

/// <summary>One evaluation as a checkpoint stores it (the schedule and early stopping read the history after a resume).</summary>
/// <param name="Phase">The phase (task) it was taken in.</param>
public sealed record SavedEvaluation(int Phase, long Step, int Epoch, Dictionary<string, double> Metrics);

/// <summary>Where in a phase a checkpoint was taken.</summary>
public enum Stage
{
    /// <summary>Inside the phase's training (or after one of its epochs): <c>Epoch</c> and <c>WindowInEpoch</c> say where.</summary>
    Training,
    /// <summary>The phase's training ended; the task × task evaluation and consolidation are next.</summary>
    Trained,
    /// <summary>The phase's evaluation row and the methods' task end are done; the next phase is next.</summary>
    Consolidated,
}

/// <summary>A phase stopped early (early stopping), and why.</summary>
public sealed record PhaseStop(int Phase, string Reason);

/// <summary>What the run's plugins asked of it (<see cref="Research.Abstractions.RunControl"/>) and the loop had not yet
/// acted on when a checkpoint was written, and the stop that ended the run once it has.</summary>
/// <param name="StopBy">The method whose stop waits for the next step boundary, or null.</param>
/// <param name="StopReason">Its reason.</param>
/// <param name="Evaluation">An evaluation waits for the next step boundary.</param>
/// <param name="Checkpoint">A checkpoint waits for the next step boundary.</param>
/// <param name="Halted">The recorded line of a plugin's stop the loop acted on (a study then goes no further).</param>
public sealed record ControlRequests(string? StopBy, string? StopReason, bool Evaluation, bool Checkpoint, string? Halted);

/// <summary>The study's record so far: one row per finished phase (after task i), as the matrices and probes need it.</summary>
/// <param name="RandomInit">Test accuracy of the initial model on every task (the baseline of forward transfer).</param>
public sealed record StudyProgress(double[] RandomInit, List<StudyRow> Rows);

/// <summary>Row i of the study's record: after training task i, test accuracy and loss on every task j (the matrices R
/// and L the metrics read; the validation cells are in the run store), ‖θ_i − θ_{i−1}‖₂, and the rows the methods added to
/// probes of their own at task i's end (<see cref="Research.Abstractions.TaskEndContext.AddProbe"/>).</summary>
public sealed record StudyRow(double[] TestAccuracy, double[] TestLoss, double ChangeNorm, Dictionary<string, double[]>? Probes = null);

/// <summary>
/// The JSON state of a checkpoint: where in the run it was taken and everything besides tensors that the continuation
/// depends on. No random stream has hidden state: each is derived from (seed, name) and the name carries the position
/// (data order from (seed, task, epoch), the Fisher's draws from (seed, task)), so the position is the streams' state.
/// </summary>
/// <param name="Phase">The phase (study task) the checkpoint belongs to; 0 for a single run.</param>
/// <param name="Stage">Where in the phase.</param>
/// <param name="Step">Optimizer updates the run has applied (the one meaning of "step"; skipped fp16 steps do not count).</param>
/// <param name="OptimizerStep">Updates applied by the current optimizer (Adam's bias correction); less than
/// <see cref="Step"/> when a study resets the optimizer at each task.</param>
/// <param name="PhaseStartStep">The run's step when the phase began (a schedule that restarts at each task counts from it).</param>
/// <param name="Epoch">The epoch of the phase the next window belongs to.</param>
/// <param name="WindowInEpoch">Accumulation windows of that epoch already consumed.</param>
/// <param name="Windows">Windows run so far, skipped ones included.</param>
/// <param name="Best">The phase's best value of the selection metric so far.</param>
/// <param name="StopReasons">Why phases stopped early, so far.</param>
/// <param name="Study">The study's matrices so far; null for a single run.</param>
/// <param name="MetricRows">The store's last metric row (rowid) when the checkpoint was written: a resume drops the rows
/// after it, which a step number alone cannot tell apart (a skipped fp16 step logs at the step it did not advance).</param>
/// <param name="EvaluationRows">The same for evaluations.</param>
/// <param name="Identity">SHA-256 of the canonical resolved config: a resume with another config is refused.</param>
public sealed record CheckpointState(
    int Format, string RunId, int Phase, Stage Stage, long Step, long OptimizerStep, long PhaseStartStep,
    int Epoch, long WindowInEpoch, long Windows, long SkippedSteps,
    double LossScale, int ScalerGoodSteps, List<SavedEvaluation> Evaluations, double? Best, List<PhaseStop> StopReasons,
    StudyProgress? Study, long MetricRows, long EvaluationRows, string Identity, long Seed, int Threads, string WrittenUtc)
{
    /// <summary>The methods' values beside their tensors (<see cref="Research.Abstractions.IStateful.StateValues"/>), by the
    /// method's index in the config (as <c>methods.safetensors</c> keys its tensors) and the value's name; null when no
    /// method keeps any (and so absent from the file, as in checkpoints written before methods could).</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public Dictionary<string, Dictionary<string, JsonElement>>? MethodValues { get; init; }
    /// <summary>The plugins' requests not yet acted on, and a plugin's stop that was (null: none).</summary>
    public ControlRequests? Requests { get; init; }
    /// <summary>The parameters methods added at task starts (contract 3.0), one entry per call in the order made; their
    /// values and moments are tensors <c>added/…</c> of the methods' and optimizer's files. Null (absent) when none were.</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public List<AddedBlockState>? Added { get; init; }
}

/// <summary>One call of <c>AddParameters</c> as a checkpoint's state records it: the method that made it, the names it
/// added, and the updates its optimizer has taken (Adam's bias correction counts from the task that added them).</summary>
public sealed record AddedBlockState(string Owner, long StepCount, List<string> Names);

/// <summary>
/// A checkpoint is a directory: <c>model.safetensors</c> (the fp32 weights of record by parameter name — the master
/// copy under mixed precision), <c>optimizer.safetensors</c> (moments as <c>slot/parameter</c>),
/// <c>methods.safetensors</c> (<c>index.name/key</c>), <c>state.json</c>, and <c>manifest.json</c> with the
/// SHA-256 of every other file. It is written under a temporary name, each file flushed to disk, then renamed:
/// a crash leaves either the whole checkpoint or none. Loading verifies the manifest.
/// </summary>
public static class Checkpoint
{
    /// <summary>2: phases, stages and the study record (one loop for runs and studies).</summary>
    public const int FormatVersion = 3;
    public const string Model = "model.safetensors", Optimizer = "optimizer.safetensors", Methods = "methods.safetensors",
        State = "state.json", Manifest = "manifest.json";
    // Enums by name (a state file a person can read); NaN and ±∞ as named literals (a study cell of an empty split).
    static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Converters = { new System.Text.Json.Serialization.JsonStringEnumConverter() },
    };

    /// <summary>Writes <paramref name="name"/> under <paramref name="checkpointsDir"/>, replacing one of that name.</summary>
    public static string Write(string checkpointsDir, string name, CheckpointState state,
        IEnumerable<(string Name, Tensor Value)> weights, IEnumerable<(string Name, Tensor Value)> optimizer,
        IEnumerable<(string Name, Tensor Value)> methods)
    {
        Directory.CreateDirectory(checkpointsDir);
        var final = Path.Combine(checkpointsDir, name);
        var tmp = Path.Combine(checkpointsDir, $".{name}.tmp-{Guid.NewGuid():N}");
        Directory.CreateDirectory(tmp);
        try
        {
            using (NewDisposeScope())
            {
                SaveTensors(Path.Combine(tmp, Model), weights);
                SaveTensors(Path.Combine(tmp, Optimizer), optimizer);
                SaveTensors(Path.Combine(tmp, Methods), methods);
            }
            WriteDurably(Path.Combine(tmp, State), JsonSerializer.SerializeToUtf8Bytes(state, Json));
            var manifest = new SortedDictionary<string, string>(StringComparer.Ordinal);
            foreach (var f in new[] { Model, Optimizer, Methods, State }) manifest[f] = Sha256(Path.Combine(tmp, f));
            WriteDurably(Path.Combine(tmp, Manifest), JsonSerializer.SerializeToUtf8Bytes(manifest, Json));
        }
        catch (IOException)
        {
            // A full disk: the half-written copy goes, so that the run's failure can still be recorded in its store.
            try { Directory.Delete(tmp, recursive: true); } catch (IOException) { }
            throw;
        }
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

    /// <summary>Null when the checkpoint is complete, every file matches its manifest and every safetensors file is well
    /// formed (<see cref="SafetensorsCheck"/>); else the problem, naming the file.</summary>
    public static string? Verify(string dir)
    {
        var manifestPath = Path.Combine(dir, Manifest);
        if (!File.Exists(manifestPath)) return $"{manifestPath} is missing";
        // A FIFO or device in its place (a link to /dev/zero) would block the read or never end it.
        if (InputFile.Problem(manifestPath) is { } notAFile) return $"{manifestPath} {notAFile}";
        if (InputFile.Length(manifestPath) == 0) return $"{manifestPath} is empty";
        Dictionary<string, string>? manifest;
        try { manifest = JsonSerializer.Deserialize<Dictionary<string, string>>(File.ReadAllBytes(manifestPath)); }
        catch (JsonException e) { return $"{manifestPath} is not valid JSON: {e.Message}"; }
        if (manifest is null) return $"{manifestPath} is empty";
        foreach (var f in new[] { Model, Optimizer, Methods, State })
        {
            var path = Path.Combine(dir, f);
            if (!manifest.TryGetValue(f, out var expected)) return $"{manifestPath} does not list {f}";
            if (!File.Exists(path)) return $"{path} is missing";
            // A device or FIFO in its place (a link to /dev/zero) would be hashed forever.
            if (InputFile.Problem(path) is { } notAFileThere) return $"{path} {notAFileThere}";
            if (InputFile.Length(path) == 0) return $"{path} is empty";
            if (Sha256(path) != expected) return $"{path} does not match its SHA-256 in the manifest (truncated or corrupt)";
        }
        // A manifest proves the files are the ones written together, not that they are well formed: one re-signed after
        // surgery on a header (overlapping tensors, bytes of no tensor) is refused here like a corrupt one.
        foreach (var f in new[] { Model, Optimizer, Methods })
        {
            try { SafetensorsCheck.Check(Path.Combine(dir, f)); }
            catch (InvalidDataException e) { return e.Message; }
        }
        return null;
    }

    /// <summary>Whether <paramref name="dir"/> is (what is left of) a checkpoint: it holds a file only a checkpoint has
    /// beside its weights. Its weights are then read only when <see cref="Verify"/> passes; a folder holding nothing but
    /// a <c>model.safetensors</c> (a study's task-end weights, a published file) is plain weights.</summary>
    public static bool IsCheckpoint(string dir) =>
        new[] { Manifest, State, Optimizer, Methods }.Any(f => File.Exists(Path.Combine(dir, f)) || Directory.Exists(Path.Combine(dir, f)));

    /// <summary>The state of a verified checkpoint; one written in another format is refused, naming it.</summary>
    public static CheckpointState ReadState(string dir)
    {
        var path = Path.Combine(dir, State);
        CheckpointState? state;
        // Verified against its manifest, yet not necessarily what this version writes (a state re-signed by hand).
        try { state = JsonSerializer.Deserialize<CheckpointState>(File.ReadAllBytes(path), Json); }
        catch (JsonException e) { throw new InvalidDataException($"{path} is not a checkpoint state: {e.Message}", e); }
        if (state is null) throw new InvalidDataException($"{path} is empty");
        // JSON null where the state holds a value (a field left out or nulled by hand) would fail far from the file.
        string? missing =
            state.RunId is null ? "RunId" : state.Identity is null ? "Identity"
            : state.Evaluations is null || state.Evaluations.Any(e => e?.Metrics is null) ? "Evaluations"
            : state.StopReasons is null || state.StopReasons.Any(r => r?.Reason is null) ? "StopReasons"
            : state.Study is { } study && (study.RandomInit is null || study.Rows is null
                || study.Rows.Any(r => r?.TestAccuracy is null || r.TestLoss is null)) ? "Study"
            : null;
        if (missing != null) throw new InvalidDataException($"{path}: {missing} is missing or null; not a checkpoint state this version wrote");
        if (state.Format != FormatVersion)
            throw new InvalidDataException($"{path} has checkpoint format {state.Format}; this version reads format {FormatVersion} (resume it with the version that wrote it)");
        return state;
    }

    /// <summary>
    /// The checkpoints a run resumes from, newest first: a single run's periodic ones (<c>step-000000123</c>) and a
    /// study's (<see cref="StudyName"/>: <c>step-000000123-task-002-0</c>, <c>…-1-trained</c>, <c>…-2-consolidated</c>),
    /// whose names sort in the order they were written.
    /// </summary>
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

    /// <summary>
    /// Clears what a process killed inside <see cref="Write"/> left: a half-written <c>.NAME.tmp-…</c> folder is deleted; a
    /// <c>.NAME.old-…</c> folder (the previous NAME, moved aside just before the new one took its place) is moved back
    /// when NAME is missing and deleted otherwise. Run when a writer takes a run folder, before anything is read.
    /// </summary>
    public static void Tidy(string checkpointsDir, Action<string> report)
    {
        if (!Directory.Exists(checkpointsDir)) return;
        foreach (var dir in Directory.GetDirectories(checkpointsDir, ".*"))
        {
            var leaf = Path.GetFileName(dir);
            var at = leaf.LastIndexOf(".tmp-", StringComparison.Ordinal) is var t and > 0 ? t : leaf.LastIndexOf(".old-", StringComparison.Ordinal);
            if (at <= 0) continue;
            var name = Path.Combine(checkpointsDir, leaf[1..at]);
            if (leaf[at..].StartsWith(".old-") && !Directory.Exists(name))
            {
                Directory.Move(dir, name);
                report($"checkpoint {name} restored from {leaf} (the process was killed while replacing it)");
            }
            else
            {
                Directory.Delete(dir, recursive: true);
                report($"removed {dir}, left by a process killed while writing a checkpoint");
            }
        }
    }

    /// <summary>Deletes all but the newest <paramref name="keep"/> periodic checkpoints.</summary>
    public static void Prune(string checkpointsDir, int keep)
    {
        foreach (var dir in Periodic(checkpointsDir).Skip(keep)) Directory.Delete(dir, recursive: true);
    }

    /// <summary>The tensors of one file, owned by the caller.</summary>
    public static Dictionary<string, Tensor> Load(string dir, string file) => SafetensorsCheck.Load(Path.Combine(dir, file));

    public static string PeriodicName(long step) => $"step-{step:D9}";

    /// <summary>
    /// A study's checkpoints name their task and stage after the step — <c>step-S-task-00i-0</c> inside task i,
    /// <c>…-1-trained</c> after its training, <c>…-2-consolidated</c> after its consolidation — so names sort as
    /// (step, task, stage) even when two are written at one step (a task whose windows the fp16 loss scaler all skipped).
    /// </summary>
    public static string StudyName(long step, int phase, Stage stage) =>
        $"{PeriodicName(step)}-task-{phase:D3}-{stage switch { Stage.Training => "0", Stage.Trained => "1-trained", _ => "2-consolidated" }}";
}
