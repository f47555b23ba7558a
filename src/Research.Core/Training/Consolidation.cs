using Research.Abstractions;
using Research.Core.Config;
using Research.Core.Data;
using Research.Core.Models;
using Research.Core.Studies;
using Research.Core.Tasks;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Training;

/// <summary>The methods' task ends (EWC's Fisher and θ*, SI's importances, LwF's teacher, replay's selection) and those of
/// the metrics that measure the model, when a study has task hooks.</summary>
public sealed class ConsolidationFactory : IRunObserverFactory
{
    public int Order => 30;
    public IRunObserver? Create(RunComponents run) =>
        run.Kind == RunKind.Study && run.Methods.TaskHooks.Count > 0 ? new Consolidation() : null;
}

/// <summary>
/// The task ends: every method's task-end hook, with <see cref="TaskEndContext.IsLastTask"/> after the last task. What the
/// methods keep outlives this scope (see <see cref="GuardedMethod"/>); the parameter views handed to them do not. The probe
/// rows they add go into row i of the study's record.
/// </summary>
sealed class Consolidation : IRunObserver
{
    /// <summary>Every method's task end but the predictor's, which ran before the row was evaluated
    /// (<see cref="StudyMatrix.Evaluate"/>).</summary>
    public void TaskEnded(IRunLoop loop)
    {
        var predictor = loop.Run.Methods.Predictor;
        var methods = predictor is null ? loop.Run.Methods.TaskHooks : loop.Run.Methods.TaskHooks.Where(m => m != predictor).ToList();
        if (methods.Count > 0) loop.AddProbes(loop.Phase, TaskEnds(loop, methods));
    }

    /// <summary>The task-end hooks of <paramref name="methods"/> at the end of the loop's task; returns the probe rows they
    /// added for the task's row of the record.</summary>
    internal static Dictionary<string, double[]> TaskEnds(IRunLoop loop, IReadOnlyList<GuardedMethod> methods)
    {
        var run = loop.Run;
        var c = run.Config;
        using var scope = NewDisposeScope();
        int phase = loop.Phase;
        using var subset = ConsolidationSubset(c, run.Tasks[phase], phase);
        // The view shares the task's validation and test splits; only the subset is this method's to free.
        var task = subset is null ? run.Tasks[phase] : run.Tasks[phase] with { Train = subset };
        var outputs = run.Task;
        var probes = new Dictionary<string, double[]>();
        using var random = Seeds.Generator(c.Run.Seed, $"methods/task-{phase}/end");
        var context = new TaskEndContext(phase, task.Name, phase == run.Tasks.Count - 1, loop.Optimizer.PenaltyParameters(),
            b => TrainedLogits(run, b), (b, f) => TrainedGradient(loop, b, f),
            Counted(task.Train.InOrder(c.Data.EvalBatchSize)), (logits, batch) => outputs.PerItemLoss(logits, batch),
            kind => TaskFisher(loop, task, kind, phase), (name, row) => probes[name] = row.ToArray(), random)
        {
            TaskCount = run.Tasks.Count, TestData = j => TestData(run, j), AddedParameters = run.Added.Parameters,
            Rows = (logits, batch) => Rows(outputs, logits, batch),
            Representation = b => RepresentationFeatures.Of(run.Model, [b], run.Precision, run.ModelPlan.Representation),
        };
        // Each method adds its rows under names no one else gave this task's record: the core's probes, the observers'
        // (which ran before), another method's.
        var taken = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [ProbeNames.RandomInitAccuracy] = "the core", [ProbeNames.ParameterChangeNorm] = "the core",
        };
        foreach (var name in loop.StudyRows.ElementAtOrDefault(phase)?.Probes?.Keys ?? Enumerable.Empty<string>()) taken[name] = "the core";
        foreach (var m in methods)
        {
            var failure = new System.Runtime.CompilerServices.StrongBox<PluginFailureException?>();
            m.TaskEnd(context with { AddProbe = m.ProbeAdder(phase, taken, probes, failure) });
            if (failure.Value is { } e) throw e;
        }
        return probes;
    }

    /// <summary><c>study.consolidation_items</c> of the task's training items, drawn from (seed, "consolidation/task-i");
    /// null when the task has no more than that (or the option is 0).</summary>
    static TensorDataset? ConsolidationSubset(RunConfig c, TaskData task, int phase)
    {
        int n = c.Study.ConsolidationItems;
        if (n == 0 || n >= task.Train.Count) return null;
        using var g = Seeds.Generator(c.Run.Seed, $"consolidation/task-{phase}");
        return task.Train.Sample(n, g);   // its tensors live outside any dispose scope (TensorDataset's own)
    }

    /// <summary>The trained model's fp32 logits in eval mode, without autograd. The forward pass's intermediate tensors are
    /// freed here, not at the end of the plugin's call: a pass over a whole test split would otherwise hold them all.</summary>
    static Tensor TrainedLogits(RunComponents run, Batch batch)
    {
        var wasTraining = run.Model.training;
        run.Model.eval();
        try
        {
            using var scope = NewDisposeScope();
            using (no_grad()) return ModelInput.Logits(run.Model, batch, run.Precision).MoveToOuterDisposeScope();
        }
        finally { run.Model.train(wasTraining); }
    }

    /// <summary>A batch's logits as the task's rows (<see cref="TaskEndContext.Rows"/>): new handles the caller may dispose,
    /// with the views and masked copies made on the way freed at once (a causal LM's narrowed logits would keep every
    /// batch's logits alive until the call ends).</summary>
    static (Tensor Logits, Tensor Targets) Rows(OutputTask outputs, Tensor logits, Batch batch)
    {
        using var scope = NewDisposeScope();
        var (rows, targets) = outputs.Rows(outputs.Restrict(logits, batch), batch);
        return (rows.MoveToOuterDisposeScope(), targets.MoveToOuterDisposeScope());
    }

    /// <summary>∇θ of f(logits) of the trained model (eval mode) on a batch, per trainable slot in fp32.</summary>
    static IReadOnlyList<Tensor> TrainedGradient(IRunLoop loop, Batch batch, Func<Tensor, Tensor> f)
    {
        var run = loop.Run;
        var wasTraining = run.Model.training;
        run.Model.eval();
        try
        {
            using var _ = enable_grad();
            var slots = loop.Optimizer.Buffer.Slots;
            var parameters = slots.Select(s => s.Parameter).ToArray();
            var g = autograd.grad([f(ModelInput.Logits(run.Model, batch, run.Precision))], parameters, allow_unused: true);
            return slots.Select((s, i) => g[i] is { IsInvalid: false } gi ? gi.to(ScalarType.Float32) : zeros(s.Shape)).ToList();
        }
        finally { run.Model.train(wasTraining); }
    }

    /// <summary>Task j's test split in evaluation batches, as the record's matrices read it.</summary>
    static IEnumerable<Batch> TestData(RunComponents run, int j) =>
        j >= 0 && j < run.Tasks.Count ? run.Tasks[j].Test.InOrder(run.Config.Data.EvalBatchSize)
            : throw new ArgumentException($"TestData({j}): the study has tasks 0 to {run.Tasks.Count - 1}");

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
    static IReadOnlyDictionary<string, Tensor> TaskFisher(IRunLoop loop, TaskData task, FisherKind kind, int phase)
    {
        var run = loop.Run;
        var c = run.Config;
        using var generator = Seeds.Generator(c.Run.Seed, $"fisher/task-{phase}");
        var batches = Counted(task.Train.InOrder(c.Data.EvalBatchSize));
        if (task.HeadClasses is null || run.Task is not ClassificationTask { Heads: not null })
        {
            var result = Forgetting.Fisher.Compute(run.Model, batches, kind, generator, task: run.Task);
            loop.Message(result.Describe());
            return result.Diagonal;
        }
        using var subset = new ClassSubset(run.Model, task.HeadClasses, run.NumClasses);
        var restricted = Forgetting.Fisher.Compute(subset, subset.Renumbered(batches), kind, generator);
        loop.Message(restricted.Describe());
        return restricted.Diagonal.ToDictionary(kv => kv.Key.StartsWith("m.") ? kv.Key[2..] : kv.Key, kv => kv.Value);
    }
}
