using System.Diagnostics;
using Research.Abstractions;
using Research.Core.Checkpoints;
using Research.Core.Config;
using Research.Core.Data;
using Research.Core.Optim;
using Research.Core.Plugins;
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
        var optimizer = RunSetup.Optimizer(config.Optimizer, model);

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
            ReportGroups(optimizer, observer);
            var outcome = Loop(config, task, model, optimizer, schedule, regularizers, store, runId, runDir, observer, extraEvaluations ?? []);
            store.EndRun(runId, succeeded: true);
            return outcome;
        }
        catch (Exception e)
        {
            store.EndRun(runId, succeeded: false, error: e.Message);
            throw;
        }
    }

    static void ReportGroups(Optimizer optimizer, ITrainingObserver observer)
    {
        long total = 0;
        foreach (var (g, tensors, count) in ParameterGroups.Summary(optimizer.Parameters))
        {
            observer.Message($"group {g.Name,-10} tensors {tensors,3}  parameters {count,10:N0}  lr ×{g.LrMultiplier}  weight decay {g.WeightDecay}");
            total += count;
        }
        var trainable = optimizer.Parameters.Where(p => p.Value.requires_grad).Sum(p => p.Value.numel());
        observer.Message($"parameters {total:N0}, trainable {trainable:N0} ({100.0 * trainable / Math.Max(1, total):F1}%)");
    }

    static TrainingOutcome Loop(RunConfig config, TaskData task, nn.Module<Tensor, Tensor> model, Optimizer optimizer,
        ISchedule schedule, IReadOnlyList<IRegularizer> regularizers, RunStore store, string runId, string runDir,
        ITrainingObserver observer, IReadOnlyList<(string Name, TensorDataset Data)> extra)
    {
        var seed = config.Run.Seed;
        int batchSize = config.Data.BatchSize;
        long stepsPerEpoch = (task.Train.Count + batchSize - 1) / batchSize;
        long totalSteps = stepsPerEpoch * config.Train.Epochs;
        var evaluations = new List<EvaluationPoint>();
        var named = optimizer.Parameters.Select(p => new NamedParameter(p.Name, p.Value)).ToList();
        observer.Started(runDir, totalSteps);

        var clock = Stopwatch.StartNew();
        long itemsSinceLog = 0;
        IReadOnlyDictionary<string, EvalResult> last = new Dictionary<string, EvalResult>();
        model.train();
        for (int epoch = 0; epoch < config.Train.Epochs; epoch++)
        {
            // Data order depends only on (seed, epoch): a resumed run sees the same batches.
            using var order = Seeds.Generator(seed, $"data-order/epoch-{epoch}");
            foreach (var batch in task.Train.Shuffled(batchSize, order))
            {
                using var scope = NewDisposeScope();
                long t = optimizer.StepCount;
                double lr = config.Optimizer.Lr * schedule.Multiplier(new ScheduleContext(t, totalSteps, stepsPerEpoch, evaluations));

                // Loss normalised by the number of items in the step: Σᵢ ℓᵢ / N.
                var logits = model.forward(batch.Inputs);
                var dataLoss = nn.functional.cross_entropy(logits, batch.Targets, reduction: nn.Reduction.Sum).div(batch.Targets.shape[0]);
                var loss = dataLoss;
                // The penalty is added once per optimizer step, in fp32, not divided by the item count.
                foreach (var r in regularizers)
                    if (r.Penalty(new PenaltyContext(t, 0, named)) is { } penalty) loss = loss + penalty.to_type(ScalarType.Float32);
                loss.backward();

                var gradNorm = GlobalNorm(optimizer.Parameters);
                if (config.Optimizer.ClipNorm > 0) ClipByGlobalNorm(optimizer.Parameters, gradNorm, config.Optimizer.ClipNorm);
                var deltas = optimizer.Step(lr);
                var lossValue = loss.item<float>();
                if (regularizers.Count > 0)
                {
                    var grads = optimizer.Parameters.Select(p => p.Value.grad ?? zeros_like(p.Value)).ToList();
                    foreach (var r in regularizers) r.AfterStep(new StepContext(t, 0, named, grads, deltas, lr, lossValue));
                }
                optimizer.ZeroGrad();

                itemsSinceLog += batch.Targets.shape[0];
                long step = optimizer.StepCount;
                if (step % config.Train.LogEvery == 0 || step == totalSteps)
                {
                    var seconds = clock.Elapsed.TotalSeconds;
                    var throughput = seconds > 0 ? itemsSinceLog / seconds : 0;
                    clock.Restart(); itemsSinceLog = 0;
                    store.Metric(runId, step, "train_loss", lossValue);
                    store.Metric(runId, step, "lr", lr);
                    store.Metric(runId, step, "grad_norm", gradNorm);
                    store.Metric(runId, step, "items_per_second", throughput);
                    observer.Step(step, totalSteps, lossValue, lr, throughput);
                }
            }

            var results = EvaluateAll(model, task, extra, config.Data.EvalBatchSize);
            foreach (var (split, r) in results) store.Evaluation(runId, optimizer.StepCount, epoch, "train", split, r.Loss, r.Accuracy, r.Items);
            evaluations.Add(new EvaluationPoint(optimizer.StepCount, epoch, results.SelectMany(r => new[]
            {
                KeyValuePair.Create($"{r.Key}_loss", r.Value.Loss), KeyValuePair.Create($"{r.Key}_accuracy", r.Value.Accuracy),
            }).ToDictionary()));
            observer.EpochEnded(epoch, optimizer.StepCount, results);
            last = results;
        }

        var weights = Path.Combine(runDir, "checkpoints", "final", WeightFile.FileName);
        WeightFile.Save(model, weights);
        store.Artifact(runId, "weights", weights);
        return new TrainingOutcome(runDir, runId, weights, last);
    }

    /// <summary>Evaluates validation ("val"), test ("test") and the extra named sets.</summary>
    public static Dictionary<string, EvalResult> EvaluateAll(nn.Module<Tensor, Tensor> model, TaskData task,
        IReadOnlyList<(string Name, TensorDataset Data)> extra, int batchSize)
    {
        var results = new Dictionary<string, EvalResult>
        {
            ["val"] = Evaluation.Run(model, task.Validation, batchSize),
            ["test"] = Evaluation.Run(model, task.Test, batchSize),
        };
        foreach (var (name, data) in extra) results[name] = Evaluation.Run(model, data, batchSize);
        return results;
    }

    /// <summary>g ← g · min(1, c / (‖g‖ + 1e-6)), the rule of PyTorch's <c>clip_grad_norm_</c> (Pascanu et al. 2013).</summary>
    static void ClipByGlobalNorm(IReadOnlyList<OptimParameter> ps, double norm, double maxNorm)
    {
        var factor = maxNorm / (norm + 1e-6);
        if (factor >= 1) return;
        foreach (var p in ps) p.Value.grad?.mul_(factor);
    }

    /// <summary>‖g‖₂ over all parameters, ‖(‖g₁‖, …, ‖g_k‖)‖₂.</summary>
    static double GlobalNorm(IReadOnlyList<OptimParameter> ps)
    {
        var norms = ps.Where(p => p.Value.grad is not null).Select(p => p.Value.grad!.norm()).ToList();
        return norms.Count == 0 ? 0 : stack(norms).norm().item<float>();
    }
}
