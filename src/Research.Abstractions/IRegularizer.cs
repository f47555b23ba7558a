using TorchSharp;
using static TorchSharp.torch;

namespace Research.Abstractions;

/// <summary>A trainable parameter with its stable name, as in the model's state dictionary
/// (<c>layers.0.weight</c>). Regularizer state is keyed by these names.</summary>
public sealed record NamedParameter(string Name, Tensor Value);

/// <summary>What <see cref="IRegularizer.Penalty"/> sees.</summary>
/// <param name="Step">Optimizer updates the run has taken so far, counted across a study's tasks. The schedule's t
/// equals it, except in a study whose schedule restarts at each task, where t counts the task's updates.</param>
/// <param name="TaskIndex">Index of the task being trained, 0 for a single run.</param>
/// <param name="Parameters">The fp32 master parameters, with <c>requires_grad</c>: a penalty built from
/// them receives gradients.</param>
public sealed record PenaltyContext(long Step, int TaskIndex, IReadOnlyList<NamedParameter> Parameters);

/// <summary>What <see cref="IRegularizer.AfterStep"/> sees about the update just taken.</summary>
/// <param name="Step">The run's updates before this one (as in <see cref="PenaltyContext.Step"/>).</param>
/// <param name="TaskIndex">Index of the task being trained.</param>
/// <param name="Parameters">The parameters after the update, θ_{t+1}.</param>
/// <param name="Gradients">g_t, the gradient used by the update (after unscaling and clipping), by parameter.</param>
/// <param name="Deltas">Δθ_t = θ_{t+1} − θ_t, the change the update made, by parameter.</param>
/// <param name="LearningRate">The multiplier-applied base learning rate of the update.</param>
/// <param name="Loss">The loss of the step, penalties included.</param>
public sealed record StepContext(
    long Step,
    int TaskIndex,
    IReadOnlyList<NamedParameter> Parameters,
    IReadOnlyList<Tensor> Gradients,
    IReadOnlyList<Tensor> Deltas,
    double LearningRate,
    double Loss);

/// <summary>One mini-batch: inputs and integer class targets.</summary>
public sealed record Batch(Tensor Inputs, Tensor Targets);

/// <summary>What <see cref="IRegularizer.Consolidate"/> sees when a task ends.</summary>
/// <param name="TaskIndex">Index of the task that ended, 0 for the first.</param>
/// <param name="TaskName">Its name, as in the evaluation record.</param>
/// <param name="Parameters">The trained parameters θ* by name: the fp32 weights of record (under mixed precision the
/// master copy, not the 16-bit model), as views of the optimizer's buffer valid during the call — clone what you keep.</param>
/// <param name="Model">The model as trained on the task; call it to get logits.</param>
/// <param name="Data">Mini-batches of the task's training data (a fresh pass on each enumeration).</param>
/// <param name="PerItemLoss">ℓ(logits, targets) → one loss per item (no reduction); the task's loss.</param>
/// <param name="Fisher">The diagonal Fisher information of the trained model on the task's training data, by
/// parameter name, computed by the core in the variant asked for (see <see cref="FisherKind"/>); the tensors belong
/// to the caller. Contract 1.1.</param>
public sealed record TaskContext(
    int TaskIndex,
    string TaskName,
    nn.Module<Tensor, Tensor> Model,
    IReadOnlyList<NamedParameter> Parameters,
    IEnumerable<Batch> Data,
    Func<Tensor, Tensor, Tensor> PerItemLoss,
    Func<FisherKind, IReadOnlyDictionary<string, Tensor>> Fisher);

/// <summary>
/// A regularizer adds R(θ) to the training loss: L̃(θ) = L(θ) + R(θ). Examples: coupled L2 (R = λ/2‖θ‖²),
/// L2-SP toward the pre-trained weights (R = α/2‖θ − θ⁰‖², Li et al. 2018), EWC
/// (R = λ/2 Σᵢ Fᵢ(θᵢ − θ*ᵢ)², Kirkpatrick et al. 2017), SI (Zenke et al. 2017), MAS (Aljundi et al. 2018).
/// </summary>
/// <remarks>
/// <para>
/// The trainer adds the penalty once per optimizer step (once per accumulation window, not once per
/// micro-batch, and not divided by the number of items), in fp32. A regularizer only returns values and
/// keeps its own state; it never changes the trainer. Its state goes into checkpoints by name.
/// </para>
/// <para>
/// Ownership, one rule: <b>what a regularizer keeps is what <see cref="StateDict"/> returns.</b> The host runs each
/// call in a dispose scope of its own; afterwards the tensors of the state outlive it, tensors kept before and no
/// longer in the state are freed, and every other tensor the call created is freed with the scope. So a plugin keeps
/// tensors in plain fields and never calls a dispose-scope method. What the host hands in (contexts, parameters,
/// gradients) is valid during the call only: clone what you keep. A returned penalty belongs to the host.
/// <see cref="LoadStateDict"/> receives tensors that become the plugin's. <see cref="StateDict"/> returns the tensors
/// held, not new ones.
/// </para>
/// </remarks>
public interface IRegularizer
{
    /// <summary>R(θ) as a scalar fp32 tensor built from <see cref="PenaltyContext.Parameters"/>,
    /// or <c>null</c> when it is zero (e.g. EWC before the first task has ended).</summary>
    Tensor? Penalty(PenaltyContext context);

    /// <summary>Called after every optimizer update, outside autograd. SI accumulates its path integral
    /// ωᵢ += −gᵢ·Δθᵢ here.</summary>
    void AfterStep(StepContext context) { }

    /// <summary>Called when a task ends: EWC computes the Fisher and θ*, MAS its importances,
    /// LwF keeps a frozen copy of the model.</summary>
    void Consolidate(TaskContext context) { }

    /// <summary>The state to checkpoint (θ*, Fisher, running sums), keyed by stable names.</summary>
    IReadOnlyDictionary<string, Tensor> StateDict() => new Dictionary<string, Tensor>();

    /// <summary>Restores what <see cref="StateDict"/> returned.</summary>
    void LoadStateDict(IReadOnlyDictionary<string, Tensor> state) { }
}
