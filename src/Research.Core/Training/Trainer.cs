using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using Research.Abstractions;
using Research.Core.Checkpoints;
using Research.Core.Config;
using Research.Core.Data;
using Research.Core.Optim;
using Research.Core.Plugins;
using Research.Core.Precision;
using Research.Core.Tracking;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Training;

/// <summary>The result of a run: where it lives and its final evaluations by split name.</summary>
public sealed record TrainingOutcome(string RunDir, string RunId, string WeightsPath, IReadOnlyDictionary<string, EvalResult> Final);

/// <summary>
/// One training run, readable top to bottom: setup (or restore from a checkpoint), then for each epoch and
/// each accumulation window one <see cref="TrainStep"/>, periodic checkpoints, evaluation on validation and
/// test (and any extra named sets) at each epoch end, the best and final checkpoints.
/// </summary>
public static class Trainer
{
    /// <summary>
    /// Runs the config, or continues the run in <paramref name="resumeDir"/> from its newest valid checkpoint.
    /// Plugins come from <paramref name="host"/>. <paramref name="extraEvaluations"/> are evaluated with
    /// validation and test at each epoch end (the demo passes the other half of the classes). A plugin exception
    /// stops the run, records it as failed, and is rethrown as <see cref="PluginFailureException"/>.
    /// </summary>
    public static TrainingOutcome Run(RunConfig config, PluginHost host, ITrainingObserver? observer = null,
        IReadOnlyList<(string Name, TensorDataset Data)>? extraEvaluations = null, string? resumeDir = null, bool dryRun = false)
    {
        observer ??= new SilentObserver();
        var (schedule, regularizers) = RunSetup.Plugins(config, host);
        if (config.Run.Threads > 0) torch.set_num_threads(config.Run.Threads);
        var seed = config.Run.Seed;
        var configText = ConfigLoader.ToToml(config.Source);
        var configHash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(configText)));

        // A resume starts from the newest checkpoint that verifies; corrupt ones are reported and skipped.
        (string Dir, CheckpointState State)? resume = null;
        if (resumeDir != null)
        {
            var checkpoints = Path.Combine(resumeDir, "checkpoints");
            resume = Checkpoint.LatestValid(checkpoints, observer.Message)
                     ?? throw new InvalidDataException($"--resume {resumeDir}: no valid checkpoint in {checkpoints}");
            if (resume.Value.State.ConfigHash != configHash)
                throw new ConfigException(config.File, "(config)", $"differs from the config of the run being resumed ({resumeDir}/config.toml); resume with that config");
        }

        var (fullTrain, fullTest) = RunSetup.LoadDataset(config.Data, seed);
        using var _full = fullTrain; using var _fullTest = fullTest;
        using var task = RunSetup.Task(config.Run.Name, fullTrain, fullTest, config.Data, seed);
        var (model, loadSummary) = RunSetup.Model(config.Model, fullTrain.Features, fullTrain.NumClasses, seed, config.File);
        using var _model = model;
        var precision = RunSetup.Precision(config.Precision);
        precision.Prepare(model);
        var (optimizer, groupTable) = RunSetup.Optimizer(config.Optimizer, model, config.File);
        using var _optimizer = optimizer;
        long totalSteps = task.Train.WindowsPerEpoch(config.Data.BatchSize, config.Train.GradAccum) * config.Train.Epochs;
        RunSetup.CheckLength(config, totalSteps);
        if (dryRun)
        {
            observer.Message($"# {config.File}, resolved (every default filled in):");
            observer.Message(RunSetup.ResolvedToml(config));
            observer.Message($"# {task.Train.Count} training items, {task.Validation.Count} validation, {task.Test.Count} test; " +
                             $"{totalSteps} optimizer steps ({config.Train.Epochs} epochs × {totalSteps / config.Train.Epochs})");
            if (loadSummary != null) observer.Message(loadSummary);
            foreach (var line in groupTable) observer.Message(line);
            return new TrainingOutcome("", "", "", new Dictionary<string, EvalResult>());
        }

        string runId, runDir;
        RunStore store;
        if (resume is { } r)
        {
            (runId, runDir) = (r.State.RunId, Path.GetFullPath(resumeDir!));
            store = new RunStore(Path.Combine(runDir, RunStore.FileName));
            Restore(r.Dir, r.State, optimizer, regularizers, precision);
            store.ResumeRun(runId, r.State.Step);
            store.Heartbeat(runId);
            observer.Message($"resumed {runId} from {r.Dir} at step {r.State.Step} (epoch {r.State.Epoch + 1}, window {r.State.WindowInEpoch})");
        }
        else (runId, runDir, store) = RunSetup.StartRun(config, RunSetup.TrainingStreams(config));
        using var _store = store;

        try
        {
            if (loadSummary != null && resume is null) observer.Message(loadSummary);
            foreach (var line in groupTable) observer.Message(line);
            var step = new TrainStep(model, optimizer, precision, regularizers, config.Optimizer.ClipNorm);
            var run = new RunContext(config, task, model, optimizer, precision, schedule, regularizers, step, store, runId, runDir,
                configHash, observer, extraEvaluations ?? []);
            var outcome = Loop(run, resume?.State);
            store.EndRun(runId, succeeded: true);
            return outcome;
        }
        catch (Exception e)
        {
            store.EndRun(runId, succeeded: false, error: e.Message);
            throw;
        }
    }

    sealed record RunContext(RunConfig Config, TaskData Task, nn.Module<Tensor, Tensor> Model, Optimizer Optimizer,
        PrecisionPolicy Precision, ISchedule Schedule, IReadOnlyList<IRegularizer> Regularizers, TrainStep Step, RunStore Store,
        string RunId, string RunDir, string ConfigHash, ITrainingObserver Observer, IReadOnlyList<(string Name, TensorDataset Data)> Extra);

    /// <summary>Where the loop is: the part of the checkpoint state that changes every step.</summary>
    sealed class Position
    {
        public int Epoch;
        public long WindowInEpoch, Windows, Skipped;
        public double? Best;
        public List<EvaluationPoint> Evaluations = [];
    }

    static TrainingOutcome Loop(RunContext run, CheckpointState? resumed)
    {
        var (config, optimizer, store) = (run.Config, run.Optimizer, run.Store);
        int batchSize = config.Data.BatchSize, k = config.Train.GradAccum;
        long stepsPerEpoch = run.Task.Train.WindowsPerEpoch(batchSize, k);
        long totalSteps = stepsPerEpoch * config.Train.Epochs;
        var at = new Position();
        if (resumed != null)
        {
            at.Epoch = resumed.Epoch; at.WindowInEpoch = resumed.WindowInEpoch; at.Windows = resumed.Windows;
            at.Skipped = resumed.SkippedSteps; at.Best = resumed.Best;
            at.Evaluations = resumed.Evaluations.Select(e => new EvaluationPoint(e.Step, e.Epoch, e.Metrics)).ToList();
        }
        run.Observer.Started(run.RunDir, totalSteps);

        var clock = Stopwatch.StartNew();
        long itemsSinceLog = 0;
        IReadOnlyDictionary<string, EvalResult> last = new Dictionary<string, EvalResult>();
        string? stopReason = null;
        run.Model.train();
        while (stopReason is null && at.Epoch < config.Train.Epochs)
        {
            // Data order depends only on (seed, epoch): a resumed run sees the same batches.
            using var order = Seeds.Generator(config.Run.Seed, $"data-order/epoch-{at.Epoch}");
            foreach (var window in run.Task.Train.ShuffledWindows(batchSize, k, order, skipWindows: at.WindowInEpoch))
            {
                // t counts applied updates only: a step the loss scaler skipped advances neither t nor the schedule.
                long t = optimizer.StepCount;
                double lr = config.Optimizer.Lr * run.Schedule.Multiplier(new ScheduleContext(t, totalSteps, stepsPerEpoch, at.Evaluations));
                var result = run.Step.Run(window, lr);
                at.Windows++; at.WindowInEpoch++;
                if (!result.Applied) at.Skipped++;
                itemsSinceLog += result.Items;
                // The pre-clip gradient norm is recorded at every step; the rest every log_every steps.
                store.Metric(run.RunId, optimizer.StepCount, "grad_norm", result.GradNorm);
                if (at.Windows % config.Train.LogEvery == 0 || !result.Applied)
                {
                    var seconds = clock.Elapsed.TotalSeconds;
                    var throughput = seconds > 0 ? itemsSinceLog / seconds : 0;
                    clock.Restart(); itemsSinceLog = 0;
                    long s = optimizer.StepCount;
                    store.Metric(run.RunId, s, "train_loss", result.Loss);
                    store.Metric(run.RunId, s, "lr", lr);
                    store.Metric(run.RunId, s, "items_per_second", throughput);
                    if (run.Precision.Scaler != null)
                    {
                        store.Metric(run.RunId, s, "loss_scale", result.LossScale);
                        store.Metric(run.RunId, s, "skipped_steps", at.Skipped);
                    }
                    run.Observer.Step(s, totalSteps, result.Loss, lr, throughput);
                }
                // Evaluations and checkpoints that fall on an epoch's last window wait for the epoch's end, so a
                // checkpoint is always either inside an epoch or after its evaluation.
                bool insideEpoch = at.WindowInEpoch < stepsPerEpoch;
                if (config.Train.EvalEvery > 0 && result.Applied && optimizer.StepCount % config.Train.EvalEvery == 0 && insideEpoch)
                {
                    last = Evaluate(run, at);
                    if ((stopReason = Stopping(run, at)) != null) break;
                }
                if (config.Checkpoint.Every > 0 && result.Applied && optimizer.StepCount % config.Checkpoint.Every == 0 && insideEpoch)
                    WritePeriodic(run, at);
            }
            if (stopReason != null) break;

            last = Evaluate(run, at);
            // After the evaluation the next window is window 0 of the next epoch; checkpoints record that.
            at.Epoch++; at.WindowInEpoch = 0;
            stopReason = Stopping(run, at);
            bool dueByStep = config.Checkpoint.Every > 0 && optimizer.StepCount % config.Checkpoint.Every == 0;
            if (config.Checkpoint.AtEpochEnd || dueByStep) WritePeriodic(run, at);
        }
        if (stopReason != null)
        {
            run.Observer.Message(stopReason);
            store.StopReason(run.RunId, stopReason);
        }
        if (at.Skipped > 0) run.Observer.Message($"the loss scaler skipped {at.Skipped} of {at.Windows} steps (final scale {run.Precision.LossScale})");

        var final = Write(run, at, "final");
        var weights = Path.Combine(final, Checkpoint.Model);
        store.Artifact(run.RunId, "checkpoint", final);
        return new TrainingOutcome(run.RunDir, run.RunId, weights, last);
    }

    /// <summary>Evaluates validation and test (and the extra sets), records them, and writes <c>best</c> when the
    /// selection metric improved.</summary>
    static IReadOnlyDictionary<string, EvalResult> Evaluate(RunContext run, Position at)
    {
        var step = run.Optimizer.StepCount;
        var results = EvaluateAll(run.Model, run.Task, run.Extra, run.Config.Data.EvalBatchSize, run.Precision);
        foreach (var (split, r) in results) run.Store.Evaluation(run.RunId, step, at.Epoch, "train", split, r.Loss, r.Accuracy, r.Items);
        at.Evaluations.Add(new EvaluationPoint(step, at.Epoch, results.SelectMany(r => new[]
        {
            KeyValuePair.Create($"{r.Key}_loss", r.Value.Loss), KeyValuePair.Create($"{r.Key}_accuracy", r.Value.Accuracy),
        }).ToDictionary()));
        run.Observer.EpochEnded(at.Epoch, step, results);
        run.Store.Heartbeat(run.RunId);
        return results;
    }

    /// <summary>After an evaluation: the best checkpoint, then whether early stopping says stop (and why).</summary>
    static string? Stopping(RunContext run, Position at)
    {
        if (IsBest(run.Config.Checkpoint, at.Evaluations[^1].Metrics, at.Best) is { } best)
        {
            at.Best = best;
            Write(run, at, "best");
        }
        var t = run.Config.Train;
        return EarlyStopping.Decide(at.Evaluations, t.EarlyStoppingMetric, t.EarlyStoppingMode, t.EarlyStoppingPatience, t.EarlyStoppingThreshold);
    }

    /// <summary>The new best value when the latest evaluation improves on <paramref name="best"/>.</summary>
    static double? IsBest(CheckpointSection c, IReadOnlyDictionary<string, double> metrics, double? best)
    {
        if (c.BestMetric.Length == 0) return null;
        if (!metrics.TryGetValue(c.BestMetric, out var value))
            throw new InvalidOperationException($"[checkpoint] best_metric '{c.BestMetric}' is not among the evaluation's metrics ({string.Join(", ", metrics.Keys)})");
        bool better = best is null || (c.BestMode == "min" ? value < best : value > best);
        return better ? value : null;
    }

    static void WritePeriodic(RunContext run, Position at)
    {
        Write(run, at, Checkpoint.PeriodicName(run.Optimizer.StepCount));
        Checkpoint.Prune(Path.Combine(run.RunDir, "checkpoints"), run.Config.Checkpoint.KeepLast);
    }

    /// <summary>Writes a checkpoint of the current state. The store is flushed first, so every row up to this
    /// step is on disk before the checkpoint that a resume will continue from.</summary>
    static string Write(RunContext run, Position at, string name)
    {
        run.Store.Flush();
        run.Store.Heartbeat(run.RunId);
        var o = run.Optimizer;
        var state = new CheckpointState(Checkpoint.FormatVersion, run.RunId, o.StepCount, at.Epoch, at.WindowInEpoch, at.Windows, at.Skipped,
            run.Precision.Scaler?.Scale ?? 1.0, run.Precision.Scaler?.GoodSteps ?? 0,
            at.Evaluations.Select(e => new SavedEvaluation(e.Step, e.Epoch, e.Metrics.ToDictionary())).ToList(), at.Best,
            run.ConfigHash, run.Config.Run.Seed, torch.get_num_threads(), DateTime.UtcNow.ToString("O"));
        var frozen = run.Model.named_parameters().Where(p => !p.parameter.requires_grad).Select(p => (p.name, (Tensor)p.parameter));
        var regularizerState = run.Regularizers.SelectMany((r, i) => r.StateDict().Select(kv => ($"{i}/{kv.Key}", kv.Value)));
        return Checkpoint.Write(Path.Combine(run.RunDir, "checkpoints"), name, state, o.NamedMaster().Concat(frozen), o.NamedState(), regularizerState);
    }

    /// <summary>Loads a verified checkpoint into the freshly built optimizer, regularizers and loss scaler.</summary>
    static void Restore(string dir, CheckpointState state, Optimizer optimizer, IReadOnlyList<IRegularizer> regularizers, PrecisionPolicy precision)
    {
        var weights = Checkpoint.Load(dir, Checkpoint.Model);
        var moments = Checkpoint.Load(dir, Checkpoint.Optimizer);
        var regs = Checkpoint.Load(dir, Checkpoint.Regularizers);
        try
        {
            optimizer.Restore(weights, moments, state.Step);
            for (int i = 0; i < regularizers.Count; i++)
            {
                var prefix = $"{i}/";
                regularizers[i].LoadStateDict(regs.Where(kv => kv.Key.StartsWith(prefix)).ToDictionary(kv => kv.Key[prefix.Length..], kv => kv.Value));
            }
            precision.Scaler?.Restore(state.LossScale, state.ScalerGoodSteps, state.SkippedSteps);
        }
        finally
        {
            foreach (var t in weights.Values.Concat(moments.Values)) t.Dispose();
        }
    }

    /// <summary>Evaluates validation ("val"), test ("test") and the extra named sets.</summary>
    public static Dictionary<string, EvalResult> EvaluateAll(nn.Module<Tensor, Tensor> model, TaskData task,
        IReadOnlyList<(string Name, TensorDataset Data)> extra, int batchSize, PrecisionPolicy precision)
    {
        var results = new Dictionary<string, EvalResult>
        {
            ["val"] = Evaluation.Run(model, task.Validation, batchSize, precision),
            ["test"] = Evaluation.Run(model, task.Test, batchSize, precision),
        };
        foreach (var (name, data) in extra) results[name] = Evaluation.Run(model, data, batchSize, precision);
        return results;
    }
}
