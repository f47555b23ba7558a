using Research.Abstractions;

namespace Research.Plugins.Schedules;

/// <summary>Options of <see cref="Polynomial"/>.</summary>
[KeyAdvice("lr_end", "is an absolute learning rate in Hugging Face (default 1e-7); here the end is a ratio of the peak: end_ratio = lr_end / lr")]
[KeyAdvice("lr_init", "is the optimizer's lr here (the peak the schedule multiplies)")]
public sealed record PolynomialOptions : WarmupOptions
{
    /// <summary>e: the multiplier reached at the last step T, as a fraction of the peak.</summary>
    [Option(Min = 0, Max = 1)]
    public double EndRatio { get; init; }

    /// <summary>k: the exponent; 1 is linear decay, above 1 falls fast early, below 1 falls late.</summary>
    [Option(Min = 0, MinExclusive = true)]
    public double Power { get; init; } = 1.0;
}

/// <summary>
/// Polynomial decay after warmup: f(t) = e + (1 − e)(1 − p)^k, p = (t − W) / (T − W) clamped to [0, 1].
/// PyTorch <c>PolynomialLR</c>; optax <c>polynomial_schedule</c>; Hugging Face
/// <c>get_polynomial_decay_schedule_with_warmup</c> with end_ratio = lr_end / lr (theirs is absolute).
/// </summary>
[Plugin("polynomial", Summary = "polynomial decay (1 - p)^power from the peak to end_ratio at the last step")]
public sealed class Polynomial(PolynomialOptions options) : ISchedule
{
    public double Multiplier(in ScheduleContext c)
    {
        var p = Warmup.Progress(options.WarmupFor(c), c);
        var e = options.EndRatio;
        return Warmup.Apply(options.WarmupFor(c), c.Step, e + (1 - e) * Math.Pow(1 - p, options.Power));
    }
}
