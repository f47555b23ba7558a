using Research.Abstractions;

namespace ResearchPlugin1;

/// <summary>The plugin's options, bound from its table in a config:
/// <code>[schedule]
/// name = "research-plugin-1"
/// warmup_steps = 10
/// halve_every = 50</code></summary>
public sealed record Options : IValidatable
{
    /// <summary>W: updates of linear warmup from 0 to the peak.</summary>
    [Option(Min = 0)]
    public long WarmupSteps { get; init; }

    /// <summary>The rate halves every this many updates after warmup.</summary>
    [Option(Min = 1)]
    public long HalveEvery { get; init; } = 100;

    /// <summary>Rules between options; each option's own range is declared on it.</summary>
    public IEnumerable<OptionError> Validate()
    {
        if (WarmupSteps > 0 && HalveEvery < WarmupSteps / 10)
            yield return new("halve_every", "is under a tenth of warmup_steps: the rate would collapse right after warmup");
    }
}

/// <summary>
/// Linear warmup, then halving: f(t) = t / W for t &lt; W, then 2^(−⌊(t − W) / h⌋). A schedule is a pure function of a
/// read-only context (the step t, the run's total updates T, the evaluations so far), so a resumed run needs no state.
/// </summary>
[Plugin("research-plugin-1", Summary = "linear warmup, then the rate halves every halve_every updates")]
public sealed class Plugin(Options options) : ISchedule
{
    public double Multiplier(in ScheduleContext context)
    {
        if (context.Step < options.WarmupSteps) return (double)context.Step / options.WarmupSteps;
        return Math.Pow(0.5, (context.Step - options.WarmupSteps) / options.HalveEvery);
    }
}
