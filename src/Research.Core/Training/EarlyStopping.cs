using Research.Core.Config;
using Research.Abstractions;

namespace Research.Core.Training;

/// <summary>
/// Early stopping as a pure function of the evaluation history (like reduce-on-plateau, so a resumed run
/// decides exactly as the uninterrupted one): stop when the last <c>patience</c> evaluations have not improved
/// the best earlier value of <c>metric</c> by more than <c>threshold</c> (absolute; in the direction of <c>mode</c>).
/// </summary>
public static class EarlyStopping
{
    /// <summary>The reason to stop now, or null to go on.</summary>
    public static string? Decide(IReadOnlyList<EvaluationPoint> history, string metric, string mode, int patience, double threshold)
    {
        if (patience <= 0 || history.Count <= patience) return null;
        double Value(EvaluationPoint e) => e.Metrics.TryGetValue(metric, out var v) ? v
            : throw new InvalidOperationException($"[train] early_stopping_metric '{metric}' is not among the evaluation's metrics ({string.Join(", ", e.Metrics.Keys)})");
        bool Improves(double candidate, double reference) =>
            mode == "max" ? candidate > reference + threshold : candidate < reference - threshold;

        // The best value before the last `patience` evaluations, improved on (by more than the threshold) by none of them.
        var before = history.Take(history.Count - patience).Select(Value).ToList();
        double best = mode == "max" ? before.Max() : before.Min();
        var recent = history.Skip(history.Count - patience).ToList();
        if (recent.Any(e => Improves(Value(e), best))) return null;
        return $"early stopping at step {history[^1].Step}: {metric} has not improved on {best:G6} by more than {threshold:G3} " +
               $"in the last {patience} evaluations (patience {patience})";
    }

    /// <summary>The new best value when the latest evaluation improves on <paramref name="best"/>.</summary>
    public static double? IsBest(CheckpointSection c, IReadOnlyDictionary<string, double> metrics, double? best)
    {
        if (c.BestMetric.Length == 0) return null;
        if (!metrics.TryGetValue(c.BestMetric, out var value))
            throw new InvalidOperationException($"[checkpoint] best_metric '{c.BestMetric}' is not among the evaluation's metrics ({string.Join(", ", metrics.Keys)})");
        bool better = best is null || (c.BestMode == "min" ? value < best : value > best);
        return better ? value : null;
    }
}
