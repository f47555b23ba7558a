using Research.Abstractions;

namespace Research.Plugins.Schedules;

/// <summary>The curve of the decay phase of <see cref="WarmupStableDecay"/>.</summary>
public enum DecayShape
{
    /// <summary>1 → m linearly.</summary>
    Linear,

    /// <summary>1 → m along a half cosine.</summary>
    Cosine,

    /// <summary>m + (1 − m)(1 − √p): falls fastest at its start (Hägele et al. 2024).</summary>
    Sqrt,
}

/// <summary>Options of <see cref="WarmupStableDecay"/>.</summary>
[KeyAdvice("decay_type", "is decay_shape here: \"linear\", \"cosine\", or \"sqrt\" for Hugging Face's \"1-sqrt\" (their default is cosine, ours linear)")]
[KeyAdvice("warmup_type", "is always linear here, from 0 (Hugging Face's WSD warmup rises from min_lr_ratio)")]
[KeyAdvice("num_stable_steps", "is not an option here: the stable phase is what warmup and decay leave of the run's T")]
[KeyAdvice("num_cycles", "is not an option here: the cosine decay is a half cosine (Hugging Face's num_cycles = 0.5)")]
public sealed record WarmupStableDecayOptions : WarmupOptions
{
    /// <summary>The share of the run, D = round(decay_fraction · T) updates ending at T, spent decaying; used when
    /// decay_steps is 0.</summary>
    [Option(Min = 0, Max = 1)]
    public double DecayFraction { get; init; } = 0.1;

    /// <summary>D: updates of decay ending at T (Hugging Face's <c>num_decay_steps</c>); 0 means
    /// round(decay_fraction · T).</summary>
    [Option(Min = 0, Aliases = ["num_decay_steps"], AddedIn = "2.2")]
    public long DecaySteps { get; init; }

    /// <summary>m: the multiplier reached at the last step T (η_min / η_max).</summary>
    [Option(Min = 0, Max = 1)]
    public double MinLrRatio { get; init; }

    /// <summary>The decay curve: "linear", "cosine" or "sqrt".</summary>
    public DecayShape DecayShape { get; init; } = DecayShape.Linear;
}

/// <summary>
/// Warmup–stable–decay (WSD; Hu et al. 2024, MiniCPM; Hägele et al. 2024): warmup, f = 1 through the stable
/// phase, then a decay to m over the last D = round(decay_fraction · T) updates. The decay starts at
/// S = max(W, T − D): f(t) = curve(1, m, p), p = (t − S) / (T − S) clamped to [0, 1], so f(t) = m for t ≥ T.
/// The stable phase does not depend on T, which is why a run can be branched into decays of several lengths.
/// </summary>
[Plugin("warmup-stable-decay", Summary = "WSD: warmup, constant peak, then a short decay at the end of the run", Aliases = ["warmup_stable_decay"])]
public sealed class WarmupStableDecay(WarmupStableDecayOptions options) : ISchedule
{
    private readonly Curve decay = options.DecayShape switch
    {
        DecayShape.Linear => Annealing.Linear,
        DecayShape.Cosine => Annealing.Cosine,
        DecayShape.Sqrt => Annealing.OneMinusSqrt,
        var other => throw new ArgumentOutOfRangeException(nameof(options), other, "decay_shape"),
    };

    public double Multiplier(in ScheduleContext c)
    {
        var decaySteps = options.DecaySteps > 0 ? options.DecaySteps
            : (long)Math.Round(options.DecayFraction * c.TotalSteps, MidpointRounding.AwayFromZero);
        var decayStart = Math.Max(options.WarmupFor(c), c.TotalSteps - decaySteps);
        var afterWarmup = c.Step < decayStart ? 1.0 : decay(1.0, options.MinLrRatio, Warmup.Progress(decayStart, c));
        return Warmup.Apply(options.WarmupFor(c), c.Step, afterWarmup);
    }
}
