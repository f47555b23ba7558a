using Research.Abstractions;

namespace Research.Plugins.Schedules;

/// <summary>The curve of both phases of <see cref="OneCycle"/> (PyTorch's <c>anneal_strategy</c>).</summary>
public enum AnnealStrategy
{
    /// <summary>A half cosine between the two ends.</summary>
    Cos,

    /// <summary>A straight line between the two ends.</summary>
    Linear,
}

/// <summary>Options of <see cref="OneCycle"/>. It has no warmup_steps: its rising phase is its warmup.</summary>
public sealed record OneCycleOptions
{
    /// <summary>The share of the run spent rising to the peak, which is reached at P = round(pct_start · T).</summary>
    [Option(Min = 0, MinExclusive = true, Max = 1, MaxExclusive = true)]
    public double PctStart { get; init; } = 0.3;

    /// <summary>f(0) = 1 / div_factor.</summary>
    [Option(Min = 1)]
    public double DivFactor { get; init; } = 25.0;

    /// <summary>f(T) = 1 / (div_factor · final_div_factor).</summary>
    [Option(Min = 1)]
    public double FinalDivFactor { get; init; } = 1e4;

    /// <summary>The curve of both phases: "cos" or "linear".</summary>
    public AnnealStrategy Anneal { get; init; } = AnnealStrategy.Cos;
}

/// <summary>
/// The 1cycle policy (Smith &amp; Topin 2018; PyTorch <c>OneCycleLR</c> with three_phase = false), as a
/// multiplier of the peak: with s = 1/div_factor and e = s/final_div_factor, f rises along the curve from
/// s at t = 0 to 1 at P = round(pct_start · T), then falls from 1 to e at t = T, and stays at e.
/// PyTorch reaches e one update earlier, at its last step T − 1. The momentum cycling of 1cycle is not a
/// learning-rate schedule and is not done here.
/// </summary>
[Plugin("one-cycle", Summary = "1cycle: rise from peak/div_factor to the peak, then anneal far below the start")]
public sealed class OneCycle(OneCycleOptions options) : ISchedule
{
    private readonly Curve anneal = options.Anneal switch
    {
        AnnealStrategy.Cos => Annealing.Cosine,
        AnnealStrategy.Linear => Annealing.Linear,
        var other => throw new ArgumentOutOfRangeException(nameof(options), other, "anneal"),
    };

    public double Multiplier(in ScheduleContext c)
    {
        var start = 1 / options.DivFactor;
        var end = start / options.FinalDivFactor;
        var peakStep = (long)Math.Round(options.PctStart * c.TotalSteps, MidpointRounding.AwayFromZero);
        return c.Step < peakStep
            ? anneal(start, 1.0, (double)c.Step / peakStep)
            : anneal(1.0, end, Warmup.Progress(peakStep, c));
    }
}
