using System.Text.Json;
using Research.Abstractions;
using Research.Core.Checkpoints;
using Research.Core.Config;
using Research.Core.Data;
using Research.Core.Models;
using Research.Core.Optim;
using Research.Core.Plugins;
using Research.Core.Studies;
using Research.Core.Tasks;
using Research.Core.Tracking;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Training;

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
public static partial class Trainer
{
    /// <summary>
    /// Runs the config as a single run or a study, or continues the run in <paramref name="resumeDir"/> from its newest
    /// valid checkpoint. <paramref name="extraEvaluations"/> are evaluated with validation and test at each evaluation (the
    /// demo passes the two halves of the classes). A plugin exception during training stops the run, records it as failed,
    /// and is rethrown as <see cref="PluginFailureException"/>; a metric that throws is reported in the outcome instead.
    /// </summary>
    public static RunOutcome Run(RunConfig config, PluginHost host, ITrainingObserver? observer = null,
        IReadOnlyList<(string Name, TensorDataset Data)>? extraEvaluations = null, string? resumeDir = null, bool dryRun = false,
        RunKind kind = RunKind.Train, IReadOnlyList<IRunObserver>? reporters = null)
    {
        observer ??= new SilentObserver();
        using var run = RunBuilder.Build(config, host, kind);
        RunBuilder.CheckLength(run);
        // Refused before a run folder exists: a config error creates nothing.
        RunBuilder.Groups(config.Optimizer, run.Model, config.File);
        if (dryRun)
        {
            foreach (var line in RunStreams.DryRun(run)) observer.Message(line);
            return new RunOutcome("", "", "", new Dictionary<string, EvalResult>(), null, [], []);
        }
        // One writer per run folder, taken before anything in it is read for a resume.
        using var resumeLock = resumeDir is null ? null : RunLock.Acquire(Path.GetFullPath(resumeDir));
        (string Dir, CheckpointState State)? resume = resumeDir is null ? null : Resume.Point(run, resumeDir, observer.Message);
        using var session = RunSession.Open(run, resumeDir, resume, observer);
        try
        {
            var outcome = new Loop(run, session.Store, session.RunId, session.Layout, observer, extraEvaluations ?? [], session.Interruption,
                reporters ?? []).Execute(resume);
            // A metric that failed leaves the run failed with its reason; the record and the other metrics are stored.
            session.End(outcome.MetricFailures.Count == 0 ? "finished" : "failed", outcome.MetricFailures.Count == 0 ? null : string.Join("; ", outcome.MetricFailures));
            return outcome;
        }
        catch (RunInterruptedException e)
        {
            session.End("interrupted", e.Message);
            throw new RunInterruptedException(e.Signal, e.ExitCode, $"{e.Message}; resume with --resume {session.Layout.Root}");
        }
        catch (Exception e)
        {
            // A store that cannot be written (a full disk) must not hide why the run failed.
            try { session.End("failed", e.Message); }
            catch (Exception storeError) when (storeError is RunStoreException) { observer.Message($"warning: {storeError.Message}"); }
            throw;
        }
    }

    /// <summary>The loop over phases, with where it is: the part of the checkpoint state that changes as it runs. What
    /// happens beside training at its steps and task ends is its observers' (<see cref="IRunObserver"/>).</summary>
    sealed partial class Loop(RunComponents run, RunStore store, string runId, RunLayout layout, ITrainingObserver observer,
        IReadOnlyList<(string Name, TensorDataset Data)> extra, Interruption interruption, IReadOnlyList<IRunObserver> reporters) : IRunLoop
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
        List<EvaluationPoint> _history = [];
        List<PhaseStop> _stops = [];
        StudyProgress? _progress;
        IReadOnlyDictionary<string, EvalResult> _last = new Dictionary<string, EvalResult>();
        List<IRunObserver> _observers = [];

        Optimizer O => _optimizer!;
        public long Step => _stepOffset + (_optimizer?.StepCount ?? 0);
        string PhaseName => _study ? $"task-{_phase}" : "train";

        public RunComponents Run => run;
        public RunLayout Layout => layout;
        public RunStore Store => store;
        public string RunId => runId;
        public int Phase => _phase;
        public long PhaseStartStep => _phaseStartStep;
        public Optimizer Optimizer => O;
        public IReadOnlyList<StudyRow> StudyRows => _progress?.Rows ?? [];
        public void Message(string text) => observer.Message(text);

        /// <summary>Calls every observer at one point of the run, in order.</summary>
        void Notify(Action<IRunObserver> hook)
        {
            foreach (var o in _observers) hook(o);
        }

        public RunOutcome Execute((string Dir, CheckpointState State)? resume)
        {
            try
            {
                bool freshPhase = true;
                _observers = [.. RunObservers.Create(run), .. reporters];
                if (resume is { } r) freshPhase = Restore(r.Dir, r.State);
                else if (run.LoadSummary != null) observer.Message(run.LoadSummary);
                Notify(o => o.RunStarted(this, resume is not null));
                run.Methods.Callbacks.RunStart(this, resume?.Dir);
                if (resume is null && _study) BeginStudy();
                observer.Started(layout.Root, run.TotalSteps);
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
                        if (run.Methods.Signals.Halted != null) break;
                        Notify(o => o.TaskEnded(this));
                        // After the last task the final checkpoint follows at once.
                        if (_phase < run.Tasks.Count - 1)
                        {
                            _stage = Stage.Consolidated;
                            WriteResumable(Stage.Consolidated);
                            interruption.ThrowIfRequested($"after task {_phase} (step {Step})");
                        }
                    }
                }
                _phase = Math.Min(_phase, run.Tasks.Count - 1);
                return Finish();
            }
            finally
            {
                _optimizer?.Dispose();
                // Reporters belong to the caller.
                foreach (var o in _observers.Except(reporters)) o.Dispose();
            }
        }

        /// <summary>A new study: what it is, and the random initialisation's accuracy on every task (the baseline of forward
        /// transfer), read after the observers saw the start (a head fitted by <c>head_init</c> is part of it).</summary>
        void BeginStudy()
        {
            var c = _c.Study;
            observer.Message($"study {c.Benchmark}: {run.Tasks.Count} tasks ({string.Join(", ", run.Tasks.Select(t => t.Name))}); " +
                             $"{(c.Joint ? "joint training on all tasks seen so far" : run.Methods.Training.Count == 0 ? "plain fine-tuning" : string.Join(" + ", run.Methods.Training.Select(m => m.Name)))}; " +
                             $"optimizer {(c.ResetOptimizer ? "reset" : "kept")} and schedule {(c.ResetSchedule ? "restarted" : "continued")} at each task");
            _progress = new StudyProgress(StudyMatrix.Baseline(run), []);
        }

        /// <summary>Where a phase begins: a new optimizer for the first phase, and for each when a study resets it.</summary>
        void StartPhase()
        {
            if (_optimizer is null || (_study && _c.Study.ResetOptimizer)) NewOptimizer();
            if (_study && _phase == 0) WeightFile.Save(ModelState(), layout.InitialWeights);
            _phaseStartStep = Step;
            _epoch = 0; _windowInEpoch = 0; _best = null;
            _stage = Stage.Training;
            if (_study) observer.Message($"task {_phase} ({run.Tasks[_phase].Name}): " + (run.EpochsOf(_phase) == 0
                ? "not trained (0 epochs: the starting model has learned it); evaluated and consolidated"
                : $"{run.StepsOf(_phase)} optimizer steps"));
            TaskStart.Call(run, _phase, O);
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
            if (_optimizer is not null) { _optimizer.Dispose(); run.Added.ResetState(); } // added parameters are reset with it
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
            RunCheckpoint.Load(dir, run, O, s);
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

        /// <summary>Trains the current phase for its epochs, from where the loop is, until they end or early stopping says stop.</summary>
        void TrainPhase()
        {
            var data = StudyMatrix.PhaseData(run, _phase, out var owned);
            try { TrainPhase(data); }
            finally { if (owned) data.Dispose(); }
        }

        void TrainPhase(TaskData data)
        {
            int batchSize = _c.Data.BatchSize, k = _c.Train.GradAccum, epochs = run.EpochsOf(_phase);
            long stepsPerEpoch = data.Train.WindowsPerEpoch(batchSize, k);
            bool restarts = run.ScheduleRestarts;
            long scheduleLength = run.ScheduleLength(_phase);
            _history = ScheduleHistory();
            var step = new TrainStep(run.Model, O, run.Precision, run.Methods, _c.Optimizer.ClipNorm, _phase, run.Task, _stepOffset,
                name => Seeds.Generator(_c.Run.Seed, $"methods/{name}"), run.Shadow, run.Added);
            var log = new StepLog(store, runId, observer, run);
            string? stop = _stops.FirstOrDefault(s => s.Phase == _phase)?.Reason;
            run.Model.train();
            while (stop is null && _epoch < epochs)
            {
                if (_windowInEpoch == 0) run.Methods.Callbacks.EpochStart(_epoch);
                using var order = Seeds.Generator(_c.Run.Seed, RunStreams.DataOrder(run, _phase, _epoch));
                foreach (var window in data.Train.ShuffledWindows(batchSize, k, order, skipWindows: _windowInEpoch))
                {
                    // t counts applied updates only: a step the loss scaler skipped advances neither t nor the schedule.
                    long t = restarts ? Step - _phaseStartStep : Step;
                    double lr = _c.Optimizer.Lr * run.Schedule.Multiplier(new ScheduleContext(t, scheduleLength, stepsPerEpoch, _history));
                    StepOutcome result;
                    using (var mixing = NewDisposeScope()) result = step.Run(run.Methods.WithMemory(window, _phase, Step, _c.Run.Seed), lr);
                    _windows++; _windowInEpoch++;
                    if (!result.Applied) _skipped++;
                    log.Record(Step, _windows, result, lr, _skipped, _study ? _phase : null);
                    // Evaluations and checkpoints that fall on an epoch's last window wait for the epoch's end, so a
                    // checkpoint is always either inside an epoch or after its evaluation.
                    bool insideEpoch = _windowInEpoch < stepsPerEpoch;
                    if (_c.Train.EvalEvery > 0 && result.Applied && Step % _c.Train.EvalEvery == 0 && insideEpoch)
                    {
                        Evaluate(data);
                        if ((stop = Stopping()) != null) break;
                    }
                    if (result.Applied) Notify(o => o.StepApplied(this));
                    bool written = _c.Checkpoint.Every > 0 && result.Applied && Step % _c.Checkpoint.Every == 0 && insideEpoch;
                    if (insideEpoch && run.Methods.Signals.Pending && (stop = Requested(data, written, epochEnd: false)) != null) break;
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
                // After the evaluation the next window is window 0 of the next epoch; checkpoints record that.
                _epoch++; _windowInEpoch = 0;
                stop = Stopping();
                run.Methods.Callbacks.EpochEnd(_epoch - 1);
                bool due = _c.Checkpoint.AtEpochEnd || (_c.Checkpoint.Every > 0 && Step % _c.Checkpoint.Every == 0);
                if (stop is null && run.Methods.Signals.Pending) stop = Requested(data, due || (_study && _epoch == epochs), epochEnd: true);
                // A study's phase end is checkpointed as "trained" right after this; a single run's last epoch keeps its own.
                bool phaseEnds = stop != null || _epoch == epochs;
                if (due && !(_study && phaseEnds)) WriteResumable(Stage.Training);
                // A study's last epoch is checkpointed as "trained" by the caller, which checks for a signal after it.
                if (interruption.Requested != null && !(_study && phaseEnds))
                {
                    if (!due) WriteResumable(Stage.Training);
                    interruption.ThrowIfRequested($"at step {Step}, after epoch {_epoch}");
                }
            }
            if (epochs == 0) run.Methods.ObserveUntrained(data.Train, _c.Data.BatchSize, _phase, Step, _c.Run.Seed);
            // A phase whose every step the loss scaler skipped trained nothing: that is a failure, not a finished run.
            if (epochs > 0 && Step == _phaseStartStep && _windows > 0)
                throw new NonFiniteGradientException($"the loss scaler skipped every step of {(_study ? $"task {_phase}" : "the run")} (non-finite gradients at every scale down to {run.Precision.LossScale}): nothing was trained; lower [precision] initial_scale, or use bf16");
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
            run.Methods.Callbacks.BeforeEvaluation(_epoch);
            var results = Evaluation.All(run.Model, data, _study && _c.Study.EvalAllTasks ? extra.Concat(EveryTask()).ToList() : extra,
                _c.Data.EvalBatchSize, run.Precision, run.Task, test: !_study, Prediction.Of(run, Step, _phase));
            StepLog.Evaluation(store, runId, Step, _epoch, PhaseName, results);
            _evaluations.Add(new SavedEvaluation(_phase, Step, _epoch, results.SelectMany(r => new[]
            {
                KeyValuePair.Create($"{r.Key}_loss", r.Value.Loss), KeyValuePair.Create($"{r.Key}_accuracy", r.Value.Accuracy),
            }).ToDictionary()));
            _history = ScheduleHistory();
            observer.EpochEnded(_epoch, Step, results);
            store.Heartbeat(runId);
            _last = results;
            run.Methods.Callbacks.AfterEvaluation(_epoch, _evaluations[^1].Metrics);
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
            if (EarlyStopping.IsBest(_c.Checkpoint, phase[^1].Metrics, _best) is { } best)
            {
                _best = best;
                Write(_study ? $"best-task-{_phase}" : "best", Stage.Training);
            }
            var t = _c.Train;
            var stop = EarlyStopping.Decide(phase, t.EarlyStoppingMetric, t.EarlyStoppingMode, t.EarlyStoppingPatience, t.EarlyStoppingThreshold);
            return stop is null ? null : Stopped(stop);
        }

        /// <summary>Row i of the study's matrices: the model after task i on every task's test and validation split, the
        /// parameter change since the previous task, and the task-end weights (<c>tasks/task-i</c>).</summary>
        void EvaluateRow()
        {
            var (testAcc, testLoss, probes) = StudyMatrix.Evaluate(this);
            if (_phase == 0 && run.EpochsOf(0) == 0) Array.Copy(testAcc, _progress!.RandomInit, testAcc.Length);
            var change = StudyMatrix.ChangeNorm(O, layout.TaskStartWeights(_phase));
            WeightFile.Save(ModelState(), layout.TaskEndWeights(_phase));
            _progress!.Rows.Add(new StudyRow(testAcc, testLoss, change, probes));
            store.Heartbeat(runId);
            observer.Message($"after task {_phase} ({run.Tasks[_phase].Name}): test accuracy " +
                             string.Join("  ", testAcc.Select((a, j) => $"{j}:{a:F3}")) + $"   ‖Δθ‖ = {change:F3}");
        }

        /// <summary>Adds probe rows to row i of a study's record (the core's probes and the methods' share it).</summary>
        public void AddProbes(int phase, IReadOnlyDictionary<string, double[]> probes)
        {
            if (_progress is not { } progress || progress.Rows.Count <= phase || probes.Count == 0) return;
            progress.Rows[phase] = progress.Rows[phase] with
            {
                Probes = (progress.Rows[phase].Probes ?? new Dictionary<string, double[]>()).Concat(probes).ToDictionary(),
            };
        }

        /// <summary>A whole model's state for a task-end snapshot: the master weights, frozen parameters and buffers.</summary>
        public IEnumerable<(string Name, Tensor Value)> ModelState() => O.NamedMaster()
            .Concat(run.Model.named_parameters().Where(p => !p.parameter.requires_grad).Select(p => (p.name, (Tensor)p.parameter)))
            .Concat(run.Model.named_buffers());

        /// <summary>The final checkpoint; for a study the evaluation record, its probes and every forgetting metric (a study a
        /// plugin stopped has only its rows so far, stored as they came: no whole record, no metrics).</summary>
        RunOutcome Finish()
        {
            if (_skipped > 0) observer.Message($"the loss scaler skipped {_skipped} of {_windows} steps (final scale {run.Precision.LossScale})");
            var final = Write("final", Stage.Trained);
            store.Artifact(runId, "checkpoint", final);
            // A run of 0 epochs never evaluated: its evaluation is stored like any other (sweeps and `runs` read it). A run
            // resumed after its last evaluation has it stored already and only needs the values.
            if (_last.Count == 0 && !_study && _evaluations.Count == 0) Evaluate(run.Tasks[0]);
            else if (_last.Count == 0 && !_study)
                _last = Evaluation.All(run.Model, run.Tasks[0], extra, _c.Data.EvalBatchSize, run.Precision, run.Task, prediction: Prediction.Of(run, Step, _phase));
            if (!_study) Notify(o => o.TrainingEnded(this));
            run.Methods.Callbacks.RunEnd();
            var weights = Path.Combine(final, Checkpoint.Model);
            if (!_study) return new RunOutcome(layout.Root, runId, weights, _last, null, [], []);

            var record = StudyRecord.From(run.Tasks.Select(t => t.Name).ToList(), _progress!);
            if (run.Methods.Signals.Halted != null) return new RunOutcome(layout.Root, runId, weights, _last, record, [], []);
            StudyRecord.Store(store, runId, record);
            var (values, failures) = GuardedMetric.ComputeAll(run.Metrics, record, store, runId);
            return new RunOutcome(layout.Root, runId, weights, _last, record, values, failures);
        }

        /// <summary>A checkpoint a resume may start from: <c>step-S</c> in a single run, with task and stage in a study.</summary>
        void WriteResumable(Stage stage)
        {
            Write(_study ? Checkpoint.StudyName(Step, _phase, stage) : Checkpoint.PeriodicName(Step), stage);
            Checkpoint.Prune(layout.Checkpoints, _c.Checkpoint.KeepLast);
        }

        /// <summary>Writes a checkpoint of the current state. The store is flushed first, so every row up to this
        /// step is on disk before the checkpoint that a resume will continue from.</summary>
        string Write(string name, Stage stage)
        {
            run.Methods.Callbacks.Flush();
            var rows = store.Watermark();
            store.Heartbeat(runId);
            var state = new CheckpointState(Checkpoint.FormatVersion, runId, _phase, stage, Step, O.StepCount, _phaseStartStep,
                _epoch, _windowInEpoch, _windows, _skipped, run.Precision.Scaler?.Scale ?? 1.0, run.Precision.Scaler?.GoodSteps ?? 0,
                _evaluations.ToList(), _best, _stops.ToList(), _progress, rows.Metrics, rows.Evaluations,
                run.Identity, _c.Run.Seed, torch.get_num_threads(), DateTime.UtcNow.ToString("O"));
            return RunCheckpoint.Write(layout.Checkpoints, name, state, run, O);
        }
    }

    /// <summary>The stop reasons as the store's <c>stop_reason</c> holds them, each with its task in a study.</summary>
    internal static string StopText(IEnumerable<PhaseStop> stops, bool study) =>
        string.Join("; ", stops.Select(s => study ? $"task {s.Phase}: {s.Reason}" : s.Reason));
}
