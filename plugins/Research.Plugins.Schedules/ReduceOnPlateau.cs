using Research.Abstractions;

namespace Research.Plugins.Schedules;

/// <summary>Which way the watched metric improves.</summary>
public enum PlateauMode
{
    /// <summary>Lower is better (losses).</summary>
    Min,

    /// <summary>Higher is better (accuracies).</summary>
    Max,
}

/// <summary>Options of <see cref="ReduceOnPlateau"/>.</summary>
[KeyAdvice("min_lr", "is an absolute learning rate in PyTorch and Hugging Face; here the floor is a ratio of the peak: min_lr_ratio = min_lr / lr")]
[KeyAdvice("threshold_mode", "is always \"rel\" here (an improvement is relative to the best value)")]
[KeyAdvice("eps", "is not an option here: the rate is a pure function of the evaluations, so no update is too small to apply")]
public sealed record ReduceOnPlateauOptions : WarmupOptions
{
    /// <summary>The validation metric watched, by its recorded name (watching a test metric would tune on test data).</summary>
    [Option(OneOf = ["val_loss", "val_accuracy"])]
    public string Metric { get; init; } = "val_loss";

    /// <summary>"min" when lower is better (losses), "max" when higher is better (accuracies).</summary>
    public PlateauMode Mode { get; init; } = PlateauMode.Min;

    /// <summary>The multiplier applied at each reduction.</summary>
    [Option(Min = 0, MinExclusive = true, Max = 1, MaxExclusive = true)]
    public double Factor { get; init; } = 0.1;

    /// <summary>Evaluations without improvement that are tolerated; the next one reduces the rate.</summary>
    [Option(Min = 0)]
    public int Patience { get; init; } = 2;

    /// <summary>Relative improvement that counts: below best·(1 − threshold) in "min" mode, above
    /// best·(1 + threshold) in "max" mode.</summary>
    [Option(Min = 0)]
    public double Threshold { get; init; } = 1e-4;

    /// <summary>Evaluations after a reduction during which evaluations without improvement are not counted.</summary>
    [Option(Min = 0)]
    public int Cooldown { get; init; }

    /// <summary>m: the floor of the multiplier.</summary>
    [Option(Min = 0, Max = 1)]
    public double MinLrRatio { get; init; }
}

/// <summary>
/// Reduce on plateau, as a pure function of the evaluations recorded up to t (PyTorch
/// <c>ReduceLROnPlateau</c>, threshold_mode = "rel"): replaying PyTorch's rule over the evaluations with
/// step ≤ t counts the reductions r, and f(t) = warmup(t) · max(m, factor^r). An evaluation without
/// improvement raises a counter (not while cooling down, which resets it); when the counter exceeds
/// patience the rate is reduced, the counter reset and cooldown started.
/// </summary>
[Plugin("reduce-on-plateau", Summary = "multiply by factor when the watched metric stops improving", Aliases = ["reduce_lr_on_plateau"])]
public sealed class ReduceOnPlateau(ReduceOnPlateauOptions options) : ISchedule
{
    public double Multiplier(in ScheduleContext c) =>
        Warmup.Apply(options.WarmupFor(c), c.Step, 1.0)
        * Math.Max(options.MinLrRatio, Math.Pow(options.Factor, Reductions(c)));

    private int Reductions(in ScheduleContext c)
    {
        var minimize = options.Mode == PlateauMode.Min;
        var best = minimize ? double.PositiveInfinity : double.NegativeInfinity;
        int withoutImprovement = 0, cooldownLeft = 0, reductions = 0;
        foreach (var evaluation in c.Evaluations ?? [])
        {
            if (evaluation.Step > c.Step) continue;
            var value = Watched(evaluation);
            var improved = minimize ? value < best * (1 - options.Threshold) : value > best * (1 + options.Threshold);
            if (improved) (best, withoutImprovement) = (value, 0);
            else withoutImprovement++;
            if (cooldownLeft > 0) (cooldownLeft, withoutImprovement) = (cooldownLeft - 1, 0);
            if (withoutImprovement > options.Patience)
            {
                reductions++;
                (cooldownLeft, withoutImprovement) = (options.Cooldown, 0);
            }
        }
        return reductions;
    }

    // A misspelt metric would otherwise never reduce the rate, silently.
    private double Watched(EvaluationPoint evaluation) =>
        evaluation.Metrics.TryGetValue(options.Metric, out var value)
            ? value
            : throw new InvalidOperationException(
                $"reduce-on-plateau watches \"{options.Metric}\", but the evaluation at step {evaluation.Step} " +
                $"has only: {string.Join(", ", evaluation.Metrics.Keys)}");
}
