using Research.Abstractions;

namespace Research.Plugins.Schedules;

/// <summary>Options of <see cref="Cosine"/>.</summary>
public sealed record CosineOptions : WarmupOptions
{
    /// <summary>m: the multiplier reached at the last step T (η_min / η_max).</summary>
    [Option(Min = 0, Max = 1)]
    public double MinLrRatio { get; init; }
}

/// <summary>
/// Half-cosine decay after warmup: f(t) = m + (1 − m)·½(1 + cos πp), p = (t − W) / (T − W) clamped to [0, 1].
/// Not periodic: f(t) = m for t ≥ T. Loshchilov &amp; Hutter 2017 (SGDR) without restarts; optax
/// <c>warmup_cosine_decay_schedule</c>; nanoGPT <c>get_lr</c>.
/// </summary>
[Plugin("cosine", Summary = "half-cosine decay from the peak to min_lr_ratio at the last step")]
public sealed class Cosine(CosineOptions options) : ISchedule
{
    public double Multiplier(in ScheduleContext c) =>
        Warmup.Apply(options.WarmupFor(c), c.Step,
            Annealing.Cosine(1.0, options.MinLrRatio, Warmup.Progress(options.WarmupFor(c), c)));
}
