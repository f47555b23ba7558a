using Research.Abstractions;

namespace Research.Plugins.Schedules;

/// <summary>Options of <see cref="Exponential"/>.</summary>
public sealed record ExponentialOptions : WarmupOptions
{
    /// <summary>r: the factor by which the rate falls every decay_steps updates.</summary>
    [Option(Min = 0, MinExclusive = true, Max = 1)]
    public double DecayRate { get; init; } = 0.1;

    /// <summary>s: updates over which the rate falls by decay_rate; 0 means the whole decay phase T − W.</summary>
    [Option(Min = 0)]
    public long DecaySteps { get; init; }
}

/// <summary>
/// Continuous exponential decay after warmup: f(t) = r^((t − W) / s). It keeps falling after T.
/// optax <c>exponential_decay</c> (without staircase); PyTorch <c>ExponentialLR</c> with γ = r^(1/s).
/// </summary>
[Plugin("exponential", Summary = "multiply by decay_rate every decay_steps updates, continuously")]
public sealed class Exponential(ExponentialOptions options) : ISchedule
{
    public double Multiplier(in ScheduleContext c)
    {
        var w = options.WarmupFor(c);
        var s = options.DecaySteps > 0 ? options.DecaySteps : Math.Max(1, c.TotalSteps - w);
        return Warmup.Apply(w, c.Step, Math.Pow(options.DecayRate, (double)Math.Max(0, c.Step - w) / s));
    }
}
