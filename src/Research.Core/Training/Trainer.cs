using System.Diagnostics;
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
/// One training run, readable top to bottom: setup, then for each epoch and each mini-batch one optimizer
/// step inside its own dispose scope, then evaluation on validation and test (and any extra named sets).
/// </summary>
public static class Trainer
{
    /// <summary>
    /// Runs the config. Plugins come from <paramref name="host"/>. <paramref name="extraEvaluations"/> are
    /// evaluated with validation and test at each epoch end (the demo passes the other half of the classes).
    /// A plugin exception stops the run, records it as failed, and is rethrown as <see cref="PluginFailureException"/>.
    /// </summary>
    public static TrainingOutcome Run(RunConfig config, PluginHost host, ITrainingObserver? observer = null,
        IReadOnlyList<(string Name, TensorDataset Data)>? extraEvaluations = null)
    {
        observer ??= new SilentObserver();
        var (schedule, regularizers) = RunSetup.Plugins(config, host);
        if (config.Run.Threads > 0) torch.set_num_threads(config.Run.Threads);
        var seed = config.Run.Seed;

        var (fullTrain, fullTest) = RunSetup.LoadDataset(config.Data, seed);
        using var _full = fullTrain; using var _fullTest = fullTest;
        using var task = RunSetup.Task(config.Run.Name, fullTrain, fullTest, config.Data, seed);
        var (model, loadSummary) = RunSetup.Model(config.Model, fullTrain.Features, fullTrain.NumClasses, seed, config.File);
        using var _model = model;
        var precision = RunSetup.Precision(config.Precision);
        precision.Prepare(model);
        var (optimizer, groupTable) = RunSetup.Optimizer(config.Optimizer, model, config.File);
        using var _optimizer = optimizer;

        var runId = $"{config.Run.Name}-{DateTime.UtcNow:yyyyMMdd-HHmmss-fff}";
        var runDir = Path.GetFullPath(Path.Combine(config.Run.OutputDir, runId));
        Directory.CreateDirectory(runDir);
        using var store = new RunStore(Path.Combine(runDir, RunStore.FileName));
        store.BeginRun(new RunInfo(runId, config.Run.Name, config.File, ConfigLoader.ToToml(config.Source), RunSetup.ResolvedJson(config),
            seed, Provenance.CodeVersion(), Provenance.PackageVersions(), torch.get_num_threads(), "cpu"));
        File.WriteAllText(Path.Combine(runDir, "config.toml"), ConfigLoader.ToToml(config.Source));

        try
        {
            if (loadSummary != null) observer.Message(loadSummary);
            foreach (var line in groupTable) observer.Message(line);
            var step = new TrainStep(model, optimizer, precision, regularizers, config.Optimizer.ClipNorm);
            var outcome = Loop(config, task, model, optimizer, precision, schedule, step, store, runId, runDir, observer, extraEvaluations ?? []);
            store.EndRun(runId, succeeded: true);
            return outcome;
        }
        catch (Exception e)
        {
            store.EndRun(runId, succeeded: false, error: e.Message);
            throw;
        }
    }

    static TrainingOutcome Loop(RunConfig config, TaskData task, nn.Module<Tensor, Tensor> model, Optimizer optimizer,
        PrecisionPolicy precision, ISchedule schedule, TrainStep trainStep, RunStore store, string runId, string runDir,
        ITrainingObserver observer, IReadOnlyList<(string Name, TensorDataset Data)> extra)
    {
        var seed = config.Run.Seed;
        int batchSize = config.Data.BatchSize, k = config.Train.GradAccum;
        long stepsPerEpoch = task.Train.WindowsPerEpoch(batchSize, k);
        long totalSteps = stepsPerEpoch * config.Train.Epochs;
        var evaluations = new List<EvaluationPoint>();
        observer.Started(runDir, totalSteps);

        var clock = Stopwatch.StartNew();
        long itemsSinceLog = 0, windows = 0, skipped = 0;
        IReadOnlyDictionary<string, EvalResult> last = new Dictionary<string, EvalResult>();
        model.train();
        for (int epoch = 0; epoch < config.Train.Epochs; epoch++)
        {
            // Data order depends only on (seed, epoch): a resumed run sees the same batches.
            using var order = Seeds.Generator(seed, $"data-order/epoch-{epoch}");
            foreach (var window in task.Train.ShuffledWindows(batchSize, k, order))
            {
                // t counts applied updates only: a step the loss scaler skipped advances neither t nor the schedule.
                long t = optimizer.StepCount;
                double lr = config.Optimizer.Lr * schedule.Multiplier(new ScheduleContext(t, totalSteps, stepsPerEpoch, evaluations));
                windows++;
                var result = trainStep.Run(window, lr);
                // The pre-clip gradient norm is recorded at every step; the rest every log_every steps.
                store.Metric(runId, optimizer.StepCount, "grad_norm", result.GradNorm);
                if (!result.Applied) skipped++;
                itemsSinceLog += result.Items;
                if (windows % config.Train.LogEvery == 0 || !result.Applied)
                {
                    var seconds = clock.Elapsed.TotalSeconds;
                    var throughput = seconds > 0 ? itemsSinceLog / seconds : 0;
                    clock.Restart(); itemsSinceLog = 0;
                    long at = optimizer.StepCount;
                    store.Metric(runId, at, "train_loss", result.Loss);
                    store.Metric(runId, at, "lr", lr);
                    store.Metric(runId, at, "items_per_second", throughput);
                    if (precision.Scaler != null)
                    {
                        store.Metric(runId, at, "loss_scale", result.LossScale);
                        store.Metric(runId, at, "skipped_steps", skipped);
                    }
                    observer.Step(at, totalSteps, result.Loss, lr, throughput);
                }
            }

            var results = EvaluateAll(model, task, extra, config.Data.EvalBatchSize, precision);
            foreach (var (split, r) in results) store.Evaluation(runId, optimizer.StepCount, epoch, "train", split, r.Loss, r.Accuracy, r.Items);
            evaluations.Add(new EvaluationPoint(optimizer.StepCount, epoch, results.SelectMany(r => new[]
            {
                KeyValuePair.Create($"{r.Key}_loss", r.Value.Loss), KeyValuePair.Create($"{r.Key}_accuracy", r.Value.Accuracy),
            }).ToDictionary()));
            observer.EpochEnded(epoch, optimizer.StepCount, results);
            last = results;
        }
        if (skipped > 0) observer.Message($"the loss scaler skipped {skipped} of {windows} steps (final scale {precision.LossScale})");

        // The weights of record are the fp32 ones: the master copy under mixed precision.
        var weights = Path.Combine(runDir, "checkpoints", "final", WeightFile.FileName);
        WeightFile.Save(optimizer.Buffer.Slots.Select(s => (s.Name, optimizer.HasMasterCopy ? FlatBuffer.ViewOf(optimizer.Master, s) : s.Parameter))
            .Concat(model.named_parameters().Where(p => !p.parameter.requires_grad).Select(p => (p.name, (Tensor)p.parameter))), weights);
        store.Artifact(runId, "weights", weights);
        return new TrainingOutcome(runDir, runId, weights, last);
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
