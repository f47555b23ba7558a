using Research.Abstractions;
using Research.Core.Data;
using Research.Core.Optim;
using Research.Core.Tracking;
using static TorchSharp.torch;

namespace Research.Core.Training;

/// <summary>A study's task × task evaluation: the baseline before any training, row i after task i, the parameter change
/// between task ends, and the data a phase trains on.</summary>
static class StudyMatrix
{
    /// <summary>The random initialisation's test accuracy on every task (the baseline of forward transfer). A first task of
    /// 0 epochs ends with the starting weights, so row 0 is this baseline: it is copied from there instead of evaluating
    /// every test split twice (NaN until then).</summary>
    public static double[] Baseline(RunComponents run) => run.EpochsOf(0) == 0
        ? Enumerable.Repeat(double.NaN, run.Tasks.Count).ToArray()
        : run.Tasks.Select(t => Evaluation.Run(run.Model, t.Test, run.Config.Data.EvalBatchSize, run.Precision, run.Task, Prediction.Of(run, 0, 0)).Accuracy).ToArray();

    /// <summary>Row i of the study's matrices: the model after task i on every task's test and validation split, stored as
    /// the study's cells (and TensorBoard scalars); returns the test accuracies and losses, and the probe rows of the
    /// predictor's task end (null when none). A predictor's task end (<see cref="IPredictor"/>: iCaRL's exemplars of the
    /// task's classes) comes first, since it is part of the classifier the row measures.</summary>
    public static (double[] Accuracy, double[] Loss, Dictionary<string, double[]>? Probes) Evaluate(IRunLoop loop)
    {
        var (run, store, runId, phase, step) = (loop.Run, loop.Store, loop.RunId, loop.Phase, loop.Step);
        var probes = run.Methods.Predictor is { TaskHooks: not null } predictor ? Consolidation.TaskEnds(loop, [predictor]) : null;
        var prediction = Prediction.Of(run, step, phase);
        int T = run.Tasks.Count;
        var (testAcc, testLoss) = (new double[T], new double[T]);
        for (int j = 0; j < T; j++)
        {
            var results = Evaluation.All(run.Model, run.Tasks[j], [], run.Config.Data.EvalBatchSize, run.Precision, run.Task, prediction: prediction);
            foreach (var (split, e) in results)
            {
                store.StudyCell(runId, phase, j, split, e.Loss, e.Accuracy);
                store.Board?.Scalar($"study/{split}/task{j}/accuracy", step, e.Accuracy);
                store.Board?.Scalar($"study/{split}/task{j}/loss", step, e.Loss);
            }
            (testAcc[j], testLoss[j]) = (results["test"].Accuracy, results["test"].Loss);
        }
        return (testAcc, testLoss, probes is { Count: > 0 } ? probes : null);
    }

    /// <summary>‖θ − θ_prev‖₂ over the trainable parameters (<see cref="Optimizer.DeltaSince"/>).</summary>
    public static double ChangeNorm(Optimizer optimizer, string previous)
    {
        using var _ = NewDisposeScope();
        return optimizer.DeltaSince(previous).norm().item<float>();
    }

    /// <summary>Phase i's data: its task, or under joint training the union of tasks 0..i (then owned by the caller).</summary>
    public static TaskData PhaseData(RunComponents run, int phase, out bool owned)
    {
        owned = run.JointAt(phase);
        if (!owned) return run.Tasks[phase];
        var seen = run.Tasks.Take(phase + 1).ToList();
        return new TaskData($"tasks 0–{phase}", TensorDataset.Concat(seen.Select(t => t.Train).ToList()),
            TensorDataset.Concat(seen.Select(t => t.Validation).ToList()), TensorDataset.Concat(seen.Select(t => t.Test).ToList()));
    }
}
