namespace Research.Abstractions;

/// <summary>
/// One evaluation of the model during training, as the trainer recorded it: the step at which it was
/// taken and its metrics by name (<c>val_loss</c>, <c>val_accuracy</c>, <c>test_accuracy</c>, ...).
/// </summary>
public sealed record EvaluationPoint(long Step, int Epoch, IReadOnlyDictionary<string, double> Metrics);

/// <summary>
/// Everything a schedule may read. It is a value: a schedule is a pure function of it.
/// </summary>
/// <param name="Step">
/// The number of optimizer updates already taken, t = 0, 1, 2, ... The update that is about to happen
/// uses the learning rate η·f(t). With warmup W &gt; 0, f(0) = 0 (the first update does nothing, the
/// convention of Hugging Face's <c>get_linear_schedule_with_warmup</c> and optax's
/// <c>linear_schedule(0, peak, W)</c>) and f(W) = 1: the peak is reached at the end of warmup.
/// Steps the loss scaler skipped do not count.
/// </param>
/// <param name="TotalSteps">T, the number of optimizer updates the run will take.</param>
/// <param name="StepsPerEpoch">Optimizer updates per epoch, for schedules stated in epochs.</param>
/// <param name="Evaluations">
/// The evaluations taken before this step, oldest first. Reduce-on-plateau reads its decisions from here
/// instead of keeping state, so resuming a run is recomputing the function.
/// </param>
public readonly record struct ScheduleContext(
    long Step,
    long TotalSteps,
    long StepsPerEpoch,
    IReadOnlyList<EvaluationPoint> Evaluations);

/// <summary>
/// A learning-rate schedule: f : context → multiplier of each parameter group's peak learning rate.
/// </summary>
/// <remarks>
/// It must be pure: the same context gives the same value, however often and in whatever order it is
/// called (unlike stateful PyTorch schedulers, where calling <c>get_lr()</c> twice changes the state).
/// Plotting a schedule is calling it for every step; resuming a run is calling it at the resumed step.
/// Warmup belongs to the schedule. Reference: optax <c>schedules</c>; Loshchilov &amp; Hutter 2017 (SGDR).
/// </remarks>
public interface ISchedule
{
    /// <summary>f(t) ≥ 0: the learning rate of a group is η_group · f(t).</summary>
    double Multiplier(in ScheduleContext context);
}
