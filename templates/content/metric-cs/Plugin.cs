using Research.Abstractions;

namespace ResearchPlugin1;

/// <summary>
/// The largest forgetting of any task: max over j &lt; T − 1 of (max over l &lt; T − 1 of R[l][j]) − R[T − 1][j], the
/// worst case of Chaudhry et al. 2018's forgetting measure (which averages it). A metric is a pure function of the
/// study's evaluation record: R[i][j] is the accuracy on task j after training task i. PerTask holds each task's drop.
/// Choose it in a study config:
/// <code>[[metrics]]
/// name = "research-plugin-1"</code>
/// </summary>
[Plugin("research-plugin-1", Summary = "the largest drop of any task from its best accuracy to its final one")]
public sealed class Plugin : IForgettingMetric
{
    public MetricValue Compute(EvaluationRecord record)
    {
        var accuracy = record.Accuracy;
        int last = accuracy.Length - 1;
        var drops = new List<double>();
        for (int j = 0; j < last; j++)
        {
            double best = double.NegativeInfinity;
            for (int l = j; l < last; l++) best = Math.Max(best, accuracy[l][j]);
            drops.Add(best - accuracy[last][j]);
        }
        // One task forgets nothing.
        return new MetricValue(drops.Count == 0 ? 0.0 : drops.Max(), drops);
    }
}
