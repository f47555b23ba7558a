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

    /// <summary>
    /// The values held beside the tensors, by stable names: scalars, strings, booleans and small records (a counter, the
    /// best loss so far, the task a phase belongs to), written as JSON into the checkpoint's state, so a counter need not
    /// be a [1] int64 tensor. Each value must be what JSON holds exactly: finite numbers (JSON has no NaN or ∞; keep a
    /// flag or a null instead), strings, booleans, null, and arrays and records of them, at most 1 MiB of JSON per
    /// plugin (larger state belongs in <see cref="StateDict"/>'s tensors). A double is written in its shortest
    /// round-trip form, so a resume reads back the same bits. Called when a checkpoint is written. (Contract 3.0.)
    /// </summary>
    IReadOnlyDictionary<string, object?> StateValues() => EmptyValues;

    /// <summary>Restores what <see cref="StateValues"/> returned, as JSON (read a counter with <c>GetInt64()</c>, a
    /// record with <c>Deserialize&lt;T&gt;()</c>); called on resume after <see cref="LoadStateDict"/>, with an empty
    /// dictionary for a checkpoint written before the plugin had values. (Contract 3.0.)</summary>
    void LoadStateValues(IReadOnlyDictionary<string, System.Text.Json.JsonElement> values) { }

    /// <summary>No values: what <see cref="StateValues"/> returns unless a plugin keeps some.</summary>
    static readonly IReadOnlyDictionary<string, object?> EmptyValues = new Dictionary<string, object?>();
}

/// <summary>What <see cref="IPenalty.Penalty"/> sees.</summary>
/// <param name="Step">Optimizer updates the run has taken so far, counted across a study's tasks.</param>
/// <param name="TaskIndex">Index of the task being trained, 0 for a single run.</param>
/// <param name="Parameters">The fp32 master parameters, with <c>requires_grad</c>: a penalty built from them receives
/// gradients.</param>
public sealed record PenaltyContext(long Step, int TaskIndex, IReadOnlyList<NamedParameter> Parameters)
{
    /// <summary>The parameters methods added at task starts (<see cref="TaskStartContext.AddParameters"/>), by name: fp32
    /// leaves with <c>requires_grad</c> that the core trains; a term built from them receives gradients. Empty until one is
    /// added (and outside a run). Valid during the call. (Contract 3.0.)</summary>
    public IReadOnlyDictionary<string, Tensor> AddedParameters { get; init; } = Structure.NoParameters;
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

/// <summary>What <see cref="ILossTerm.Loss"/> sees for one batch the model read: a micro-batch, or a replay batch in
/// <see cref="ReplayMode.Separate"/> mode.</summary>
/// <param name="Step">As in <see cref="PenaltyContext.Step"/>.</param>
/// <param name="TaskIndex">Index of the task being trained.</param>
/// <param name="Batch">The batch the model read (memory items appended in Append mode included), the task's tensors only.</param>
/// <param name="Logits">The model's fp32 logits on the batch, in the autograd graph (before any task head masks them).</param>
/// <param name="LogitsWith">Logits of the same model with other weights (a teacher kept in the plugin's state, by parameter
/// name; names not given keep the current values), in eval mode (a frozen teacher: with dropout it differs from the
/// training-mode <see cref="Logits"/> even at equal weights), without autograd. Owned by the caller's scope.</param>
public sealed record LossTermContext(long Step, int TaskIndex, Batch Batch, Tensor Logits,
    Func<IReadOnlyDictionary<string, Tensor>, Batch, Tensor> LogitsWith)
{
    /// <summary>The parameters methods added at task starts (<see cref="TaskStartContext.AddParameters"/>), by name: fp32
    /// leaves with <c>requires_grad</c> that the core trains; a term built from them receives gradients. Empty until one is
    /// added (and outside a run). Valid during the call. (Contract 3.0.)</summary>
    public IReadOnlyDictionary<string, Tensor> AddedParameters { get; init; } = Structure.NoParameters;
    /// <summary>The memory items among the batch's rows, with the extra tensors they carry (DER's stored logits), when
    /// the run's mixing data role put any in this batch; null otherwise (the first task, no mixing role). (Contract 3.0.)</summary>
    public MemoryItems? Memory { get; init; }
    /// <summary>The plugin's own log sink (<see cref="IRunLog"/>); discards outside a run.</summary>
    public IRunLog Log { get; init; } = IRunLog.None;
    /// <summary>The plugin's own requests to the run (<see cref="RunControl"/>); discards outside a run.</summary>
    public RunControl Control { get; init; } = RunControl.None;
}

/// <summary>
/// A per-item loss term (LwF's distillation, DER's logit matching): called for every batch the model reads in training —
/// each micro-batch and, in <see cref="ReplayMode.Separate"/> mode, each replay batch. Returns the SUM over the batch's
/// items of the term — the items are the rows whose target counts (≠ <see cref="Batch.IgnoreIndex"/>,
/// <see cref="Batch.ItemMask"/>) — and the core divides it by the counted items of the whole accumulation window of
/// the same kind, exactly as the task loss: N (current and appended memory items) for a micro-batch, N_mem for a replay
/// batch. So a window of k micro-batches equals one batch of the same items. The replay's loss weight w applies to the
/// task loss of memory items only, never to a loss term (a term carries its own coefficient).
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
    /// <summary>The parameters methods added at task starts (<see cref="TaskStartContext.AddParameters"/>), by name: fp32
    /// leaves with <c>requires_grad</c> that the core trains; a term built from them receives gradients. Empty until one is
    /// added (and outside a run). Valid during the call. (Contract 3.0.)</summary>
    public IReadOnlyDictionary<string, Tensor> AddedParameters { get; init; } = Structure.NoParameters;
    /// <summary>(parameter, slot) → a copy of the optimizer's state of one parameter (a model parameter or an added one, by
    /// name), in the parameter's shape: <see cref="OptimizerSlots.ExpAvg"/> and <see cref="OptimizerSlots.ExpAvgSq"/> under
    /// Adam and AdamW, <see cref="OptimizerSlots.Momentum"/> under SGD with momentum; null when the run's optimizer keeps no
    /// such slot (and outside a run). A parameter the run does not train is an error naming it. The copy is fp32, read-only
    /// by construction, and freed when the call returns. (Contract 3.0.)</summary>
    public Func<string, string, Tensor?> OptimizerState { get; init; } = Structure.NoOptimizerState;
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
/// <param name="PenaltyGradient">∇ of the loss terms and penalties, unscaled, before clipping. The update uses TaskGradient +
/// PenaltyGradient; since contract 3.0 a hook may change this one in place too (a mask that must hold against EWC's pull).</param>
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
    /// <summary>The parameters methods added at task starts (<see cref="TaskStartContext.AddParameters"/>), by name: fp32
    /// leaves with <c>requires_grad</c> that the core trains; a term built from them receives gradients. Empty until one is
    /// added (and outside a run). Valid during the call. (Contract 3.0.)</summary>
    public IReadOnlyDictionary<string, Tensor> AddedParameters { get; init; } = Structure.NoParameters;
    /// <summary>The gradient of each added parameter (<see cref="AddedParameters"/>, same names): the whole gradient the
    /// update uses before clipping (loss terms and penalties; the task loss never reaches an added parameter), unscaled. A
    /// hook may change it in place, as it does <see cref="TaskGradient"/>. (Contract 3.0.)</summary>
    public IReadOnlyDictionary<string, Tensor> AddedGradients { get; init; } = Structure.NoParameters;
    /// <summary>(parameter, slot) → a copy of the optimizer's state of one parameter (a model parameter or an added one, by
    /// name), in the parameter's shape: <see cref="OptimizerSlots.ExpAvg"/> and <see cref="OptimizerSlots.ExpAvgSq"/> under
    /// Adam and AdamW, <see cref="OptimizerSlots.Momentum"/> under SGD with momentum; null when the run's optimizer keeps no
    /// such slot (and outside a run). A parameter the run does not train is an error naming it. The copy is fp32, read-only
    /// by construction, and freed when the call returns. (Contract 3.0.)</summary>
    public Func<string, string, Tensor?> OptimizerState { get; init; } = Structure.NoOptimizerState;
    /// <summary>The plugin's own log sink (<see cref="IRunLog"/>); discards outside a run.</summary>
    public IRunLog Log { get; init; } = IRunLog.None;
    /// <summary>The plugin's own requests to the run (<see cref="RunControl"/>); discards outside a run.</summary>
    public RunControl Control { get; init; } = RunControl.None;
}

/// <summary>Before the update, after unscaling, before clipping (A-GEM's projection): may change
/// <see cref="GradientContext.TaskGradient"/> in place.</summary>
/// <remarks>
/// <para><b>Masking an update.</b> The update reads g = TaskGradient + PenaltyGradient (then clips g by its global norm), so a
/// hook masks parameter i's gradient by changing both in place: <c>TaskGradient[i].mul_(mask)</c> and
/// <c>PenaltyGradient[i].mul_(mask)</c> (an added parameter's whole gradient is <c>AddedGradients[name]</c>). Every entry
/// is a view of the buffer the update reads: change it in place, never replace it (the host refuses that, naming the
/// hook), and leave it finite. Zeroing TaskGradient alone is enough when no loss term or penalty reaches the parameter.</para>
/// <para>A zero gradient is not a frozen parameter. What the optimizer adds after the hook still moves it: weight decay
/// (AdamW's decoupled −ηλθ, and the coupled λθ of Adam and SGD, which is added to g after the hook, so the hook cannot
/// mask it), SGD's momentum and Adam's moments from earlier steps (m̂/(√v̂+ε) ≠ 0 while m ≠ 0). A masked parameter stays
/// bitwise unchanged under SGD without momentum, or with moments that are zero, and with weight decay 0 for its group
/// (the [optimizer] rules: <c>no_decay</c> patterns, or rank 1). To keep parameters exactly fixed otherwise, freeze them
/// ([optimizer] components with <c>frozen = true</c>); under AdamW a masked parameter in a group without decay still moves
/// by the tail of its moments, which shrinks by about β₁ per step (m) against √β₂ (v).</para>
/// </remarks>
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
    /// <summary>
    /// Adds trainable parameters to the run, from their initial values (any floating dtype; the core keeps an fp32 copy on
    /// the model's device), under names no model parameter or added parameter has (<c>aux.task1.weight</c>), and returns
    /// them as the core holds them. From then on the core trains them with the run's optimizer kind (AdamW, Adam or SGD, its
    /// β, ε and momentum), at the run's learning rate and schedule on every step, with moments that start at zero and a bias
    /// correction that counts from this task (as PyTorch's <c>add_param_group</c>); their gradients join the model's in the
    /// global-norm clip, the fp16 loss scaler's unscaling and its non-finite check; checkpoints hold their values, moments
    /// and step count, so a resume continues them bitwise; a study that resets its optimizer at each task resets their
    /// moments too. Weight decay and learning-rate multipliers follow the run's [optimizer] rules applied to the name: λ
    /// (weight_decay) for tensors of rank ≥ 2 that no <c>no_decay</c> pattern matches, 0 otherwise; a component whose
    /// pattern matches the name gives its learning rate (one that freezes is refused); layer decay leaves them at the base
    /// rate, as a head after the last layer. They are not the model's: evaluation, task-end weights and the final model
    /// do not contain them. Every later context hands them back as <c>AddedParameters</c>. Callable during
    /// <see cref="ITaskHooks.TaskStart"/> only; outside a run it returns untrained copies (<see cref="Structure.Untrained"/>).
    /// (Contract 3.0.)
    /// </summary>
    public Func<IReadOnlyList<NamedParameter>, IReadOnlyList<NamedParameter>> AddParameters { get; init; } = Structure.Untrained;
    /// <summary>The parameters methods added at task starts (<see cref="TaskStartContext.AddParameters"/>), by name: fp32
    /// leaves with <c>requires_grad</c> that the core trains; a term built from them receives gradients. Empty until one is
    /// added (and outside a run). Valid during the call. (Contract 3.0.)</summary>
    public IReadOnlyDictionary<string, Tensor> AddedParameters { get; init; } = Structure.NoParameters;
    /// <summary>(parameter, slot) → a copy of the optimizer's state of one parameter (a model parameter or an added one, by
    /// name), in the parameter's shape: <see cref="OptimizerSlots.ExpAvg"/> and <see cref="OptimizerSlots.ExpAvgSq"/> under
    /// Adam and AdamW, <see cref="OptimizerSlots.Momentum"/> under SGD with momentum; null when the run's optimizer keeps no
    /// such slot (and outside a run). A parameter the run does not train is an error naming it. The copy is fp32, read-only
    /// by construction, and freed when the call returns. (Contract 3.0.)</summary>
    public Func<string, string, Tensor?> OptimizerState { get; init; } = Structure.NoOptimizerState;
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
    /// <summary>The parameters methods added at task starts (<see cref="TaskStartContext.AddParameters"/>), by name: fp32
    /// leaves with <c>requires_grad</c> that the core trains; a term built from them receives gradients. Empty until one is
    /// added (and outside a run). Valid during the call. (Contract 3.0.)</summary>
    public IReadOnlyDictionary<string, Tensor> AddedParameters { get; init; } = Structure.NoParameters;
    /// <summary>T, the tasks of the study: <see cref="TestData"/> reads any of them.</summary>
    public int TaskCount { get; init; }

    /// <summary>Task j's test split (0 ≤ j &lt; <see cref="TaskCount"/>) as mini-batches in order, a fresh pass on each
    /// enumeration: what the record's matrices are measured on, for a metric that reads the model (calibration, drift).
    /// Each batch is valid until the next is drawn.</summary>
    public Func<int, IEnumerable<Batch>> TestData { get; init; } = _ => [];

    /// <summary>A batch's logits (from <see cref="Logits"/>) as the rows the loss and the accuracy are computed over: logits
    /// [n, C] with the item's task head applied, against targets [n] (<see cref="Batch.IgnoreIndex"/> where an item does not
    /// count) — a classifier's items, or a causal language model's predicted tokens (logits shifted against targets). Both
    /// are new tensors (views where possible) that the caller may dispose once read, as it may the logits.</summary>
    public Func<Tensor, Batch, (Tensor Logits, Tensor Targets)> Rows { get; init; } =
        (logits, batch) => (logits.alias(), batch.TargetsTensor.alias());

    /// <summary>The trained model's representation of a batch's items: the input of the module the model kind names as its
    /// representation point, the features the probes and <see cref="PredictContext.Representation"/> read, float32 [B, d] on
    /// the CPU, in eval mode without autograd (iCaRL's herding reads it). Outside a run it refuses. (Contract 3.0.)</summary>
    public Func<Batch, Tensor> Representation { get; init; } =
        _ => throw new NotSupportedException("this task end has no model to read a representation from");
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
    /// A memory may add tensors the task's batches do not have (DER's stored logits: contract 3.0): the core takes them out
    /// before a model reads the items and gives them to loss terms as <see cref="MemoryItems.Extras"/>; a gradient hook's
    /// <see cref="GradientContext.Memory"/> returns the task's tensors only.
    /// </summary>
    Batch Sample(int items, Generator random);
}

/// <summary>
/// The data role (experience replay): keeps a memory of past tasks under a budget of items and mixes it into the batches
/// of later tasks. In <see cref="ReplayMode.Append"/> mode (2.x's only one) each training micro-batch of B current-task
/// items gets round(r·B) memory items appended (so an epoch stays one pass over the current task, and the loss is
/// normalised over current and memory items together); in <see cref="ReplayMode.Separate"/> mode each micro-batch is
/// paired with a replay batch of its own. Every data role observes the training batches; at most one per run mixes
/// (r &gt; 0), and gradient hooks see that one as <see cref="GradientContext.Memory"/> (A-GEM keeps a memory of its own
/// with r = 0 when no other role mixes).
/// </summary>
/// <remarks>
/// The loss of a window, with the task's per-item losses ℓ, w = <see cref="LossWeight"/> and every N the counted items
/// (targets ≠ <see cref="Batch.IgnoreIndex"/>) of the WHOLE accumulation window:
/// <list type="bullet">
/// <item>Append: L = (Σ_{i∈cur} ℓᵢ + w·Σ_{j∈mem} ℓⱼ) / N, N = N_cur + N_mem (the weight does not enter the denominator,
/// so w = 1 is 2.x's loss bit for bit, and w = 0 trains on the current items at a loss scaled by N_cur/N).</item>
/// <item>Separate: L = Σ_{i∈cur} ℓᵢ / N_cur + w·Σ_{j∈mem} ℓⱼ / N_mem: each batch kind is normalised by its own items
/// over the window, so a window of k micro-batches with their k replay batches equals one micro-batch of the same
/// current items with one replay batch of the same memory items.</item>
/// </list>
/// Loss terms (<see cref="ILossTerm"/>) and penalties are added as always; w does not scale them.
/// </remarks>
public interface IDataRole : IMemory
{
    /// <summary>r ≥ 0: memory items per current-task item in each micro-batch (0: the memory is only read by hooks, and
    /// nothing is replayed in either mode).</summary>
    double MixRatio { get; }

    /// <summary>w ≥ 0, finite: the weight of the memory items' task loss (see the remarks for the normalisation). The
    /// default 1 is 2.x's replay. (Contract 3.0.)</summary>
    double LossWeight => 1;

    /// <summary>Whether memory items are appended to each micro-batch (the default, 2.x's replay) or drawn as a separate
    /// replay batch per micro-batch. (Contract 3.0.)</summary>
    ReplayMode Mode => ReplayMode.Append;

    /// <summary>m ≥ 0: the memory items of each replay batch in <see cref="ReplayMode.Separate"/> mode; 0 (the default)
    /// draws round(r·B), as many as Append would add. Not read in Append mode. (Contract 3.0.)</summary>
    int ReplayBatchSize => 0;

    /// <summary>Every training micro-batch of the current task, before mixing (reservoir sampling); <paramref name="random"/>
    /// is derived from the run's seed, the step, the data role and the micro-batch (the same after a resume).</summary>
    void Observe(Batch batch, int taskIndex, Generator random) { }
}
