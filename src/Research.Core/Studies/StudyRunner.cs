using System.Text.Json;
using Research.Abstractions;
using Research.Core.Checkpoints;
using Research.Core.Config;
using Research.Core.Data;
using Research.Core.Optim;
using Research.Core.Plugins;
using Research.Core.Precision;
using Research.Core.Tracking;
using Research.Core.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Studies;

/// <summary>The outcome of a study: its run directory, the evaluation record and every forgetting metric of it.</summary>
public sealed record StudyOutcome(string RunDir, EvaluationRecord Record, IReadOnlyList<(string Name, MetricValue Value)> Metrics);

/// <summary>
/// A study trains one model on a sequence of tasks through the same training step, and after each task
/// evaluates it on every task (test split; validation too), filling the task × task matrices R (accuracy) and
/// L (loss). The core computes the probes the metrics need (accuracy of the random initialisation on every task,
/// ‖θ_i − θ_{i−1}‖ at each task end) and stores a parameter snapshot per task end; the forgetting metrics are
/// the loaded metric plugins, pure functions of the record. Regularizers consolidate at each task end.
/// </summary>
public static class StudyRunner
{
    // Per-task values are NaN where a metric is undefined (no task after the last); JSON has no NaN literal.
    static readonly JsonSerializerOptions Json = new() { NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals };

    public static StudyOutcome Run(RunConfig config, PluginHost host, ITrainingObserver? observer = null)
    {
        observer ??= new SilentObserver();
        var (schedule, regularizers) = RunSetup.Plugins(config, host);
        var metrics = host.Plugins.Where(p => p.Role == PluginRole.ForgettingMetric)
            .Select(p => (p.Name, Metric: (IForgettingMetric)PluginHost.Instantiate(p, null, config.File, p.Name))).ToList();
        if (config.Run.Threads > 0) torch.set_num_threads(config.Run.Threads);
        var seed = config.Run.Seed;
        var study = config.Study;

        var tasks = TaskSequence.Build(study, config.Data, seed);
        try
        {
            int numClasses = (int)RunSetup.DatasetShape(config.Data).Classes;
            using var heads = study.Benchmark == "split-task" ? new TaskHeads(tasks.Select(t => t.Classes).ToList(), numClasses) : null;
            Func<Tensor, Tensor, Tensor>? headsFn = heads is null ? null : heads.Apply;
            var (model, _) = RunSetup.Model(config.Model, tasks[0].Data.Train.Features, numClasses, seed, config.File);
            using var _model = model;
            var precision = RunSetup.Precision(config.Precision);
            precision.Prepare(model);

            var (runId, runDir, store) = RunSetup.StartRun(config, Streams(config, tasks.Count));
            using var _store = store;
            observer.Message($"study {study.Benchmark}: {tasks.Count} tasks ({string.Join(", ", tasks.Select(t => t.Name))}); " +
                             $"{(study.Joint ? "joint training on all tasks seen so far" : regularizers.Count == 0 ? "plain fine-tuning" : string.Join(" + ", regularizers.Select(r => r.Descriptor.Name)))}; " +
                             $"optimizer {(study.ResetOptimizer ? "reset" : "kept")} and schedule {(study.ResetSchedule ? "restarted" : "continued")} at each task");
            try
            {
                var outcome = Sequence(config, tasks, model, precision, schedule, regularizers, metrics, headsFn, store, runId, runDir, observer);
                store.EndRun(runId, succeeded: true);
                return outcome;
            }
            catch (Exception e)
            {
                store.EndRun(runId, succeeded: false, error: e.Message);
                throw;
            }
        }
        finally
        {
            foreach (var t in tasks) t.Dispose();
        }
    }

    static StudyOutcome Sequence(RunConfig config, IReadOnlyList<StudyTask> tasks, nn.Module<Tensor, Tensor> model, PrecisionPolicy precision,
        ISchedule schedule, IReadOnlyList<GuardedRegularizer> regularizers, IReadOnlyList<(string Name, IForgettingMetric Metric)> metrics,
        Func<Tensor, Tensor, Tensor>? heads, RunStore store, string runId, string runDir, ITrainingObserver observer)
    {
        int T = tasks.Count, evalBatch = config.Data.EvalBatchSize, numClasses = (int)RunSetup.DatasetShape(config.Data).Classes;
        var accuracy = new double[T][];
        var loss = new double[T][];
        var changeNorms = new double[T][];

        // Probe: the random initialisation on every task (the baseline of forward transfer).
        var randomInit = tasks.Select(t => Evaluation.Run(model, t.Data.Test, evalBatch, precision, heads).Accuracy).ToArray();

        // Steps per task (joint tasks grow), so that a schedule that spans the study knows its length T.
        long StepsOf(int i)
        {
            long items = config.Study.Joint ? tasks.Take(i + 1).Sum(t => t.Data.Train.Count) : tasks[i].Data.Train.Count;
            long microBatches = (items + config.Data.BatchSize - 1) / config.Data.BatchSize;
            return config.Train.Epochs * ((microBatches + config.Train.GradAccum - 1) / config.Train.GradAccum);
        }
        long studyTotal = Enumerable.Range(0, T).Sum(StepsOf);

        Optimizer? optimizer = null;
        try
        {
            long studyStep = 0;
            for (int i = 0; i < T; i++)
            {
                if (optimizer is null || config.Study.ResetOptimizer)
                {
                    optimizer?.Dispose();
                    (optimizer, var table) = RunSetup.Optimizer(config.Optimizer, model, config.File);
                    if (i == 0) foreach (var line in table) observer.Message(line);
                }
                using var before = optimizer.Master.detach().clone();
                using var train = config.Study.Joint && i > 0 ? TensorDataset.Concat(tasks.Take(i + 1).Select(t => t.Data.Train).ToList()) : null;
                var data = train ?? tasks[i].Data.Train;
                var step = new TrainStep(model, optimizer, precision, regularizers, config.Optimizer.ClipNorm, i, heads);
                studyStep = TrainTask(config, i, data, optimizer, schedule, step, store, runId, observer, studyStep,
                    config.Study.ResetSchedule ? StepsOf(i) : studyTotal);

                // The task ends: regularizers consolidate (EWC's Fisher and θ*, L2-SP's anchor, SI's importances).
                var named = optimizer.PenaltyParameters();
                int task = i;
                var context = new TaskContext(i, tasks[i].Name, model, named, tasks[i].Data.Train.InOrder(config.Data.EvalBatchSize),
                    (logits, targets) => nn.functional.cross_entropy(heads is null ? logits : heads(logits, targets), targets,
                        ignore_index: TrainStep.IgnoreIndex, reduction: nn.Reduction.None),
                    kind => TaskFisher(model, tasks[task], kind, heads is not null, numClasses, config, observer, task));
                foreach (var r in regularizers) r.Consolidate(context);

                accuracy[i] = new double[T];
                loss[i] = new double[T];
                for (int j = 0; j < T; j++)
                {
                    foreach (var (split, set) in new[] { ("test", tasks[j].Data.Test), ("val", tasks[j].Data.Validation) })
                    {
                        var e = Evaluation.Run(model, set, evalBatch, precision, heads);
                        store.StudyCell(runId, i, j, split, e.Loss, e.Accuracy);
                        if (split == "test") { accuracy[i][j] = e.Accuracy; loss[i][j] = e.Loss; }
                    }
                }
                using (var change = optimizer.Master.detach().sub(before)) changeNorms[i] = [change.norm().item<float>()];
                WeightFile.Save(optimizer.NamedMaster(), Path.Combine(runDir, "tasks", $"task-{i}", WeightFile.FileName));
                store.Heartbeat(runId);
                observer.Message($"after task {i} ({tasks[i].Name}): test accuracy " +
                                 string.Join("  ", accuracy[i].Select((a, j) => $"{j}:{a:F3}")) + $"   ‖Δθ‖ = {changeNorms[i][0]:F3}");
            }
        }
        finally { optimizer?.Dispose(); }

        var record = new EvaluationRecord(tasks.Select(t => t.Name).ToList(), accuracy, loss, new Dictionary<string, double[][]>
        {
            [ProbeNames.RandomInitAccuracy] = [randomInit],
            [ProbeNames.ParameterChangeNorm] = changeNorms,
        });
        foreach (var (name, probe) in record.Probes) store.StudyValue(runId, "probe", name, double.NaN, JsonSerializer.Serialize(probe, Json));
        var values = new List<(string, MetricValue)>();
        foreach (var (name, metric) in metrics)
        {
            var value = metric.Compute(record);
            values.Add((name, value));
            store.StudyValue(runId, "metric", name, value.Value, JsonSerializer.Serialize(value.PerTask, Json));
        }
        return new StudyOutcome(runDir, record, values);
    }

    /// <summary>Trains one task for the configured epochs; returns the study's step count after it.</summary>
    /// <summary>The random streams of a study, by name: per task its split, permutation, data order and Fisher draws.</summary>
    static IEnumerable<string> Streams(RunConfig c, int tasks)
    {
        yield return "init";
        if (c.Data.Dataset == "synthetic") yield return "synthetic-data";
        for (int t = 0; t < tasks; t++)
        {
            yield return $"task-{t}";
            if (c.Study.Benchmark == "permuted" && t > 0) yield return $"permutation/{t}";
            for (int e = 0; e < c.Train.Epochs; e++) yield return $"task-{t}/data-order/epoch-{e}";
            yield return $"fisher/task-{t}";
        }
    }

    /// <summary>
    /// The diagonal Fisher of the trained model on a task's training data (<see cref="Forgetting.Fisher"/>), under
    /// the task's head for task-incremental studies. The variant and the layers that used the per-sample fallback
    /// are reported.
    /// </summary>
    static IReadOnlyDictionary<string, Tensor> TaskFisher(nn.Module<Tensor, Tensor> model, StudyTask task, FisherKind kind, bool taskHeads,
        int numClasses, RunConfig config, ITrainingObserver observer, int index)
    {
        using var generator = Seeds.Generator(config.Run.Seed, $"fisher/task-{index}");
        var batches = task.Data.Train.InOrder(config.Data.EvalBatchSize);
        if (!taskHeads)
        {
            var result = Forgetting.Fisher.Compute(model, batches, kind, generator);
            observer.Message(result.Describe());
            return result.Diagonal;
        }
        var subset = new ClassSubset(model, task.Classes, numClasses);
        var restricted = Forgetting.Fisher.Compute(subset, subset.Renumbered(batches), kind, generator);
        observer.Message(restricted.Describe());
        return restricted.Diagonal.ToDictionary(kv => kv.Key.StartsWith("m.") ? kv.Key[2..] : kv.Key, kv => kv.Value);
    }

    /// <param name="total">T of the schedule: the task's steps, or the study's when the schedule spans it.</param>
    static long TrainTask(RunConfig config, int task, TensorDataset data, Optimizer optimizer, ISchedule schedule, TrainStep step,
        RunStore store, string runId, ITrainingObserver observer, long studyStep, long total)
    {
        int batchSize = config.Data.BatchSize, k = config.Train.GradAccum;
        long stepsPerEpoch = data.WindowsPerEpoch(batchSize, k);
        long offset = config.Study.ResetSchedule ? 0 : studyStep;
        long first = optimizer.StepCount;
        for (int epoch = 0; epoch < config.Train.Epochs; epoch++)
        {
            using var order = Seeds.Generator(config.Run.Seed, $"task-{task}/data-order/epoch-{epoch}");
            foreach (var window in data.ShuffledWindows(batchSize, k, order))
            {
                long t = offset + optimizer.StepCount - first;
                double lr = config.Optimizer.Lr * schedule.Multiplier(new ScheduleContext(t, total, stepsPerEpoch, []));
                var result = step.Run(window, lr);
                studyStep++;
                if (studyStep % config.Train.LogEvery == 0)
                {
                    store.Metric(runId, studyStep, "train_loss", result.Loss);
                    store.Metric(runId, studyStep, "lr", lr);
                    store.Metric(runId, studyStep, "task", task);
                    observer.Step(studyStep, 0, result.Loss, lr, 0);
                }
            }
        }
        return studyStep;
    }
}
