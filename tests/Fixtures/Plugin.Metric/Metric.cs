using Research.Abstractions;
using static TorchSharp.torch;

namespace Research.Fixtures.Metric;

/// <summary>
/// The accuracy of the trained model on every task's test split, measured by the metric itself at each task end through
/// TaskEndContext (TestData, Logits, Rows) into the probe "fixture_accuracy"; its value is the mean of the last row. It
/// measures what the record's R[T−1][·] holds, so a test can check the one against the other. It counts its task ends
/// as state ("task_ends", a [1] int64 tensor), which the run's checkpoints keep under the metric's name.
/// </summary>
[Plugin("fixture-accuracy", Summary = "fixture: accuracy measured at task ends through the model, read back from its probe")]
public sealed class FixtureAccuracy : IForgettingMetric, ITaskHooks, IStateful
{
    public const string Probe = "fixture_accuracy";

    Tensor? _taskEnds;

    public IReadOnlyDictionary<string, Tensor> StateDict() =>
        _taskEnds is null ? new Dictionary<string, Tensor>() : new Dictionary<string, Tensor> { ["task_ends"] = _taskEnds };

    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state) => _taskEnds = state.GetValueOrDefault("task_ends");

    public void TaskEnd(TaskEndContext context)
    {
        _taskEnds = tensor(new[] { (_taskEnds?.item<long>() ?? 0) + 1 });
        var row = new double[context.TaskCount];
        for (int j = 0; j < row.Length; j++)
        {
            long correct = 0, items = 0;
            foreach (var batch in context.TestData(j))
            {
                using var logits = context.Logits(batch);
                var (rows, targets) = context.Rows(logits, batch);
                using (rows)
                using (targets)
                using (var counted = targets.ne(Batch.IgnoreIndex))
                using (var predicted = rows.argmax(-1))
                using (var right = predicted.eq(targets).logical_and(counted))
                {
                    correct += right.sum().item<long>();
                    items += counted.sum().item<long>();
                }
            }
            row[j] = (double)correct / items;
        }
        context.AddProbe(Probe, row);
    }

    public MetricValue Compute(EvaluationRecord record)
    {
        if (!record.Probes.TryGetValue(Probe, out var accuracy))
            throw new ArgumentException($"the record has no probe '{Probe}': the study ran without fixture-accuracy");
        var last = accuracy[^1];
        return new MetricValue(last.Average(), last);
    }
}
