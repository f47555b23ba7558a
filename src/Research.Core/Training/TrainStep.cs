using Research.Abstractions;
using Research.Core.Optim;
using Research.Core.Precision;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Training;

/// <summary>What one optimizer step did.</summary>
/// <param name="Applied">False when the loss scaler skipped the step (inf/NaN gradient in fp16).</param>
/// <param name="Loss">The window's loss Σᵢℓᵢ/N plus the penalties.</param>
/// <param name="GradNorm">‖g‖₂ of the unscaled fp32 gradient before clipping.</param>
/// <param name="Items">N: target items in the window (ignored labels excluded).</param>
public sealed record StepOutcome(bool Applied, double Loss, double GradNorm, double LearningRate, long Items, double LossScale);

/// <summary>The gradient became inf/NaN without a loss scaler to absorb it: the run diverged.</summary>
public sealed class NonFiniteGradientException(string message) : Exception(message);

/// <summary>
/// One optimizer step over one accumulation window of micro-batches, top to bottom:
/// for each micro-batch: forward → loss normalised by the number of target items in the WHOLE window →
/// (× loss scale) → backward → accumulate into the fp32 master gradient; then unscale → regularizer
/// penalties (once per window, fp32, not divided by the item count) → non-finite check → clip by global
/// norm (the norm is measured when clipping, loss scaling or logging needs it) → optimizer update at η·f(t)
/// → AfterStep of the regularizers that implement it → zero gradients. All temporaries die in
/// one dispose scope, so native memory stays flat.
/// </summary>
/// <remarks>
/// Why the window's item count: the gradient of the full batch is ∇(Σᵢℓᵢ/N). Dividing each micro-batch's
/// mean loss by k instead weights items of small micro-batches more, and is wrong whenever micro-batches hold
/// different numbers of target items (padding, ignored labels, the short last window of an epoch)
/// (Hugging Face Transformers, PR #34191, 2024).
/// </remarks>
public sealed class TrainStep(
    nn.Module<Tensor, Tensor> model,
    Optimizer optimizer,
    PrecisionPolicy precision,
    IReadOnlyList<IRegularizer> regularizers,
    double clipNorm,
    int taskIndex = 0,
    Func<Tensor, Tensor, Tensor>? heads = null,
    long stepOffset = 0)
{
    /// <summary>Targets equal to this are padding or ignored, as in PyTorch's cross-entropy.</summary>
    public const long IgnoreIndex = -100;

    /// <summary>The regularizers that implement AfterStep: only they need Δθ, which costs AdamW its fused path.</summary>
    readonly IReadOnlyList<IRegularizer> _observers = regularizers.Where(Guard.ObservesSteps).ToList();

    /// <param name="measureNorm">Compute ‖g‖ for logging even when neither clipping nor loss scaling needs it
    /// (one pass over the gradient). Unmeasured, the reported norm is NaN and divergence shows in the loss.</param>
    public StepOutcome Run(IReadOnlyList<Batch> window, double learningRate, bool measureNorm = true)
    {
        using var scope = NewDisposeScope();
        optimizer.Buffer.CheckViews();
        // The run's step: updates applied before this optimizer was made (a study that resets it per task) plus its own.
        long t = stepOffset + optimizer.StepCount;
        long items = window.Sum(b => b.Targets.ne(IgnoreIndex).sum().item<long>());
        double scale = precision.LossScale;
        double loss = 0;

        foreach (var b in window)
        {
            using var microScope = NewDisposeScope();
            var logits = PrecisionPolicy.Output(model.forward(precision.Input(b.Inputs)));
            if (heads != null) logits = heads(logits, b.Targets);
            var sum = nn.functional.cross_entropy(logits, b.Targets, ignore_index: IgnoreIndex, reduction: nn.Reduction.Sum);
            var normalised = sum.div(Math.Max(items, 1));
            loss += normalised.item<float>();
            (scale != 1 ? normalised.mul(scale) : normalised).backward();
            optimizer.AccumulateMicroBatch();
            FaultInjection.AfterMicroBatch();
        }
        if (scale != 1) optimizer.MasterGrad.div_(scale);

        IReadOnlyList<NamedParameter>? named = null;
        if (regularizers.Count > 0)
        {
            named = optimizer.PenaltyParameters();
            Tensor? penalty = null;
            foreach (var r in regularizers)
                if (r.Penalty(new PenaltyContext(t, taskIndex, named)) is { } p)
                    penalty = penalty is null ? p.to(ScalarType.Float32) : penalty + p.to(ScalarType.Float32);
            if (penalty is not null)
            {
                loss += penalty.item<float>();
                penalty.backward();
            }
        }

        bool needNorm = measureNorm || clipNorm > 0 || precision.Scaler is not null;
        double norm = needNorm ? optimizer.MasterGrad.norm().item<float>() : double.NaN;
        if (needNorm ? !double.IsFinite(norm) : !double.IsFinite(loss))
        {
            if (precision.Scaler is null)
                throw new NonFiniteGradientException($"the loss or gradient is not finite at step {t} (loss {loss}, ‖g‖ {norm}): the run diverged; lower the learning rate or set [optimizer] clip_norm");
            precision.Scaler.Update(gradientsFinite: false);
            optimizer.ZeroGrad();
            return new StepOutcome(false, loss, norm, learningRate, items, scale);
        }
        precision.Scaler?.Update(gradientsFinite: true);
        if (clipNorm > 0 && norm > clipNorm) optimizer.MasterGrad.mul_(clipNorm / (norm + 1e-6));

        var delta = optimizer.Step(learningRate, returnDelta: _observers.Count > 0);
        if (_observers.Count > 0)
        {
            var context = new StepContext(t, taskIndex, named!, optimizer.Views(optimizer.MasterGrad), optimizer.Views(delta!), learningRate, loss);
            foreach (var r in _observers) r.AfterStep(context);
        }
        optimizer.ZeroGrad();
        return new StepOutcome(true, loss, norm, learningRate, items, scale);
    }
}
