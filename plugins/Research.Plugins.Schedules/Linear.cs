using Research.Abstractions;

namespace Research.Plugins.Schedules;

/// <summary>Options of <see cref="Linear"/>.</summary>
public sealed record LinearOptions : WarmupOptions
{
    /// <summary>e: the multiplier reached at the last step T, as a fraction of the peak.</summary>
    [Option(Min = 0, Max = 1)]
    public double EndRatio { get; init; }
}

/// <summary>
/// Linear decay after warmup: f(t) = e + (1 − e)(1 − p), p = (t − W) / (T − W) clamped to [0, 1], so f(W) = 1
/// and f(t) = e for t ≥ T. Hugging Face <c>get_linear_schedule_with_warmup</c> (e = 0); optax
/// <c>linear_schedule</c>.
/// </summary>
[Plugin("linear", Summary = "linear decay from the peak to end_ratio at the last step")]
public sealed class Linear(LinearOptions options) : ISchedule
{
    public double Multiplier(in ScheduleContext c) =>
        Warmup.Apply(options.WarmupFor(c), c.Step,
            Annealing.Linear(1.0, options.EndRatio, Warmup.Progress(options.WarmupFor(c), c)));
}
