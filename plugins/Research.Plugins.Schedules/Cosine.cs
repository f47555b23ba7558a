using Research.Abstractions;

namespace Research.Plugins.Schedules;

/// <summary>Options of <see cref="Cosine"/>.</summary>
[KeyAdvice("min_lr", "is an absolute learning rate in Hugging Face; here the floor is a ratio of the peak: min_lr_ratio = min_lr / lr")]
[KeyAdvice("num_cycles", "is not an option of this half-cosine, which is Hugging Face's num_cycles = 0.5; for cosine cycles that restart at the peak use the schedule \"cosine-restarts\" with cycles = n")]
public sealed record CosineOptions : WarmupOptions
{
    /// <summary>m: the multiplier reached at the last step T (η_min / η_max; Hugging Face's <c>min_lr_rate</c>).</summary>
    [Option(Min = 0, Max = 1, Aliases = ["min_lr_rate"])]
    public double MinLrRatio { get; init; }
}

/// <summary>
/// Half-cosine decay after warmup: f(t) = m + (1 − m)·½(1 + cos πp), p = (t − W) / (T − W) clamped to [0, 1].
/// Not periodic: f(t) = m for t ≥ T. Loshchilov &amp; Hutter 2017 (SGDR) without restarts; optax
/// <c>warmup_cosine_decay_schedule</c>; nanoGPT <c>get_lr</c>. Hugging Face's <c>cosine</c> (num_cycles = 0.5) and
/// <c>cosine_with_min_lr</c> for t ≤ T; after T theirs follows the cosine back up, ours stays at m.
/// </summary>
[Plugin("cosine", Summary = "half-cosine decay from the peak to min_lr_ratio at the last step", Aliases = ["cosine_with_min_lr"])]
public sealed class Cosine(CosineOptions options) : ISchedule
{
    public double Multiplier(in ScheduleContext c) =>
        Warmup.Apply(options.WarmupFor(c), c.Step,
            Annealing.Cosine(1.0, options.MinLrRatio, Warmup.Progress(options.WarmupFor(c), c)));
}
