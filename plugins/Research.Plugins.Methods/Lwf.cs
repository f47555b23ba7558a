using Research.Abstractions;
using static TorchSharp.torch;

namespace Research.Plugins.Methods;

public sealed record LwfOptions
{
    /// <summary>α in αT² KL(p_T ‖ p_θ) per item: Li &amp; Hoiem's λ_o = αT², Avalanche's <c>alpha</c> = αT².</summary>
    [Option(Min = 0)]
    public double Alpha { get; init; } = 1;
    /// <summary>T, the softmax temperature of teacher and student (T &gt; 1 softens both; Li &amp; Hoiem use 2).</summary>
    [Option(Min = 0, MinExclusive = true)]
    public double Temperature { get; init; } = 2;
}

/// <summary>
/// Learning without Forgetting (Li &amp; Hoiem 2017, "Learning without forgetting"): at the end of a task the weights
/// become the teacher θ_T, and while later tasks train, each item's logits are distilled toward the teacher's on the
/// same input: with p_T = softmax(z_T/T) and p_θ = softmax(z_θ/T) over the last axis,
/// ℓ_LwF = α T² KL(p_T ‖ p_θ) = α T² Σ_c p_T,c (log p_T,c − log p_θ,c), summed over the batch's rows (every leading
/// axis is a row: tokens of a sequence are items). The T² keeps the gradient's scale independent of T (Hinton et al.
/// 2015). Li &amp; Hoiem write the cross-entropy −Σ_c p_T,c log p_θ,c; the KL differs from it by the teacher's entropy, a
/// constant in θ, so the gradient is the same, and the KL is 0 when the student equals the teacher. The core divides the
/// sum by the window's N items, as the task loss. Strength convention: the T² is ours, not the paper's: Li &amp; Hoiem's
/// λ_o = αT² (their λ_o = 1 at T = 2 is α = 0.25). Avalanche's LwFPlugin adds alpha·(mean over the batch of the KL), no
/// T², over the output units of classes seen before: alpha = αT² when every unit's class was seen.
/// </summary>
/// <remarks>Rows whose target does not count (<see cref="Batch.IgnoreIndex"/>: padding) are left out, so the sum is over
/// the items the core divides by, and a window of micro-batches equals one batch of the same items.</remarks>
[Plugin("lwf", Summary = "learning without forgetting: α T² KL(softmax(z_teacher/T) ‖ softmax(z/T)) per item")]
public sealed class Lwf(LwfOptions options) : ILossTerm, ITaskHooks, IStateful
{
    /// <summary>θ_T, the weights at the end of the latest finished task, by parameter name.</summary>
    Dictionary<string, Tensor>? _teacher;

    public Tensor? Loss(LossTermContext context)
    {
        if (_teacher is null || options.Alpha == 0) return null;
        var student = context.Logits;
        var teacher = context.LogitsWith(_teacher, context.Batch);
        var classes = student.shape[^1];
        var t = options.Temperature;
        var logTeacher = (teacher.reshape(-1, classes) / t).log_softmax(-1);
        var logStudent = (student.reshape(-1, classes) / t).log_softmax(-1);
        var perRow = (logTeacher.exp() * (logTeacher - logStudent)).sum(-1);   // KL(p_T ‖ p_θ) per row
        if (context.Batch.ContainsKey(Batch.Targets))
        {
            var targets = context.Batch.TargetsTensor;
            if (!targets.shape.SequenceEqual(student.shape[..^1]))
                throw new InvalidOperationException(
                    $"lwf: targets of shape [{string.Join(", ", targets.shape)}] do not match the logits' rows [{string.Join(", ", student.shape[..^1])}]");
            perRow = perRow * context.Batch.ItemMask().reshape(-1);
        }
        return perRow.sum().mul(options.Alpha * t * t);
    }

    public void TaskEnd(TaskEndContext context)
    {
        if (context.IsLastTask) return;
        _teacher = SquaredDistance.Snapshot(context.Parameters);
    }

    public IReadOnlyDictionary<string, Tensor> StateDict() => StateEntries.Of(StateEntries.Prefixed("teacher", _teacher));

    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state) => _teacher = StateEntries.Part(state, "teacher");
}
