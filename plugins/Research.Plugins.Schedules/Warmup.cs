using Research.Abstractions;

namespace Research.Plugins.Schedules;

/// <summary>Options shared by every schedule with a linear warmup.</summary>
/// <remarks>Hugging Face's <c>get_scheduler(name, optimizer, num_warmup_steps, num_training_steps)</c>: its warmup is
/// ours (<c>num_warmup_steps</c> is accepted for <c>warmup_steps</c>), and its T is the run's own number of updates.</remarks>
[KeyAdvice("num_training_steps", "is not an option here: T is the run's own number of updates (train.epochs × the updates of an epoch), which every schedule reads from the run")]
[KeyAdvice("last_epoch", "is not an option here: a resumed run restores its step from the checkpoint")]
public record WarmupOptions : IValidatable
{
    /// <summary>W: updates of linear warmup from 0 to the peak; 0 disables warmup.</summary>
    [Option(Min = 0, Aliases = ["num_warmup_steps"])]
    public long WarmupSteps { get; init; }

    /// <summary>Warmup as a share of the schedule's T, W = round(warmup_ratio · T) (Hugging Face's <c>warmup_ratio</c>; the
    /// usual advice for full fine-tuning is 0.05–0.1); used when warmup_steps is 0.</summary>
    [Option(Min = 0, Max = 1)]
    public double WarmupRatio { get; init; }

    /// <summary>W for a schedule of T = <see cref="ScheduleContext.TotalSteps"/> updates.</summary>
    public long WarmupFor(in ScheduleContext c) =>
        WarmupSteps > 0 ? WarmupSteps : (long)Math.Round(WarmupRatio * c.TotalSteps, MidpointRounding.AwayFromZero);

    /// <summary>Rules between options; each option's own range is declared on it.</summary>
    public virtual IEnumerable<OptionError> Validate()
    {
        if (WarmupSteps > 0 && WarmupRatio > 0) yield return new("warmup_ratio", "and warmup_steps are both set: give one of them");
    }
}

/// <summary>
/// Linear warmup: f(t) = t / W for t &lt; W, then the schedule's own g(t) for t ≥ W.
/// Every schedule here has it except one-cycle, whose rising phase is its warmup.
/// </summary>
/// <remarks>
/// Step-0 convention: t counts the updates already taken, so the first update uses f(0) = 0. It moves no
/// weight, but the optimizer's moments already see its gradient. The update at t = W is the first at the
/// peak: f(W) = g(W), which is 1 for every decay that starts at the end of warmup. This is Hugging Face's
/// <c>get_linear_schedule_with_warmup</c> and optax's <c>linear_schedule(0, 1, W)</c> joined with the decay
/// at W (<c>join_schedules</c>). Decays measure their progress from the end of warmup, so a decay that
/// reaches its end value "at T" does so at t = T and stays there.
/// </remarks>
public static class Warmup
{
    public static double Apply(long warmupSteps, long step, double afterWarmup) =>
        step < warmupSteps ? (double)step / warmupSteps : afterWarmup;

    /// <summary>Progress of a phase that starts at update <paramref name="start"/> and ends at T:
    /// p = (t − start) / (T − start) clamped to [0, 1]; p = 1 when the phase is empty.</summary>
    public static double Progress(long start, in ScheduleContext c)
    {
        var span = c.TotalSteps - start;
        return span <= 0 ? 1.0 : Math.Clamp((double)(c.Step - start) / span, 0.0, 1.0);
    }
}
