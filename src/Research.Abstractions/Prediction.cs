using static TorchSharp.torch;

namespace Research.Abstractions;

// The evaluation hook (contract 3.0): a method that classifies in its own way (iCaRL's nearest mean of exemplars) replaces
// the model's arg-max wherever the core measures a trained model's accuracy. The loss stays the model's.

/// <summary>What <see cref="IPredictor.Predict"/> sees for one batch the core evaluates.</summary>
/// <param name="Step">Optimizer updates the run has applied (the weights do not change while this step lasts).</param>
/// <param name="TaskIndex">The task the loop is in: the task being trained (an evaluation during training), the task that
/// just ended (a study's row of the matrices, after the predictor's own <see cref="ITaskHooks.TaskEnd"/>), 0 before any
/// training (a study's baseline).</param>
/// <param name="Batch">The batch evaluated: the task's tensors, valid during the call.</param>
/// <param name="Logits">The model's fp32 logits as rows [n, C] (the task head applied, a causal LM's tokens shifted): what
/// the model's arg-max would read; the core's, valid during the call.</param>
/// <param name="Targets">The rows' targets [n] (<see cref="Batch.IgnoreIndex"/> where a row does not count).</param>
/// <param name="Representation">The representation of any batch's items (<see cref="Batch"/> of the task's tensors, say the
/// memory's items): the input of the module the model kind names as its representation point (its final Linear,
/// <c>head</c>, for every built-in classifier), the same features the core's probes read, float32 [B, d] on the logits'
/// device, computed with the current weights in eval mode without autograd. A new tensor of the call.</param>
public sealed record PredictContext(long Step, int TaskIndex, Batch Batch, Tensor Logits, Tensor Targets, Func<Batch, Tensor> Representation)
{
    /// <summary>The plugin's own log sink (<see cref="IRunLog"/>); discards outside a run.</summary>
    public IRunLog Log { get; init; } = IRunLog.None;
    /// <summary>The plugin's own requests to the run (<see cref="RunControl"/>); discards outside a run.</summary>
    public RunControl Control { get; init; } = RunControl.None;
}

/// <summary>
/// A method's own classifier: the predicted class of every row of an evaluated batch, in place of the model's arg-max
/// (Rebuffi et al. 2017's nearest mean of exemplars; Avalanche's <c>eval_forward</c>). The core uses it for every accuracy
/// of the trained model it records — the evaluations during training (<c>val_accuracy</c>, what early stopping and the
/// best checkpoint read), a study's matrix R and its baseline, a run's final evaluation — while the loss it records is the
/// model's cross-entropy. At most one method of a run predicts. (Contract 3.0.)
/// </summary>
/// <remarks>
/// In a study, a predictor's <see cref="ITaskHooks.TaskEnd"/> runs before the task's row of the matrices is evaluated (the
/// other methods' after it), so what it keeps at a task end (iCaRL's exemplars of the task's classes) is part of the
/// classifier that row measures; its probe rows join that row. The ownership rule of Methods.cs holds: what the core hands
/// in is valid during the call; the returned tensor belongs to the core.
/// </remarks>
public interface IPredictor
{
    /// <summary>The predicted class of each row of <see cref="PredictContext.Logits"/>: int64 [n], each in 0 … C − 1, on the
    /// logits' device. A row whose target does not count is not scored, whatever it predicts.</summary>
    Tensor Predict(PredictContext context);
}
