using TorchSharp;
using static TorchSharp.torch;

namespace Research.Abstractions;

// A continual-learning or fine-tuning method is a plugin class that implements one or more of the roles below; the host
// finds every role a class implements and calls each at its point of the step or of the run. EWC is a penalty with a
// task-end hook; SI a penalty, a step observer and task hooks; LwF a loss term with a task-end hook; A-GEM a gradient
// hook over a memory; experience replay a data role; a callback (ICallback, Callbacks.cs) the run's hook points. A config
// chooses methods with [[methods]] tables (read from [[regularizers]] too; [[callbacks]] tables add to them); a method's
// options are its table.
//
// Ownership, one rule for every role:
//  1. What the core hands in belongs to the core: contexts, batches, logits, gradients, parameters are valid during the
//     call only. To keep one, copy it (clone()).
//  2. What a plugin returns belongs to the core (a penalty, a loss term, a sampled batch).
//  3. What a plugin keeps across calls is what its IStateful.StateDict returns. The host runs each call in a dispose
//     scope of its own; when the call returns, the tensors of StateDict() outlive the scope and become the plugin's,
//     tensors it kept before and no longer returns are freed, and every other tensor the call made is freed with the
//     scope. A plugin keeps tensors in plain fields and never calls a dispose-scope method. The same rule keeps
//     checkpoints complete: state outside StateDict would not survive a resume either.
//  4. LoadStateDict receives tensors that become the plugin's (no copy needed).
//  5. A constructor runs outside any dispose scope: tensors it makes live, but like all state they must be in StateDict
//     to be checkpointed. Creating state lazily, inside the first call that needs it, is the simpler habit.

/// <summary>A trainable parameter with its stable name, as in the model's state dictionary (<c>layers.0.weight</c>).
/// Method state is keyed by these names.</summary>
public sealed record NamedParameter(string Name, Tensor Value);

/// <summary>State a method keeps across steps, tasks and resumes (see the ownership rule above).</summary>
public interface IStateful
{
    /// <summary>The tensors held (not new ones), by stable names: what is checkpointed and what outlives each call.</summary>
    IReadOnlyDictionary<string, Tensor> StateDict();

    /// <summary>Restores what <see cref="StateDict"/> returned; the tensors become the plugin's.</summary>
    void LoadStateDict(IReadOnlyDictionary<string, Tensor> state);
}

/// <summary>What <see cref="IPenalty.Penalty"/> sees.</summary>
/// <param name="Step">Optimizer updates the run has taken so far, counted across a study's tasks.</param>
/// <param name="TaskIndex">Index of the task being trained, 0 for a single run.</param>
/// <param name="Parameters">The fp32 master parameters, with <c>requires_grad</c>: a penalty built from them receives
/// gradients.</param>
public sealed record PenaltyContext(long Step, int TaskIndex, IReadOnlyList<NamedParameter> Parameters)
{
    /// <summary>The plugin's own log sink (<see cref="IRunLog"/>); discards outside a run.</summary>
    public IRunLog Log { get; init; } = IRunLog.None;
    /// <summary>The plugin's own requests to the run (<see cref="RunControl"/>); discards outside a run.</summary>
    public RunControl Control { get; init; } = RunControl.None;
}

/// <summary>
/// A per-window penalty R(θ) (EWC, SI, MAS, L2-SP): added once per optimizer step (once per accumulation window, not per
/// micro-batch) in fp32 and not divided by the number of items: L̃(θ) = Σᵢℓᵢ/N + R(θ).
/// </summary>
public interface IPenalty
{
    /// <summary>R(θ) as a scalar fp32 tensor built from <see cref="PenaltyContext.Parameters"/>, or <c>null</c> when it is
    /// zero (EWC before its first task has ended).</summary>
    Tensor? Penalty(PenaltyContext context);
}

/// <summary>What <see cref="ILossTerm.Loss"/> sees for one micro-batch.</summary>
/// <param name="Step">As in <see cref="PenaltyContext.Step"/>.</param>
/// <param name="TaskIndex">Index of the task being trained.</param>
/// <param name="Batch">The micro-batch (memory items mixed in included).</param>
/// <param name="Logits">The model's fp32 logits on the batch, in the autograd graph (before any task head masks them).</param>
/// <param name="LogitsWith">Logits of the same model with other weights (a teacher kept in the plugin's state, by parameter
/// name; names not given keep the current values), in eval mode (a frozen teacher: with dropout it differs from the
/// training-mode <see cref="Logits"/> even at equal weights), without autograd. Owned by the caller's scope.</param>
public sealed record LossTermContext(long Step, int TaskIndex, Batch Batch, Tensor Logits,
    Func<IReadOnlyDictionary<string, Tensor>, Batch, Tensor> LogitsWith)
{
    /// <summary>The plugin's own log sink (<see cref="IRunLog"/>); discards outside a run.</summary>
    public IRunLog Log { get; init; } = IRunLog.None;
    /// <summary>The plugin's own requests to the run (<see cref="RunControl"/>); discards outside a run.</summary>
    public RunControl Control { get; init; } = RunControl.None;
}

/// <summary>
/// A per-item loss term (LwF's distillation): called for every micro-batch. Returns the SUM over the micro-batch's items of
/// the term — the items are the rows whose target counts (≠ <see cref="Batch.IgnoreIndex"/>, <see cref="Batch.ItemMask"/>)
/// — and the core divides it by N, the items of the whole accumulation window, exactly as the task loss, so a window of k
/// micro-batches equals one batch of the same items.
/// </summary>
public interface ILossTerm
{
    /// <summary>Σ over the batch's items of the term (a scalar in the graph of <see cref="LossTermContext.Logits"/>), or
    /// <c>null</c> when it is zero (before the first task has ended).</summary>
    Tensor? Loss(LossTermContext context);
}

/// <summary>What <see cref="IStepObserver.AfterStep"/> sees about the update just taken.</summary>
/// <param name="Step">The run's updates before this one.</param>
/// <param name="TaskIndex">Index of the task being trained.</param>
/// <param name="Parameters">The parameters after the update, θ_{t+1}.</param>
/// <param name="TaskGradient">∇ of the task loss Σᵢℓᵢ/N alone, unscaled, before clipping and before any gradient hook
/// changed it: neither the loss terms' nor the penalties' gradients are in it (SI's g).</param>
/// <param name="TotalGradient">The gradient the update used: after gradient hooks, with loss terms and penalties, clipped.</param>
/// <param name="Deltas">Δθ_t = θ_{t+1} − θ_t, the change the update made.</param>
/// <param name="LearningRate">The multiplier-applied base learning rate of the update.</param>
/// <param name="Loss">The loss of the step, loss terms and penalties included.</param>
public sealed record StepContext(
    long Step,
    int TaskIndex,
    IReadOnlyList<NamedParameter> Parameters,
    IReadOnlyList<Tensor> TaskGradient,
    IReadOnlyList<Tensor> TotalGradient,
    IReadOnlyList<Tensor> Deltas,
    double LearningRate,
    double Loss)
{
    /// <summary>The plugin's own log sink (<see cref="IRunLog"/>); discards outside a run.</summary>
    public IRunLog Log { get; init; } = IRunLog.None;
    /// <summary>The plugin's own requests to the run (<see cref="RunControl"/>); discards outside a run.</summary>
    public RunControl Control { get; init; } = RunControl.None;
}

/// <summary>Called after every applied update, outside autograd (SI's path integral ωᵢ += −gᵢΔθᵢ). Lists are in
/// <see cref="StepContext.Parameters"/>' order.</summary>
public interface IStepObserver
{
    void AfterStep(StepContext context);
}

/// <summary>What <see cref="IGradientHook.BeforeUpdate"/> sees.</summary>
/// <param name="Step">As in <see cref="PenaltyContext.Step"/>.</param>
/// <param name="TaskIndex">Index of the task being trained.</param>
/// <param name="Parameters">The parameters before the update.</param>
/// <param name="TaskGradient">∇ of the task loss Σᵢℓᵢ/N, unscaled, before clipping; the hook may change it in place.</param>
/// <param name="PenaltyGradient">∇ of the loss terms and penalties (read only). The update uses TaskGradient + PenaltyGradient.</param>
/// <param name="GradientOf">The task-loss gradient (Σᵢℓᵢ/N over all the items given) of other batches, memory items say,
/// as new fp32 tensors in <see cref="Parameters"/>' order; it does not touch the step's gradients or the optimizer.</param>
/// <param name="Memory">The memory of the run's mixing data role (experience replay's), when one is configured: A-GEM's
/// reference samples then come from the same memory.</param>
/// <param name="Random">A generator derived from the run's seed and this step (the same after a resume).</param>
public sealed record GradientContext(
    long Step,
    int TaskIndex,
    IReadOnlyList<NamedParameter> Parameters,
    IReadOnlyList<Tensor> TaskGradient,
    IReadOnlyList<Tensor> PenaltyGradient,
    Func<IEnumerable<Batch>, IReadOnlyList<Tensor>> GradientOf,
    IMemory? Memory,
    Generator Random)
{
    /// <summary>The plugin's own log sink (<see cref="IRunLog"/>); discards outside a run.</summary>
    public IRunLog Log { get; init; } = IRunLog.None;
    /// <summary>The plugin's own requests to the run (<see cref="RunControl"/>); discards outside a run.</summary>
    public RunControl Control { get; init; } = RunControl.None;
}

/// <summary>Before the update, after unscaling, before clipping (A-GEM's projection): may change
/// <see cref="GradientContext.TaskGradient"/> in place.</summary>
public interface IGradientHook
{
    void BeforeUpdate(GradientContext context);
}

/// <summary>What <see cref="ITaskHooks.TaskStart"/> sees.</summary>
/// <param name="TaskIndex">Index of the task about to be trained.</param>
/// <param name="TaskName">Its name.</param>
/// <param name="Parameters">θ at the start of the task (fp32 master weights), valid during the call.</param>
public sealed record TaskStartContext(int TaskIndex, string TaskName, IReadOnlyList<NamedParameter> Parameters)
{
    /// <summary>The plugin's own log sink (<see cref="IRunLog"/>); discards outside a run.</summary>
    public IRunLog Log { get; init; } = IRunLog.None;
    /// <summary>The plugin's own requests to the run (<see cref="RunControl"/>); discards outside a run.</summary>
    public RunControl Control { get; init; } = RunControl.None;
}

/// <summary>What <see cref="ITaskHooks.TaskEnd"/> sees when a task's training has ended.</summary>
/// <param name="TaskIndex">Index of the task that ended, 0 for the first.</param>
/// <param name="TaskName">Its name, as in the evaluation record.</param>
/// <param name="IsLastTask">Nothing trains after this task: a consolidation (a Fisher, say) would be computed for nothing.</param>
/// <param name="Parameters">θ*: the trained fp32 weights of record (under mixed precision the master copy, not the 16-bit
/// model), as views valid during the call — clone what you keep.</param>
/// <param name="Logits">The trained model's fp32 logits on a batch, in eval mode, without autograd.</param>
/// <param name="GradientOf">∇θ of a scalar function of the trained model's logits on a batch, as new fp32 tensors in
/// <see cref="Parameters"/>' order (MAS's ∂‖f(x)‖²/∂θ).</param>
/// <param name="Data">Mini-batches of the task's training data, in order (a fresh pass on each enumeration).</param>
/// <param name="PerItemLoss">ℓ(logits, batch) → the task's loss per item, shaped like the batch's targets (0 where an item
/// does not count), with the task's head applied.</param>
/// <param name="Fisher">The diagonal Fisher of the trained model on the task's training data by parameter name, computed by
/// the core over the task's output axis in the variant asked for (<see cref="FisherKind"/>); the tensors are the caller's.</param>
/// <param name="AddProbe">Adds row <see cref="TaskIndex"/> of a probe matrix to the study's record (metrics read it).</param>
/// <param name="Random">A generator derived from the run's seed and this task's end.</param>
public sealed record TaskEndContext(
    int TaskIndex,
    string TaskName,
    bool IsLastTask,
    IReadOnlyList<NamedParameter> Parameters,
    Func<Batch, Tensor> Logits,
    Func<Batch, Func<Tensor, Tensor>, IReadOnlyList<Tensor>> GradientOf,
    IEnumerable<Batch> Data,
    Func<Tensor, Batch, Tensor> PerItemLoss,
    Func<FisherKind, IReadOnlyDictionary<string, Tensor>> Fisher,
    Action<string, double[]> AddProbe,
    Generator Random)
{
    /// <summary>The plugin's own log sink (<see cref="IRunLog"/>); discards outside a run.</summary>
    public IRunLog Log { get; init; } = IRunLog.None;
    /// <summary>The plugin's own requests to the run (<see cref="RunControl"/>); discards outside a run.</summary>
    public RunControl Control { get; init; } = RunControl.None;
}

/// <summary>Phase hooks: a task starts (once; not again when a run resumes inside it), a task ends (every task, the last
/// one with <see cref="TaskEndContext.IsLastTask"/>: skip consolidating, but probes may still add their row).</summary>
public interface ITaskHooks
{
    void TaskStart(TaskStartContext context) { }
    void TaskEnd(TaskEndContext context) { }
}

/// <summary>A memory of items the core (and A-GEM) can draw from.</summary>
public interface IMemory
{
    /// <summary>Items that <see cref="Sample"/> may return now.</summary>
    long Count { get; }

    /// <summary>
    /// <paramref name="items"/> memory items (fewer when <see cref="Count"/> is smaller) as a batch of the same tensors as
    /// the task's batches (names, dtypes and device), drawn with <paramref name="random"/>. The batch belongs to the caller.
    /// </summary>
    Batch Sample(int items, Generator random);
}

/// <summary>
/// The data role (experience replay): keeps a memory of past tasks under a budget of items and mixes it into the batches
/// of later tasks. Each training micro-batch of B current-task items gets round(r·B) memory items appended (so an epoch
/// stays one pass over the current task, and the loss is normalised over current and memory items together). Every data
/// role observes the training batches; at most one per run mixes (r &gt; 0), and gradient hooks see that one as
/// <see cref="GradientContext.Memory"/> (A-GEM keeps a memory of its own with r = 0 when no other role mixes).
/// </summary>
public interface IDataRole : IMemory
{
    /// <summary>r ≥ 0: memory items per current-task item in each micro-batch (0: the memory is only read by hooks).</summary>
    double MixRatio { get; }

    /// <summary>Every training micro-batch of the current task, before mixing (reservoir sampling); <paramref name="random"/>
    /// is derived from the run's seed, the step, the data role and the micro-batch (the same after a resume).</summary>
    void Observe(Batch batch, int taskIndex, Generator random) { }
}
