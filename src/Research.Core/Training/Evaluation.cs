using Research.Core.Data;
using static TorchSharp.torch;

namespace Research.Core.Training;

/// <summary>Loss and accuracy over a whole split.</summary>
/// <param name="Loss">Σᵢ ℓᵢ / N over all N items — weighted by items, not a mean of batch means
/// (which over-weights a short last batch).</param>
public sealed record EvalResult(double Loss, double Accuracy, long Items);

public static class Evaluation
{
    /// <summary>Evaluates without gradients, in eval mode, restoring the module's mode afterwards.</summary>
    public static EvalResult Run(nn.Module<Tensor, Tensor> model, TensorDataset data, int batchSize)
    {
        var wasTraining = model.training;
        model.eval();
        try
        {
            using var _ = no_grad();
            double lossSum = 0; long correct = 0;
            foreach (var batch in data.InOrder(batchSize))
            {
                using var scope = NewDisposeScope();
                var logits = model.forward(batch.Inputs);
                lossSum += nn.functional.cross_entropy(logits, batch.Targets, reduction: nn.Reduction.Sum).to_type(ScalarType.Float64).item<double>();
                correct += logits.argmax(1).eq(batch.Targets).sum().item<long>();
            }
            return data.Count == 0 ? new EvalResult(double.NaN, double.NaN, 0) : new EvalResult(lossSum / data.Count, (double)correct / data.Count, data.Count);
        }
        finally { model.train(wasTraining); }
    }
}
