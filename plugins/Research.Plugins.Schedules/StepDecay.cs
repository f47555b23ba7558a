using Research.Abstractions;

namespace Research.Plugins.Schedules;

/// <summary>Options of <see cref="StepDecay"/>.</summary>
public sealed record StepDecayOptions : WarmupOptions
{
    /// <summary>Updates between decays, counted from the end of warmup. Required unless milestones are given.</summary>
    public long StepSize { get; init; }

    /// <summary>γ: the factor applied at each decay.</summary>
    [Option(Min = 0, MinExclusive = true, Max = 1)]
    public double Gamma { get; init; } = 0.1;

    /// <summary>Updates, counted from the start of the run, at which the rate is multiplied by γ; strictly
    /// increasing. Replaces step_size.</summary>
    public long[] Milestones { get; init; } = [];

    public override IEnumerable<OptionError> Validate()
    {
        foreach (var error in base.Validate()) yield return error;
        if (Milestones.Length == 0)
        {
            if (StepSize <= 0) yield return new("step_size", "must be > 0 (or give milestones)");
        }
        else
        {
            if (StepSize != 0) yield return new("step_size", "must be 0 when milestones are given");
            if (Milestones[0] <= 0 || Milestones.Zip(Milestones.Skip(1)).Any(pair => pair.First >= pair.Second))
                yield return new("milestones", "must be positive and strictly increasing");
        }
    }
}

/// <summary>
/// Step decay after warmup: f(t) = γ^k with k = ⌊(t − W) / step_size⌋, or k = #{milestones ≤ t}.
/// PyTorch <c>StepLR</c> and <c>MultiStepLR</c>; optax <c>piecewise_constant_schedule</c>; the ResNet
/// schedule of He et al. 2016 (÷10 at fixed points).
/// </summary>
[Plugin("step", Summary = "multiply by gamma every step_size updates, or at each milestone")]
public sealed class StepDecay(StepDecayOptions options) : ISchedule
{
    public double Multiplier(in ScheduleContext c) =>
        Warmup.Apply(options.WarmupFor(c), c.Step, Math.Pow(options.Gamma, Decays(c.Step, options.WarmupFor(c))));

    private long Decays(long step, long warmup)
    {
        if (options.Milestones.Length > 0) return options.Milestones.Count(m => m <= step);
        return Math.Max(0, step - warmup) / options.StepSize;
    }
}
