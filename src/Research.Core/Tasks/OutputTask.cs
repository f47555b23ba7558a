using Research.Abstractions;
using Research.Core.Studies;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Tasks;

/// <summary>
/// What a model's outputs are trained to predict, and so how the loss, the evaluation and the Fisher read them. A task
/// aligns a batch's logits with its targets as rows — logits [n, C] over the LAST axis, targets [n] — and everything else
/// follows from the rows: the loss Σᵢℓᵢ (items with target −100 excluded), the item count N a window is normalised by,
/// accuracy (arg-max over the last axis) and the log-likelihood log p_θ(y|x) the Fisher differentiates. Plugins see a
/// task only through delegates (<see cref="TaskEndContext.PerItemLoss"/>), so a new kind needs no contract change.
/// </summary>
public abstract class OutputTask
{
    /// <summary>Logits [n, C] and targets [n] of a batch, in the same order (views where possible), sample-major: each
    /// sample's rows are contiguous and in batch order, which is how the Fisher groups a sequence's positions.</summary>
    public abstract (Tensor Logits, Tensor Targets) Rows(Tensor logits, Batch batch);

    /// <summary>The logits a task may use before its rows are taken (task-incremental heads mask the other classes).</summary>
    public virtual Tensor Restrict(Tensor logits, Batch batch) => logits;

    /// <summary>N: the targets that count.</summary>
    public virtual long Items(Batch batch) => batch.Items;

    /// <summary>Σᵢ ℓᵢ over the items that count, in fp32 (the caller normalises by the window's N).</summary>
    public Tensor LossSum(Tensor logits, Batch batch)
    {
        var (rows, targets) = Rows(Restrict(logits, batch), batch);
        return nn.functional.cross_entropy(rows.to(ScalarType.Float32), targets, ignore_index: Batch.IgnoreIndex, reduction: nn.Reduction.Sum);
    }

    /// <summary>ℓᵢ per row (0 where the target does not count).</summary>
    public Tensor PerItemLoss(Tensor logits, Batch batch)
    {
        var (rows, targets) = Rows(Restrict(logits, batch), batch);
        return nn.functional.cross_entropy(rows.to(ScalarType.Float32), targets, ignore_index: Batch.IgnoreIndex, reduction: nn.Reduction.None);
    }

    /// <summary>(Σℓ, correct, N) of a batch without gradients, for evaluation. A row's prediction is the arg-max of its
    /// logits, or what <paramref name="predict"/> (rows, targets) → classes [n] says (a method's <see cref="IPredictor"/>);
    /// the loss is the model's either way.</summary>
    public (double LossSum, long Correct, long Items) Score(Tensor logits, Batch batch, Func<Tensor, Tensor, Tensor>? predict = null)
    {
        using var scope = NewDisposeScope();
        var (rows, targets) = Rows(Restrict(logits, batch), batch);
        var counted = targets.ne(Batch.IgnoreIndex);
        var loss = nn.functional.cross_entropy(rows.to(ScalarType.Float32), targets, ignore_index: Batch.IgnoreIndex, reduction: nn.Reduction.Sum);
        return (loss.to_type(ScalarType.Float64).item<double>(), (predict is null ? rows.argmax(-1) : predict(rows, targets)).eq(targets).logical_and(counted).sum().item<long>(),
            counted.sum().item<long>());
    }
}

/// <summary>
/// Classification: one class per item (targets [B]) or per position (targets [B, T] with logits [B, T, C], token
/// tagging); the class axis is the last. With task-incremental heads, an item only uses its task's classes.
/// </summary>
public sealed class ClassificationTask(TaskHeads? heads = null) : OutputTask
{
    public TaskHeads? Heads => heads;

    public override Tensor Restrict(Tensor logits, Batch batch) => heads is null ? logits : heads.Apply(logits, batch.TargetsTensor);

    public override (Tensor Logits, Tensor Targets) Rows(Tensor logits, Batch batch)
    {
        var targets = batch.TargetsTensor;
        if (logits.dim() != targets.dim() + 1 || !logits.shape.Take((int)targets.dim()).SequenceEqual(targets.shape))
            throw new ArgumentException($"classification logits [{string.Join(", ", logits.shape)}] do not match targets [{string.Join(", ", targets.shape)}] (logits are the targets' shape plus a class axis)");
        return (logits.reshape(-1, logits.shape[^1]), targets.reshape(-1));
    }
}

/// <summary>
/// Causal language modelling: targets [B, T] are the sequence's token ids (−100 at padding), logits [B, T, V]; position t
/// predicts token t + 1, so the task shifts inside (the data does not): rows are logits[:, :−1] against targets[:, 1:].
/// N counts the predicted tokens, so windows of micro-batches of unequal lengths stay exact.
/// </summary>
public sealed class CausalLmTask : OutputTask
{
    public override (Tensor Logits, Tensor Targets) Rows(Tensor logits, Batch batch)
    {
        var targets = batch.TargetsTensor;
        if (logits.dim() != 3 || targets.dim() != 2 || logits.shape[0] != targets.shape[0] || logits.shape[1] != targets.shape[1])
            throw new ArgumentException($"causal-LM logits [{string.Join(", ", logits.shape)}] do not match targets [{string.Join(", ", targets.shape)}] (expected [B, T, V] and [B, T])");
        var t = logits.shape[1];
        return (logits.narrow(1, 0, t - 1).reshape(-1, logits.shape[2]), targets.narrow(1, 1, t - 1).reshape(-1));
    }

    public override long Items(Batch batch)
    {
        using var shifted = batch.TargetsTensor.narrow(1, 1, batch.TargetsTensor.shape[1] - 1);
        using var mask = shifted.ne(Batch.IgnoreIndex);
        using var sum = mask.sum();
        return sum.item<long>();
    }
}
