using System.Diagnostics;
using System.Text.Json;
using Research.Abstractions;
using Research.Core.Checkpoints;
using Research.Core.Config;
using Research.Core.Data;
using Research.Core.Models;
using Research.Core.Optim;
using Research.Core.Plotting;
using Research.Core.Plugins;
using Research.Core.Probes;
using Research.Core.Studies;
using Research.Core.Tasks;
using Research.Core.Tracking;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Training;

/// <summary>The result of a run: where it lives, the last evaluation by split name, and for a study its evaluation
/// record and forgetting metrics.</summary>
/// <param name="MetricFailures">Metrics that threw (plugin, DLL, message); the others were computed and stored.</param>
public sealed record RunOutcome(
    string RunDir, string RunId, string WeightsPath, IReadOnlyDictionary<string, EvalResult> Final,
    EvaluationRecord? Record, IReadOnlyList<(string Name, MetricValue Value)> Metrics, IReadOnlyList<string> MetricFailures);

/// <summary>
/// The one training loop. A run is a sequence of phases: a single run (<c>research train</c>) has one; a study
/// (<c>research study</c>) has one per task, and after each the task × task evaluation (row i of the matrices R and L)
/// and the regularizers' consolidation. Every phase has what a run has: periodic, best and phase-end checkpoints,
/// evaluation every <c>eval_every</c> steps and at each epoch end, early stopping, the schedule reading the evaluation
/// history, step metrics. "Step" means one thing everywhere: optimizer updates the run has applied.
/// </summary>
/// <remarks>
/// A run resumes from its newest valid checkpoint, wherever it was written: inside a phase, after a phase's training
/// (a study's <c>…-trained</c>) or after its consolidation (<c>…-consolidated</c>). Every input of the continuation is in
/// the checkpoint or derived from (seed, position), so a resumed run ends bitwise equal to an uninterrupted one on CPU.
/// </remarks>
public static class Trainer
{
    /// <summary>
    /// Runs the config as a single run or a study, or continues the run in <paramref name="resumeDir"/> from its newest
    /// valid checkpoint. <paramref name="extraEvaluations"/> are evaluated with validation and test at each evaluation (the
    /// demo passes the two halves of the classes). A plugin exception during training stops the run, records it as failed,
    /// and is rethrown as <see cref="PluginFailureException"/>; a metric that throws is reported in the outcome instead.
    /// </summary>
    public static RunOutcome Run(RunConfig config, PluginHost host, ITrainingObserver? observer = null,
        IReadOnlyList<(string Name, TensorDataset Data)>? extraEvaluations = null, string? resumeDir = null, bool dryRun = false,
        RunKind kind = RunKind.Train)
    {
        observer ??= new SilentObserver();
        using var run = RunBuilder.Build(config, host, kind);
        RunBuilder.CheckLength(run);
        // Refused before a run folder exists: a config error creates nothing.
        RunBuilder.Groups(config.Optimizer, run.Model, config.File);
        if (dryRun)
        {
            DryRun(run, observer);
            return new RunOutcome("", "", "", new Dictionary<string, EvalResult>(), null, [], []);
        }
        // One writer per run folder, taken before anything in it is read for a resume.
        using var resumeLock = resumeDir is null ? null : RunLock.Acquire(Path.GetFullPath(resumeDir));
        (string Dir, CheckpointState State)? resume = resumeDir is null ? null : ResumePoint(run, resumeDir, observer);
        string runId, runDir;
        RunStore store;
        if (resume is { } r)
        {
            (runId, runDir) = (r.State.RunId, Path.GetFullPath(resumeDir!));
            var storePath = Path.Combine(runDir, RunStore.FileName);
            // Asked on a read-only connection: a refused resume leaves the store as it was.
            string? status;
            using (var reader = RunStore.OpenReadOnly(storePath)) status = reader.Status(runId);
            if (status is null)
                throw new InvalidDataException($"{Path.Combine(r.Dir, Checkpoint.State)}: run {runId} is not in {storePath}; it does not describe this run (refusing to resume from it)");
            if (status == "finished")
                throw new InvalidDataException($"--resume {runDir}: run {runId} already finished; nothing to resume");
            store = new RunStore(storePath);
        }
        else (runId, runDir, store) = RunBuilder.StartRun(run, Streams(run));
        using var newRunLock = resumeDir is null ? RunLock.Acquire(runDir) : null;
        using var _store = store;
        if (resume is { } from)
        {
            var stops = from.State.StopReasons;
            store.ResumeRun(runId, (from.State.MetricRows, from.State.EvaluationRows), from.State.Study?.Rows.Count ?? 0,
                stops.Count == 0 ? null : StopText(stops, kind == RunKind.Study));
        }
        // The TensorBoard view of what the store records; a resumed run's file drops what came after its checkpoint, as
        // the store has just done.
        using var board = TensorBoardWriter.Open(
            string.IsNullOrEmpty(config.Run.TensorboardDir) ? runDir : Path.GetFullPath(config.Run.TensorboardDir),
            resume is { } at ? at.State.Step + 1 : null);
        store.Mirror(board);
        using var interruption = Interruption.Watch(observer.Message);
        // The run's end is recorded once, whichever way it comes: returned, thrown, the watchdog, or a process exit.
        int ended = 0;
        void End(string status, string? error)
        {
            if (Interlocked.Exchange(ref ended, 1) == 0) store.EndRun(runId, status, error);
        }
        using var watchdog = Watchdog.Start(config.Plugins.CallTimeoutS, message =>
        {
            Console.Error.WriteLine($"run failed: {message}");
            try { End("failed", message); }
            finally { Environment.Exit(1); }
        });
        // A plugin that calls Environment.Exit (or a second signal) ends the process without unwinding this method: the
        // buffered rows are flushed and the run recorded as failed (or interrupted) before it goes.
        EventHandler onExit = (_, _) =>
        {
            try
            {
                if (interruption.Requested is { } signal) End("interrupted", $"stopped by a second {signal} before a checkpoint was written");
                else
                {
                    var why = $"the process exited during the run (exit code {Environment.ExitCode}; a plugin called Environment.Exit?)";
                    End("failed", why);
                    // The exit code is the one the plugin passed; .NET gives no way to change it from here.
                    Console.Error.WriteLine($"run failed: {why}");
                }
            }
            catch (Exception) { }   // nothing can be reported from here
        };
        AppDomain.CurrentDomain.ProcessExit += onExit;
        try
        {
            store.Heartbeat(runId);
            var outcome = new Loop(run, store, runId, runDir, observer, extraEvaluations ?? [], interruption).Execute(resume);
            End("finished", null);
            return outcome;
        }
        catch (RunInterruptedException e)
        {
            End("interrupted", e.Message);
            throw new RunInterruptedException(e.Signal, e.ExitCode, $"{e.Message}; resume with --resume {runDir}");
        }
        catch (Exception e)
        {
            // A store that cannot be written (a full disk) must not hide why the run failed.
            try { End("failed", e.Message); }
            catch (Exception storeError) when (storeError is RunStoreException) { observer.Message($"warning: {storeError.Message}"); }
            throw;
        }
        finally { AppDomain.CurrentDomain.ProcessExit -= onExit; }
    }

    /// <summary>The resolved config (every default, plugin options included), the data, the steps and the groups.</summary>
    static void DryRun(RunComponents run, ITrainingObserver observer)
    {
        var c = run.Config;
        observer.Message($"# {c.File}, resolved (every default filled in, plugin options included); identity {run.Identity}");
        observer.Message(ResolvedConfig.Toml(run.Canonical));
        foreach (var (t, i) in run.Tasks.Select((t, i) => (t, i)))
            observer.Message($"# {(run.Kind == RunKind.Study ? $"task {i} ({t.Name}): " : "")}{t.Train.Count} training items, " +
                             $"{t.Validation.Count} validation, {t.Test.Count} test; {run.StepsOf(i)} optimizer steps " +
                             $"({run.EpochsOf(i)} epochs × {run.StepsPerEpoch(i)})");
        if (run.LoadSummary != null) observer.Message(run.LoadSummary);
        var (optimizer, table) = RunBuilder.Optimizer(c.Optimizer, run.Model, c.File);
        optimizer.Dispose();
        foreach (var line in table) observer.Message(line);
        foreach (var p in run.Plugins) observer.Message($"# {p.Role} '{p.Name}': {p.Path} (version {p.Version}, SHA-256 {p.Sha256})");
    }

    /// <summary>The newest checkpoint that verifies (corrupt ones are reported and skipped), for this config only.</summary>
    static (string Dir, CheckpointState State) ResumePoint(RunComponents run, string resumeDir, ITrainingObserver observer)
    {
        var checkpoints = Path.Combine(resumeDir, "checkpoints");
        Checkpoint.Tidy(checkpoints, observer.Message);
        var found = Checkpoint.LatestValid(checkpoints, observer.Message)
                    ?? throw new InvalidDataException($"--resume {resumeDir}: no valid checkpoint in {checkpoints}");
        CheckPosition(run, found.Dir, found.State);
        if (found.State.Identity != run.Identity)
            throw new ConfigException(run.Config.File, "(config)",
                $"differs from the config of the run being resumed ({resumeDir}/config.toml; identity {Prefix(found.State.Identity)}…, this config {Prefix(run.Identity)}…); resume with that config");
        if (found.State.Threads != torch.get_num_threads())
            observer.Message($"warning: the run was checkpointed with {found.State.Threads} threads and resumes with {torch.get_num_threads()}: " +
                             "results may differ in the last bits from an uninterrupted run (set [run] threads)");
        return found;
    }

    /// <summary>The first 12 characters of an identity (a state file edited by hand may hold a shorter one, or none).</summary>
    static string Prefix(string? identity) => identity is null ? "(none)" : identity.Length > 12 ? identity[..12] : identity;

    /// <summary>
    /// A checkpoint's position must lie inside the run it claims to continue: its manifest proves the files are the ones
    /// written together, not that they describe this run (a state.json edited with its manifest, or copied from another
    /// run). A position outside would make the loop believe the run finished, or index past its tasks.
    /// </summary>
    static void CheckPosition(RunComponents run, string dir, CheckpointState s)
    {
        var file = Path.Combine(dir, Checkpoint.State);
        void Require(bool ok, string what)
        {
            if (!ok) throw new InvalidDataException($"{file}: {what}; it does not describe this run (refusing to resume from it)");
        }
        int tasks = run.Tasks.Count;
        Require(s.Phase >= 0 && s.Phase < tasks, $"phase {s.Phase} is outside the run's {tasks} phase(s)");
        Require(Enum.IsDefined(s.Stage) && (run.Kind == RunKind.Study || s.Stage != Stage.Consolidated), $"stage {s.Stage} is not a stage of this kind of run");
        Require(s.Epoch >= 0 && s.Epoch <= run.EpochsOf(s.Phase), $"epoch {s.Epoch} is outside [0, {run.EpochsOf(s.Phase)}]");
        long windows = run.Tasks[s.Phase].Train.WindowsPerEpoch(run.Config.Data.BatchSize, run.Config.Train.GradAccum);
        Require(s.WindowInEpoch >= 0 && s.WindowInEpoch <= windows, $"window {s.WindowInEpoch} is outside the epoch's {windows}");
        Require(s.OptimizerStep >= 0 && s.Step >= s.OptimizerStep && s.PhaseStartStep >= 0 && s.PhaseStartStep <= s.Step && s.Step <= run.TotalSteps,
            $"steps (run {s.Step}, optimizer {s.OptimizerStep}, phase start {s.PhaseStartStep}) are inconsistent or beyond the run's {run.TotalSteps}");
        int rows = s.Study?.Rows.Count ?? 0;
        int expected = s.Stage == Stage.Training || s.Stage == Stage.Trained ? s.Phase : s.Phase + 1;
        Require(run.Kind != RunKind.Study || rows == expected, $"holds {rows} rows of the study's matrices, where phase {s.Phase} at stage {s.Stage} has {expected}");
    }

    /// <summary>The random streams of a run, by name (recorded with their derived seeds).</summary>
    static IEnumerable<string> Streams(RunComponents run)
    {
        var c = run.Config;
        yield return "init";
        foreach (var stream in run.Data.Source.Streams) yield return stream;
        if (c.Model.Reinit.Length > 0) yield return "reinit";
        if (run.Kind == RunKind.Train) yield return "validation-split";
        for (int t = 0; t < run.Tasks.Count; t++)
        {
            if (run.Kind == RunKind.Study)
            {
                yield return $"task-{t}";
                if (c.Study.Benchmark == "permuted" && t > 0) yield return $"permutation/{t}";
                yield return $"fisher/task-{t}";
                if (c.Study.ConsolidationItems > 0) yield return $"consolidation/task-{t}";
            }
            for (int e = 0; e < run.EpochsOf(t); e++) yield return DataOrder(run, t, e);
        }
    }

    /// <summary>The data order of an epoch depends only on (seed, phase, epoch): a resumed run sees the same batches.</summary>
    static string DataOrder(RunComponents run, int phase, int epoch) =>
        run.Kind == RunKind.Study ? $"task-{phase}/data-order/epoch-{epoch}" : $"data-order/epoch-{epoch}";

    /// <summary>Evaluates validation ("val"), test ("test", unless <paramref name="test"/> is false) and the extra named sets.</summary>
    public static Dictionary<string, EvalResult> EvaluateAll(nn.Module<Tensor, Tensor> model, TaskData task,
        IReadOnlyList<(string Name, TensorDataset Data)> extra, int batchSize, Precision.PrecisionPolicy precision,
        OutputTask? outputs = null, bool test = true)
    {
        var results = new Dictionary<string, EvalResult> { ["val"] = Evaluation.Run(model, task.Validation, batchSize, precision, outputs) };
        if (test) results["test"] = Evaluation.Run(model, task.Test, batchSize, precision, outputs);
        // With study.eval_all_tasks the current task's validation split comes again as task{j}_val: the same tensors
        // give the same result, so it is copied, not computed twice (a quarter of a 2-task study's evaluation time).
        foreach (var (name, data) in extra)
            results[name] = ReferenceEquals(data, task.Validation) ? results["val"]
                : test && ReferenceEquals(data, task.Test) ? results["test"]
                : Evaluation.Run(model, data, batchSize, precision, outputs);
        return results;
    }

    /// <summary>The loop over phases, with where it is: the part of the checkpoint state that changes as it runs.</summary>
    sealed class Loop(RunComponents run, RunStore store, string runId, string runDir, ITrainingObserver observer,
        IReadOnlyList<(string Name, TensorDataset Data)> extra, Interruption interruption)
    {
        readonly RunConfig _c = run.Config;
        readonly bool _study = run.Kind == RunKind.Study;
        Optimizer? _optimizer;
        long _stepOffset;            // the run's step when the current optimizer was made
        int _phase, _epoch;
        Stage _stage = Stage.Training;
        long _windowInEpoch, _windows, _skipped, _phaseStartStep;
        double? _best;
        List<SavedEvaluation> _evaluations = [];
        List<PhaseStop> _stops = [];
        StudyProgress? _progress;
        IReadOnlyDictionary<string, EvalResult> _last = new Dictionary<string, EvalResult>();
        RunProbes? _probes;
        Hessian.ForgettingDecomposition? _hessian;
        HashSet<long> _alongSteps = [];

        Optimizer O => _optimizer!;
        long Step => _stepOffset + O.StepCount;
        string CheckpointsDir => Path.Combine(runDir, "checkpoints");
        string PhaseName => _study ? $"task-{_phase}" : "train";

        public RunOutcome Execute((string Dir, CheckpointState State)? resume)
        {
            try
            {
                bool freshPhase = true;
                _probes = RunProbes.Create(_c, run.Data, run.Tasks, run.Precision);
                if (resume is { } r) freshPhase = Restore(r.Dir, r.State);
                else Begin();
                _probes?.Start(run.Model, runDir, resume is not null, observer.Message);
                if (_study && _c.Study.Hessian.Enabled)
                {
                    var frozen = run.Model.named_parameters().Where(p => !p.parameter.requires_grad).Select(p => p.name).ToHashSet();
                    _hessian = new Hessian.ForgettingDecomposition(_c, run.Tasks, run.Task, run.NewModel, frozen, runDir, observer.Message);
                    observer.Message(_hessian.Cost(run.Tasks.Count, _c.Study.Hessian.Samples));
                }
                observer.Started(runDir, run.TotalSteps);
                for (; _phase < run.Tasks.Count; _phase++, freshPhase = true)
                {
                    if (freshPhase) StartPhase();
                    if (_stage == Stage.Training)
                    {
                        TrainPhase();
                        _stage = Stage.Trained;
                        if (_study)
                        {
                            WriteResumable(Stage.Trained);
                            interruption.ThrowIfRequested($"after the training of task {_phase} (step {Step})");
                        }
                    }
                    if (_study && _stage == Stage.Trained)
                    {
                        EvaluateRow();
                        ProbeRow();
                        HessianRow();
                        TaskEnd();
                        // After the last task the final checkpoint follows at once.
                        if (_phase < run.Tasks.Count - 1)
                        {
                            _stage = Stage.Consolidated;
                            WriteResumable(Stage.Consolidated);
                            interruption.ThrowIfRequested($"after task {_phase} (step {Step})");
                        }
                    }
                }
                _phase = run.Tasks.Count - 1;
                return Finish();
            }
            finally { _optimizer?.Dispose(); _probes?.Dispose(); }
        }

        /// <summary>A new run: the head fitted as a linear probe when asked (before the probes read the start), the random initialisation's accuracy on every task (the baseline of forward transfer) and its weights.</summary>
        void Begin()
        {
            if (run.LoadSummary != null) observer.Message(run.LoadSummary);
            if (_c.Model.HeadInit == "linear-probe") observer.Message(HeadFit.Apply(run.Model, run.Tasks[0], _c.Data.EvalBatchSize, run.Precision));
            if (!_study) return;
            var c = _c.Study;
            observer.Message($"study {c.Benchmark}: {run.Tasks.Count} tasks ({string.Join(", ", run.Tasks.Select(t => t.Name))}); " +
                             $"{(c.Joint ? "joint training on all tasks seen so far" : run.Methods.All.Count == 0 ? "plain fine-tuning" : string.Join(" + ", run.Methods.All.Select(m => m.Name)))}; " +
                             $"optimizer {(c.ResetOptimizer ? "reset" : "kept")} and schedule {(c.ResetSchedule ? "restarted" : "continued")} at each task");
            // A first task of 0 epochs ends with the starting weights, so row 0 of the matrix is this baseline: it is
            // copied from there (EvaluateRow) instead of evaluating every test split twice.
            _progress = new StudyProgress(run.EpochsOf(0) == 0
                ? Enumerable.Repeat(double.NaN, run.Tasks.Count).ToArray()
                : run.Tasks.Select(t => Evaluation.Run(run.Model, t.Test, _c.Data.EvalBatchSize, run.Precision, run.Task).Accuracy).ToArray(), []);
        }

        /// <summary>Where a phase begins: a new optimizer for the first phase, and for each when a study resets it.</summary>
        void StartPhase()
        {
            if (_optimizer is null || (_study && _c.Study.ResetOptimizer)) NewOptimizer();
            if (_study && _phase == 0) WeightFile.Save(SnapshotTensors(), Snapshot("initial"));
            _phaseStartStep = Step;
            _epoch = 0; _windowInEpoch = 0; _best = null;
            _stage = Stage.Training;
            if (_study) observer.Message($"task {_phase} ({run.Tasks[_phase].Name}): " + (run.EpochsOf(_phase) == 0
                ? "not trained (0 epochs: the starting model has learned it); evaluated and consolidated"
                : $"{run.StepsOf(_phase)} optimizer steps"));
            if (run.Methods.TaskHooks.Count > 0)
            {
                using var scope = NewDisposeScope();
                var context = new TaskStartContext(_phase, run.Tasks[_phase].Name, O.PenaltyParameters());
                foreach (var m in run.Methods.TaskHooks) m.TaskStart(context);
            }
        }

        /// <summary>
        /// A fresh optimizer (new moments, t = 0 for Adam's bias correction) over the model's trainable parameters. Under
        /// mixed precision the new fp32 master weights are copied from the old ones, not rebuilt from the 16-bit model.
        /// </summary>
        void NewOptimizer()
        {
            long step = _optimizer is null ? 0 : Step;
            var (next, table) = RunBuilder.Optimizer(_c.Optimizer, run.Model, _c.File);
            if (_optimizer is { HasMasterCopy: true } old)
                using (no_grad())
                {
                    next.Master.copy_(old.Master);
                    next.Buffer.Values.copy_(next.Master);
                }
            if (_optimizer is null) foreach (var line in table) observer.Message(line);
            _optimizer?.Dispose();
            _optimizer = next;
            _stepOffset = step;
        }

        /// <summary>Loads a verified checkpoint into fresh components; returns whether the next phase starts fresh.</summary>
        bool Restore(string dir, CheckpointState s)
        {
            (_phase, _stage, _epoch, _windowInEpoch, _windows, _skipped, _phaseStartStep, _best) =
                (s.Phase, s.Stage, s.Epoch, s.WindowInEpoch, s.Windows, s.SkippedSteps, s.PhaseStartStep, s.Best);
            _evaluations = s.Evaluations.ToList();
            _stops = s.StopReasons.ToList();
            _progress = s.Study;
            NewOptimizer();
            _stepOffset = s.Step - s.OptimizerStep;
            var weights = Checkpoint.Load(dir, Checkpoint.Model);
            var moments = Checkpoint.Load(dir, Checkpoint.Optimizer);
            var methods = Checkpoint.Load(dir, Checkpoint.Methods);
            try
            {
                O.Restore(weights, moments, s.OptimizerStep);
                RestoreFrozen(weights);
                // Each plugin's tensors become the plugin's (GuardedMethod frees what it does not keep).
                for (int i = 0; i < run.Methods.All.Count; i++)
                {
                    var prefix = $"{i}/";
                    var mine = methods.Where(kv => kv.Key.StartsWith(prefix)).ToList();
                    foreach (var (key, _) in mine) methods.Remove(key);
                    run.Methods.All[i].LoadStateDict(mine.ToDictionary(kv => kv.Key[prefix.Length..], kv => kv.Value));
                }
                run.Precision.Scaler?.Restore(s.LossScale, s.ScalerGoodSteps, s.SkippedSteps);
            }
            finally
            {
                foreach (var t in weights.Values.Concat(moments.Values).Concat(methods.Values)) t.Dispose();
            }
            observer.Message($"resumed {runId} from {dir} at step {s.Step}: " + (_study ? $"task {s.Phase}, " : "") + s.Stage switch
            {
                Stage.Training => $"epoch {s.Epoch + 1}, window {s.WindowInEpoch}",
                Stage.Trained => "after its training",
                _ => "after its consolidation",
            });
            if (s.Stage != Stage.Consolidated) return false;
            _phase++;
            return true;
        }

        /// <summary>Frozen parameters are not the optimizer's; they are checkpointed beside its weights.</summary>
        /// <summary>The frozen parameters and the buffers (BatchNorm running statistics and counts), which the optimizer
        /// does not hold: a resume restores them from the checkpoint's weights.</summary>
        void RestoreFrozen(IReadOnlyDictionary<string, Tensor> weights)
        {
            using var _ = no_grad();
            foreach (var (name, p) in run.Model.named_parameters().Where(p => !p.parameter.requires_grad))
                if (weights.TryGetValue(name, out var w)) p.copy_(w);
            foreach (var (name, b) in run.Model.named_buffers())
                if (weights.TryGetValue(name, out var w)) b.copy_(w);
        }

        /// <summary>The phase's data: its task, or under joint training the union of tasks 0..i (owned by the caller).</summary>
        TaskData PhaseData(out bool owned)
        {
            owned = run.JointAt(_phase);
            if (!owned) return run.Tasks[_phase];
            var seen = run.Tasks.Take(_phase + 1).ToList();
            return new TaskData($"tasks 0–{_phase}", TensorDataset.Concat(seen.Select(t => t.Train).ToList()),
                TensorDataset.Concat(seen.Select(t => t.Validation).ToList()), TensorDataset.Concat(seen.Select(t => t.Test).ToList()));
        }

        /// <summary>Trains the current phase for its epochs, from where the loop is, until they end or early stopping says stop.</summary>
        void TrainPhase()
        {
            var data = PhaseData(out var owned);
            try { TrainPhase(data); }
            finally { if (owned) data.Dispose(); }
        }

        void TrainPhase(TaskData data)
        {
            int batchSize = _c.Data.BatchSize, k = _c.Train.GradAccum, epochs = run.EpochsOf(_phase);
            long stepsPerEpoch = data.Train.WindowsPerEpoch(batchSize, k);
            bool restarts = run.ScheduleRestarts;
            long scheduleLength = run.ScheduleLength(_phase);
            var history = ScheduleHistory();
            _alongSteps = AlongSteps();
            var step = new TrainStep(run.Model, O, run.Precision, run.Methods, _c.Optimizer.ClipNorm, _phase, run.Task, _stepOffset,
                name => Seeds.Generator(_c.Run.Seed, $"methods/{name}"), run.Shadow);
            var clock = Stopwatch.StartNew();
            long itemsSinceLog = 0;
            string? stop = _stops.FirstOrDefault(s => s.Phase == _phase)?.Reason;
            run.Model.train();
            while (stop is null && _epoch < epochs)
            {
                using var order = Seeds.Generator(_c.Run.Seed, DataOrder(run, _phase, _epoch));
                foreach (var window in data.Train.ShuffledWindows(batchSize, k, order, skipWindows: _windowInEpoch))
                {
                    // t counts applied updates only: a step the loss scaler skipped advances neither t nor the schedule.
                    long t = restarts ? Step - _phaseStartStep : Step;
                    double lr = _c.Optimizer.Lr * run.Schedule.Multiplier(new ScheduleContext(t, scheduleLength, stepsPerEpoch, history));
                    StepOutcome result;
                    using (var mixing = NewDisposeScope()) result = step.Run(WithMemory(window), lr);
                    _windows++; _windowInEpoch++;
                    if (!result.Applied) _skipped++;
                    itemsSinceLog += result.Items;
                    // The pre-clip gradient norm is recorded at every step; the rest every log_every steps.
                    store.Metric(runId, Step, "grad_norm", result.GradNorm);
                    if (_windows % _c.Train.LogEvery == 0 || !result.Applied)
                    {
                        var seconds = clock.Elapsed.TotalSeconds;
                        var throughput = seconds > 0 ? itemsSinceLog / seconds : 0;
                        clock.Restart(); itemsSinceLog = 0;
                        store.Metric(runId, Step, "train_loss", result.Loss);
                        store.Metric(runId, Step, "lr", lr);
                        store.Metric(runId, Step, "items_per_second", throughput);
                        if (_study) store.Metric(runId, Step, "task", _phase);
                        if (run.Precision.Scaler != null)
                        {
                            store.Metric(runId, Step, "loss_scale", result.LossScale);
                            store.Metric(runId, Step, "skipped_steps", _skipped);
                        }
                        observer.Step(Step, run.TotalSteps, result.Loss, lr, throughput);
                    }
                    // Evaluations and checkpoints that fall on an epoch's last window wait for the epoch's end, so a
                    // checkpoint is always either inside an epoch or after its evaluation.
                    bool insideEpoch = _windowInEpoch < stepsPerEpoch;
                    if (_c.Train.EvalEvery > 0 && result.Applied && Step % _c.Train.EvalEvery == 0 && insideEpoch)
                    {
                        Evaluate(data);
                        history = ScheduleHistory();
                        if ((stop = Stopping()) != null) break;
                    }
                    if (result.Applied && _alongSteps.Contains(Step - _phaseStartStep))
                        WeightFile.Save(SnapshotTensors(), Path.Combine(AlongDir(_phase), $"step-{Step}", WeightFile.FileName));
                    bool written = _c.Checkpoint.Every > 0 && result.Applied && Step % _c.Checkpoint.Every == 0 && insideEpoch;
                    if (written) WriteResumable(Stage.Training);
                    // A signal stops the run after this step, from a checkpoint written here; an epoch's last window first
                    // has its evaluation, below.
                    if (interruption.Requested != null && insideEpoch)
                    {
                        if (!written) WriteResumable(Stage.Training);
                        interruption.ThrowIfRequested($"at step {Step}");
                    }
                }
                if (stop != null) break;

                Evaluate(data);
                history = ScheduleHistory();
                // After the evaluation the next window is window 0 of the next epoch; checkpoints record that.
                _epoch++; _windowInEpoch = 0;
                stop = Stopping();
                // A study's phase end is checkpointed as "trained" right after this; a single run's last epoch keeps its own.
                bool phaseEnds = stop != null || _epoch == epochs;
                bool due = _c.Checkpoint.AtEpochEnd || (_c.Checkpoint.Every > 0 && Step % _c.Checkpoint.Every == 0);
                if (due && !(_study && phaseEnds)) WriteResumable(Stage.Training);
                // A study's last epoch is checkpointed as "trained" by the caller, which checks for a signal after it.
                if (interruption.Requested != null && !(_study && phaseEnds))
                {
                    if (!due) WriteResumable(Stage.Training);
                    interruption.ThrowIfRequested($"at step {Step}, after epoch {_epoch}");
                }
            }
            if (epochs == 0) ObserveUntrained(data);
            // A phase whose every step the loss scaler skipped trained nothing: that is a failure, not a finished run.
            if (epochs > 0 && Step == _phaseStartStep && _windows > 0)
                throw new NonFiniteGradientException($"the loss scaler skipped every step of {(_study ? $"task {_phase}" : "the run")} (non-finite gradients at every scale down to {run.Precision.LossScale}): nothing was trained; lower [precision] initial_scale, or use bf16");
        }

        /// <summary>
        /// A task of 0 epochs is not trained, but its data still streams past the data roles once, in order (a reservoir
        /// memory fills from it as it would while training), from streams named by the task, so a rerun draws the same.
        /// </summary>
        void ObserveUntrained(TaskData data)
        {
            var roles = run.Methods.DataRoles;
            if (roles.Count == 0) return;
            int i = 0;
            foreach (var b in data.Train.InOrder(_c.Data.BatchSize))
            {
                using var scope = NewDisposeScope();
                for (int d = 0; d < roles.Count; d++)
                    using (var observe = Seeds.Generator(_c.Run.Seed, $"methods/task-{_phase}/untrained-observe-{d}-{i}"))
                        roles[d].Observe(b, _phase, Step, observe);
                i++;
            }
        }

        /// <summary>
        /// The data role's part of a window: it observes each micro-batch of the current task (reservoir sampling), then
        /// round(r·B) memory items are appended to each micro-batch of B items. Its draws come from streams named by the
        /// run's step, so a resumed run mixes the same items.
        /// </summary>
        IReadOnlyList<Batch> WithMemory(IReadOnlyList<Batch> window)
        {
            var methods = run.Methods;
            if (methods.DataRoles.Count == 0) return window;
            var mixed = new List<Batch>(window.Count);
            for (int i = 0; i < window.Count; i++)
            {
                var b = window[i];
                for (int d = 0; d < methods.DataRoles.Count; d++)
                    using (var observe = Seeds.Generator(_c.Run.Seed, $"methods/step-{Step}/observe-{d}-{i}"))
                        methods.DataRoles[d].Observe(b, _phase, Step, observe);
                if (methods.Mixer is not { } mixer) { mixed.Add(b); continue; }
                int m = (int)Math.Round(mixer.MixRatio * b.Size, MidpointRounding.AwayFromZero);
                if (m == 0 || mixer.MemoryCount(Step) == 0) { mixed.Add(b); continue; }
                using var draw = Seeds.Generator(_c.Run.Seed, $"methods/step-{Step}/mix-{i}");
                mixed.Add(Batch.Concat([b, mixer.Sample(m, Step, draw)]));
            }
            return mixed;
        }

        /// <summary>
        /// The evaluations the schedule reads, in its own time: a schedule that restarts at each task sees that task's
        /// evaluations at task-relative steps, otherwise the run's. It changes only when an evaluation is added, so the
        /// step loop derives it then, not at every step.
        /// </summary>
        List<EvaluationPoint> ScheduleHistory()
        {
            long origin = run.ScheduleRestarts ? _phaseStartStep : 0;
            return _evaluations.Where(e => !run.ScheduleRestarts || e.Phase == _phase)
                .Select(e => new EvaluationPoint(e.Step - origin, e.Epoch, e.Metrics)).ToList();
        }

        /// <summary>Evaluates the phase's validation and test splits (and the extra sets), records them, and writes the
        /// phase's best checkpoint when the selection metric improved. A study's test splits are measured at task ends
        /// (its matrices), not while a task trains: nothing during training may read them, and they are a study's
        /// largest evaluation cost.</summary>
        void Evaluate(TaskData data)
        {
            var results = EvaluateAll(run.Model, data, _study && _c.Study.EvalAllTasks ? extra.Concat(EveryTask()).ToList() : extra,
                _c.Data.EvalBatchSize, run.Precision, run.Task, test: !_study);
            foreach (var (split, r) in results)
            {
                store.Evaluation(runId, Step, _epoch, PhaseName, split, r.Loss, r.Accuracy, r.Items);
                if (r.IsLanguageModel)
                {
                    store.Metric(runId, Step, $"{split}_perplexity", r.Perplexity);
                    store.Metric(runId, Step, $"{split}_bits_per_byte", r.BitsPerByte);
                }
            }
            _evaluations.Add(new SavedEvaluation(_phase, Step, _epoch, results.SelectMany(r => new[]
            {
                KeyValuePair.Create($"{r.Key}_loss", r.Value.Loss), KeyValuePair.Create($"{r.Key}_accuracy", r.Value.Accuracy),
            }).ToDictionary()));
            observer.EpochEnded(_epoch, Step, results);
            store.Heartbeat(runId);
            _last = results;
        }

        /// <summary>Every task's validation split as split <c>task{j}_val</c> (<c>study.eval_all_tasks</c>).</summary>
        IEnumerable<(string Name, TensorDataset Data)> EveryTask() => run.Tasks.Select((t, j) => ($"task{j}_val", t.Validation));

        /// <summary>
        /// After an evaluation: the best checkpoint, then whether early stopping says stop (and why). A stop is recorded
        /// at once, so every checkpoint written after it knows the phase is over and a resume does not train on.
        /// </summary>
        string? Stopping()
        {
            var phase = _evaluations.Where(e => e.Phase == _phase).Select(e => new EvaluationPoint(e.Step, e.Epoch, e.Metrics)).ToList();
            if (IsBest(_c.Checkpoint, phase[^1].Metrics, _best) is { } best)
            {
                _best = best;
                Write(_study ? $"best-task-{_phase}" : "best", Stage.Training);
            }
            var t = _c.Train;
            var stop = EarlyStopping.Decide(phase, t.EarlyStoppingMetric, t.EarlyStoppingMode, t.EarlyStoppingPatience, t.EarlyStoppingThreshold);
            if (stop is null) return null;
            _stops.Add(new PhaseStop(_phase, stop));
            observer.Message((_study ? $"task {_phase}: " : "") + stop);
            store.StopReason(runId, StopText(_stops, _study));
            return stop;
        }

        /// <summary>Row i of the study's matrices: the model after task i on every task's test and validation split, the
        /// parameter change since the previous task, and the task-end weights (<c>tasks/task-i</c>).</summary>
        void EvaluateRow()
        {
            int T = run.Tasks.Count;
            var (testAcc, testLoss) = (new double[T], new double[T]);
            for (int j = 0; j < T; j++)
            {
                var results = EvaluateAll(run.Model, run.Tasks[j], [], _c.Data.EvalBatchSize, run.Precision, run.Task);
                foreach (var (split, e) in results)
                {
                    store.StudyCell(runId, _phase, j, split, e.Loss, e.Accuracy);
                    store.Board?.Scalar($"study/{split}/task{j}/accuracy", Step, e.Accuracy);
                    store.Board?.Scalar($"study/{split}/task{j}/loss", Step, e.Loss);
                }
                (testAcc[j], testLoss[j]) = (results["test"].Accuracy, results["test"].Loss);
            }
            if (_phase == 0 && run.EpochsOf(0) == 0) Array.Copy(testAcc, _progress!.RandomInit, T);
            var change = ChangeNorm(Snapshot(_phase == 0 ? "initial" : $"task-{_phase - 1}"));
            WeightFile.Save(SnapshotTensors(), Snapshot($"task-{_phase}"));
            _progress!.Rows.Add(new StudyRow(testAcc, testLoss, change));
            if (store.Board is { } board)
            {
                var rows = Enumerable.Range(0, T).Select(i => i < _progress.Rows.Count ? _progress.Rows[i].TestAccuracy : Enumerable.Repeat(double.NaN, T).ToArray()).ToArray();
                board.Image("study/accuracy_matrix", Step, StudyPlot.MatrixPng($"test accuracy after task {_phase}", rows), 560, 480);
            }
            store.Heartbeat(runId);
            observer.Message($"after task {_phase} ({run.Tasks[_phase].Name}): test accuracy " +
                             string.Join("  ", testAcc.Select((a, j) => $"{j}:{a:F3}")) + $"   ‖Δθ‖ = {change:F3}");
        }

        /// <summary>The [probes] after a phase: stored as metrics at the run's step, and in a study as the phase's row.</summary>
        void ProbeRow()
        {
            if (_probes is null) return;
            var values = _probes.Measure(run.Model, observer.Message);
            foreach (var (name, v) in values) store.Metric(runId, Step, name, v);
            observer.Message((_study ? $"after task {_phase}: " : "") + string.Join("  ", values.Select(kv => $"{kv.Key} {kv.Value:F4}")));
            AddProbes(_phase, values.ToDictionary(kv => kv.Key, kv => new[] { kv.Value }));
        }

        /// <summary>Adds probe rows to row i of a study's record (the core's probes and the methods' share it).</summary>
        void AddProbes(int phase, IReadOnlyDictionary<string, double[]> probes)
        {
            if (_progress is not { } progress || progress.Rows.Count <= phase || probes.Count == 0) return;
            progress.Rows[phase] = progress.Rows[phase] with
            {
                Probes = (progress.Rows[phase].Probes ?? new Dictionary<string, double[]>()).Concat(probes).ToDictionary(),
            };
        }

        string Snapshot(string name) => Path.Combine(runDir, "tasks", name, WeightFile.FileName);

        /// <summary>A whole model's state for a task-end snapshot: the master weights, frozen parameters and buffers.</summary>
        IEnumerable<(string, Tensor)> SnapshotTensors() => O.NamedMaster()
            .Concat(run.Model.named_parameters().Where(p => !p.parameter.requires_grad).Select(p => (p.name, (Tensor)p.parameter)))
            .Concat(run.Model.named_buffers());

        /// <summary>‖θ − θ_prev‖₂ over the trainable parameters, θ_prev read from a snapshot file (so a resumed run has it too).</summary>
        double ChangeNorm(string previous)
        {
            using var _ = NewDisposeScope();
            var before = Checkpoint.Load(Path.GetDirectoryName(previous)!, WeightFile.FileName);
            var flat = cat(O.Buffer.Slots.Select(s => before[s.Name].reshape(-1)).ToList());
            var delta = O.Master.detach().sub(flat);
            // Δθ per parameter group, as TensorBoard histograms at the task's end.
            if (store.Board is { } board)
                foreach (var group in O.Buffer.Groups.GroupBy(g => g.Group.Name))
                {
                    using var values = cat(group.Select(g => delta.narrow(0, g.Offset, g.Count)).ToList());
                    board.Histogram($"delta_theta/{group.Key}", Step, values.data<float>().ToArray());
                }
            return delta.norm().item<float>();
        }

        /// <summary>
        /// The task ends: every method's task-end hook (EWC's Fisher and θ*, SI's importances, LwF's teacher, replay's
        /// selection), with <see cref="TaskEndContext.IsLastTask"/> after the last task. What they keep outlives this scope (see
        /// <see cref="GuardedMethod"/>); the parameter views handed to them do not. The probe rows they add go into row i of
        /// the study's record.
        /// </summary>
        /// <summary><c>hessian.snapshots_along = m</c>: the task's steps (counted from its start) at which its weights are
        /// saved, m − 1 evenly spaced points (the task's end is the m-th); with the task's first step and planned steps
        /// beside them, so the analysis can place each point. Tasks before the first trained one need none.</summary>
        HashSet<long> AlongSteps()
        {
            int m = _c.Study.Hessian.SnapshotsAlong;
            if (_hessian is null || m < 2 || _phase == 0) return [];
            long planned = run.StepsOf(_phase);
            var dir = AlongDir(_phase);
            Directory.CreateDirectory(dir);
            File.WriteAllText(Path.Combine(dir, "first-step"), _phaseStartStep.ToString());
            File.WriteAllText(Path.Combine(dir, "planned-steps"), planned.ToString());
            return Enumerable.Range(1, m - 1).Select(k => (long)Math.Round((double)k * planned / m)).Where(s => s > 0 && s < planned).ToHashSet();
        }

        string AlongDir(int phase) => Path.Combine(runDir, "tasks", $"task-{phase}", "along");

        /// <summary>
        /// <c>[study] hessian</c> at the end of task i (its snapshot written): the curvature of task i (saved for the later
        /// tasks), then the decomposition of every earlier task at this task's end and at the points saved inside it, added
        /// to row i of the record. A resumed task end finds the earlier tasks' curvature saved and computes only its own.
        /// </summary>
        void HessianRow()
        {
            if (_hessian is null) return;
            using var own = _hessian.Curvature(_phase);
            var points = _hessian.Pairs(_phase);
            foreach (var p in points.Where(p => p.Step < 0))
                observer.Message($"task {p.Earlier} after task {p.Later}: loss +{p.Measured:F4} measured (test +{p.MeasuredTest:F4}), " +
                                 $"predicted {p.Predicted:F4} = first order {p.FirstOrder:F4} + quadratic {p.Quadratic:F4}; top-{own.Eigenvalues.Count} " +
                                 $"share of the quadratic term {p.TopKQuadraticShare:F3}; " +
                                 string.Join(", ", p.FisherQuadratic.Select(f => $"{f.Key} Fisher {f.Value:F4}")));
            AddProbes(_phase, Hessian.DecompositionProbes.Row(_phase, run.Tasks.Count, Math.Max(1, _c.Study.Hessian.SnapshotsAlong), points, own));
        }

        void TaskEnd()
        {
            if (run.Methods.TaskHooks.Count == 0) return;
            using var scope = NewDisposeScope();
            int phase = _phase;
            using var subset = ConsolidationSubset(run.Tasks[phase], phase);
            // The view shares the task's validation and test splits; only the subset is this method's to free.
            var task = subset is null ? run.Tasks[phase] : run.Tasks[phase] with { Train = subset };
            var outputs = run.Task;
            var probes = new Dictionary<string, double[]>();
            using var random = Seeds.Generator(_c.Run.Seed, $"methods/task-{phase}/end");
            var context = new TaskEndContext(phase, task.Name, phase == run.Tasks.Count - 1, O.PenaltyParameters(), TrainedLogits, TrainedGradient,
                Counted(task.Train.InOrder(_c.Data.EvalBatchSize)), (logits, batch) => outputs.PerItemLoss(logits, batch),
                kind => TaskFisher(task, kind, phase), (name, row) => probes[name] = row.ToArray(), random);
            foreach (var m in run.Methods.TaskHooks) m.TaskEnd(context);
            AddProbes(phase, probes);
        }

        /// <summary><c>study.consolidation_items</c> of the task's training items, drawn from (seed, "consolidation/task-i");
        /// null when the task has no more than that (or the option is 0).</summary>
        TensorDataset? ConsolidationSubset(TaskData task, int phase)
        {
            int n = _c.Study.ConsolidationItems;
            if (n == 0 || n >= task.Train.Count) return null;
            using var g = Seeds.Generator(_c.Run.Seed, $"consolidation/task-{phase}");
            return task.Train.Sample(n, g);   // its tensors live outside any dispose scope (TensorDataset's own)
        }

        /// <summary>The trained model's fp32 logits in eval mode, without autograd.</summary>
        Tensor TrainedLogits(Batch batch)
        {
            var wasTraining = run.Model.training;
            run.Model.eval();
            try { using (no_grad()) return ModelInput.Logits(run.Model, batch, run.Precision); }
            finally { run.Model.train(wasTraining); }
        }

        /// <summary>∇θ of f(logits) of the trained model (eval mode) on a batch, per trainable slot in fp32.</summary>
        IReadOnlyList<Tensor> TrainedGradient(Batch batch, Func<Tensor, Tensor> f)
        {
            var wasTraining = run.Model.training;
            run.Model.eval();
            try
            {
                using var _ = enable_grad();
                var parameters = O.Buffer.Slots.Select(s => s.Parameter).ToArray();
                var g = autograd.grad([f(ModelInput.Logits(run.Model, batch, run.Precision))], parameters, allow_unused: true);
                return O.Buffer.Slots.Select((s, i) => g[i] is { IsInvalid: false } gi ? gi.to(ScalarType.Float32) : zeros(s.Shape)).ToList();
            }
            finally { run.Model.train(wasTraining); }
        }

        /// <summary>The batches a consolidation reads, each one a point where crash injection may kill the process.</summary>
        static IEnumerable<Batch> Counted(IEnumerable<Batch> batches)
        {
            foreach (var b in batches)
            {
                yield return b;
                FaultInjection.AfterConsolidationBatch();
            }
        }

        /// <summary>
        /// The diagonal Fisher of the trained model on a task's training data (<see cref="Forgetting.Fisher"/>), drawn from
        /// the stream (seed, "fisher/task-i"), read through the run's output task (a causal LM's is over its predicted
        /// tokens), under the task's head for task-incremental studies. The variant and the layers that used the
        /// per-sample fallback are reported.
        /// </summary>
        IReadOnlyDictionary<string, Tensor> TaskFisher(TaskData task, FisherKind kind, int phase)
        {
            using var generator = Seeds.Generator(_c.Run.Seed, $"fisher/task-{phase}");
            var batches = Counted(task.Train.InOrder(_c.Data.EvalBatchSize));
            if (task.HeadClasses is null || run.Task is not ClassificationTask { Heads: not null })
            {
                var result = Forgetting.Fisher.Compute(run.Model, batches, kind, generator, task: run.Task);
                observer.Message(result.Describe());
                return result.Diagonal;
            }
            using var subset = new ClassSubset(run.Model, task.HeadClasses, run.NumClasses);
            var restricted = Forgetting.Fisher.Compute(subset, subset.Renumbered(batches), kind, generator);
            observer.Message(restricted.Describe());
            return restricted.Diagonal.ToDictionary(kv => kv.Key.StartsWith("m.") ? kv.Key[2..] : kv.Key, kv => kv.Value);
        }

        /// <summary>The final checkpoint; for a study the evaluation record, its probes and every forgetting metric.</summary>
        RunOutcome Finish()
        {
            if (_skipped > 0) observer.Message($"the loss scaler skipped {_skipped} of {_windows} steps (final scale {run.Precision.LossScale})");
            var final = Write("final", Stage.Trained);
            store.Artifact(runId, "checkpoint", final);
            // A run resumed after its last evaluation has not evaluated in this process.
            // A run of 0 epochs never evaluated: its evaluation is stored like any other (sweeps and `runs` read it). A run
            // resumed after its last evaluation has it stored already and only needs the values.
            if (_last.Count == 0 && !_study && _evaluations.Count == 0) Evaluate(run.Tasks[0]);
            else if (_last.Count == 0 && !_study)
                _last = EvaluateAll(run.Model, run.Tasks[0], extra, _c.Data.EvalBatchSize, run.Precision, run.Task);
            if (!_study) ProbeRow();
            var weights = Path.Combine(final, Checkpoint.Model);
            if (!_study) return new RunOutcome(runDir, runId, weights, _last, null, [], []);

            var rows = _progress!.Rows;
            var record = new EvaluationRecord(run.Tasks.Select(t => t.Name).ToList(), rows.Select(r => r.TestAccuracy).ToArray(),
                rows.Select(r => r.TestLoss).ToArray(), new Dictionary<string, double[][]>
                {
                    [ProbeNames.RandomInitAccuracy] = [_progress.RandomInit],
                    [ProbeNames.ParameterChangeNorm] = rows.Select(r => new[] { r.ChangeNorm }).ToArray(),
                }.Concat(StudyRecord.Matrices(rows.Select(r => (IReadOnlyDictionary<string, double[]>?)r.Probes).ToList())).ToDictionary());
            StudyRecord.Store(store, runId, record);
            var (values, failures) = StudyRecord.ComputeMetrics(run.Metrics, record, store, runId);
            return new RunOutcome(runDir, runId, weights, _last, record, values, failures);
        }

        /// <summary>A checkpoint a resume may start from: <c>step-S</c> in a single run, with task and stage in a study.</summary>
        void WriteResumable(Stage stage)
        {
            Write(_study ? Checkpoint.StudyName(Step, _phase, stage) : Checkpoint.PeriodicName(Step), stage);
            Checkpoint.Prune(CheckpointsDir, _c.Checkpoint.KeepLast);
        }

        /// <summary>Writes a checkpoint of the current state. The store is flushed first, so every row up to this
        /// step is on disk before the checkpoint that a resume will continue from.</summary>
        string Write(string name, Stage stage)
        {
            var rows = store.Watermark();
            store.Heartbeat(runId);
            var state = new CheckpointState(Checkpoint.FormatVersion, runId, _phase, stage, Step, O.StepCount, _phaseStartStep,
                _epoch, _windowInEpoch, _windows, _skipped, run.Precision.Scaler?.Scale ?? 1.0, run.Precision.Scaler?.GoodSteps ?? 0,
                _evaluations.ToList(), _best, _stops.ToList(), _progress, rows.Metrics, rows.Evaluations,
                run.Identity, _c.Run.Seed, torch.get_num_threads(), DateTime.UtcNow.ToString("O"));
            // Beside the optimizer's fp32 master weights: frozen parameters and buffers (BatchNorm's running statistics are
            // state a resumed or fine-tuned model needs, though no gradient moves them).
            var frozen = run.Model.named_parameters().Where(p => !p.parameter.requires_grad).Select(p => (p.name, (Tensor)p.parameter))
                .Concat(run.Model.named_buffers());
            var methodState = run.Methods.All.SelectMany((m, i) => m.StateDict().Select(kv => ($"{i}/{kv.Key}", kv.Value)));
            return Checkpoint.Write(CheckpointsDir, name, state, O.NamedMaster().Concat(frozen), O.NamedState(), methodState);
        }
    }

    /// <summary>The stop reasons as the store's <c>stop_reason</c> holds them, each with its task in a study.</summary>
    static string StopText(IEnumerable<PhaseStop> stops, bool study) =>
        string.Join("; ", stops.Select(s => study ? $"task {s.Phase}: {s.Reason}" : s.Reason));

    /// <summary>The new best value when the latest evaluation improves on <paramref name="best"/>.</summary>
    static double? IsBest(CheckpointSection c, IReadOnlyDictionary<string, double> metrics, double? best)
    {
        if (c.BestMetric.Length == 0) return null;
        if (!metrics.TryGetValue(c.BestMetric, out var value))
            throw new InvalidOperationException($"[checkpoint] best_metric '{c.BestMetric}' is not among the evaluation's metrics ({string.Join(", ", metrics.Keys)})");
        bool better = best is null || (c.BestMode == "min" ? value < best : value > best);
        return better ? value : null;
    }
}
