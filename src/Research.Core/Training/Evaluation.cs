using Research.Core.Data;
using Research.Core.Precision;
using static TorchSharp.torch;

namespace Research.Core.Training;

/// <summary>Loss and accuracy over a whole split.</summary>
/// <param name="Loss">Σᵢ ℓᵢ / N over all N items — weighted by items, not a mean of batch means
/// (which over-weights a short last batch).</param>
public sealed record EvalResult(double Loss, double Accuracy, long Items)
{
    /// <summary>exp(loss): the perplexity of the model's predictive distribution (for language models, per token).</summary>
    public double Perplexity => Math.Exp(Loss);
}

public static class Evaluation
{
    /// <summary>Evaluates without gradients, in eval mode, restoring the module's mode afterwards.</summary>
    /// <param name="heads">Task heads (task-incremental studies): logits × targets → the logits the task may use.</param>
    public static EvalResult Run(nn.Module<Tensor, Tensor> model, TensorDataset data, int batchSize, PrecisionPolicy? precision = null,
        Func<Tensor, Tensor, Tensor>? heads = null)
    {
        var wasTraining = model.training;
        model.eval();
        try
        {
            using var _ = no_grad();
            double lossSum = 0; long correct = 0, items = 0;
            foreach (var batch in data.InOrder(batchSize))
            {
                using var scope = NewDisposeScope();
                var logits = PrecisionPolicy.Output(model.forward((precision ?? PrecisionPolicy.Fp32).Input(batch.Inputs)));
                if (heads != null) logits = heads(logits, batch.Targets);
                lossSum += nn.functional.cross_entropy(logits, batch.Targets, ignore_index: TrainStep.IgnoreIndex, reduction: nn.Reduction.Sum)
                    .to_type(ScalarType.Float64).item<double>();
                var counted = batch.Targets.ne(TrainStep.IgnoreIndex);
                correct += logits.argmax(1).eq(batch.Targets).logical_and(counted).sum().item<long>();
                items += counted.sum().item<long>();
            }
            return items == 0 ? new EvalResult(double.NaN, double.NaN, 0) : new EvalResult(lossSum / items, (double)correct / items, items);
        }
        finally { model.train(wasTraining); }
    }
}
