using Research.Abstractions;

namespace Research.Plugins.Schedules;

/// <summary>Options of <see cref="InverseSqrt"/>.</summary>
public sealed record InverseSqrtOptions : WarmupOptions
{
    /// <summary>τ: f = √(τ / t) from t = τ on, 1 before; 0 means τ = warmup_steps, so that f is continuous at
    /// the end of warmup.</summary>
    public long Timescale { get; init; }

    public override IEnumerable<OptionError> Validate()
    {
        foreach (var error in base.Validate()) yield return error;
        if (Timescale < 0) yield return new("timescale", "must be ≥ 0");
        else if (Timescale == 0 && WarmupSteps == 0 && WarmupRatio == 0)
            yield return new("timescale", "must be > 0 when warmup_steps is 0 (0 means \"use warmup_steps\")");
    }
}

/// <summary>
/// Inverse square-root decay after warmup: f(t) = √(τ / max(τ, t)). With τ = W this is the Transformer
/// schedule of Vaswani et al. 2017, d^(−½)·min(t^(−½), t·W^(−³⁄₂)), divided by its peak d^(−½)·W^(−½);
/// fairseq <c>inverse_sqrt</c>; t5x <c>rsqrt</c>. It ignores T. Hugging Face's <c>inverse_sqrt</c> when τ = W (both
/// defaults); for τ ≠ W theirs is √(τ / (t − W + τ)), which starts its decay at W, where ours holds 1 until τ.
/// </summary>
[Plugin("inverse-sqrt", Summary = "decay proportional to 1/sqrt(step) after warmup (Transformer schedule)", Aliases = ["inverse_sqrt"])]
public sealed class InverseSqrt(InverseSqrtOptions options) : ISchedule
{
    public double Multiplier(in ScheduleContext c)
    {
        var tau = options.Timescale > 0 ? options.Timescale : Math.Max(1, options.WarmupFor(c));
        return Warmup.Apply(options.WarmupFor(c), c.Step, Math.Sqrt((double)tau / Math.Max(tau, c.Step)));
    }
}
