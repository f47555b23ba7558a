using Research.Core.Data;
using Research.Core.Models;
using Research.Core.Precision;
using Research.Core.Tasks;
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
    /// <param name="task">How logits are scored (classification by default; task-incremental heads belong to the task).</param>
    public static EvalResult Run(nn.Module<Tensor, Tensor> model, TensorDataset data, int batchSize, PrecisionPolicy? precision = null,
        OutputTask? task = null)
    {
        task ??= new ClassificationTask();
        var wasTraining = model.training;
        model.eval();
        try
        {
            using var _ = no_grad();
            double lossSum = 0; long correct = 0, items = 0;
            foreach (var batch in data.InOrder(batchSize))
            {
                using var scope = NewDisposeScope();
                var (loss, right, n) = task.Score(ModelInput.Logits(model, batch, precision), batch);
                lossSum += loss; correct += right; items += n;
            }
            return items == 0 ? new EvalResult(double.NaN, double.NaN, 0) : new EvalResult(lossSum / items, (double)correct / items, items);
        }
        finally { model.train(wasTraining); }
    }
}
