using Research.Core.Data;
using Research.Core.Models;
using Research.Core.Precision;
using Research.Core.Tasks;
using static TorchSharp.torch;

namespace Research.Core.Training;

/// <summary>Loss and accuracy over a whole split.</summary>
/// <param name="Loss">Σᵢ ℓᵢ / N over all N items — weighted by items, not a mean of batch means
/// (which over-weights a short last batch).</param>
/// <param name="BitsPerByte">Language modelling: Σᵢ ℓᵢ / (ln 2 · bytes), the loss per UTF-8 byte of the text predicted —
/// comparable across tokenizers, unlike loss per token; NaN when the data carries no byte count.</param>
public sealed record EvalResult(double Loss, double Accuracy, long Items, double BitsPerByte = double.NaN)
{
    /// <summary>exp(loss): the perplexity of the model's predictive distribution (for language models, per token).</summary>
    public double Perplexity => Math.Exp(Loss);

    /// <summary>Whether these are a language model's results (loss per token with a byte count).</summary>
    public bool IsLanguageModel => !double.IsNaN(BitsPerByte);

    /// <summary>The split's results in one line: loss and accuracy; a language model's also perplexity and bits per byte.</summary>
    public string Describe() => IsLanguageModel
        ? $"loss {Loss:F4} ppl {Perplexity:F2} bpb {BitsPerByte:F4} acc {Accuracy:F4}"
        : $"loss {Loss:F4} acc {Accuracy:F4}";
}

public static class Evaluation
{
    /// <summary>Evaluates validation ("val"), test ("test", unless <paramref name="test"/> is false) and the extra named sets,
    /// each accuracy from <paramref name="prediction"/> when the run has a predictor.</summary>
    public static Dictionary<string, EvalResult> All(nn.Module<Tensor, Tensor> model, TaskData task,
        IReadOnlyList<(string Name, TensorDataset Data)> extra, int batchSize, PrecisionPolicy precision,
        OutputTask? outputs = null, bool test = true, Prediction? prediction = null)
    {
        var results = new Dictionary<string, EvalResult> { ["val"] = Evaluation.Run(model, task.Validation, batchSize, precision, outputs, prediction) };
        if (test) results["test"] = Evaluation.Run(model, task.Test, batchSize, precision, outputs, prediction);
        // With study.eval_all_tasks the current task's validation split comes again as task{j}_val: the same tensors
        // give the same result, so it is copied, not computed twice (a quarter of a 2-task study's evaluation time).
        foreach (var (name, data) in extra)
            results[name] = ReferenceEquals(data, task.Validation) ? results["val"]
                : test && ReferenceEquals(data, task.Test) ? results["test"]
                : Evaluation.Run(model, data, batchSize, precision, outputs, prediction);
        return results;
    }

    /// <summary>Evaluates without gradients, in eval mode, restoring the module's mode afterwards.</summary>
    /// <param name="task">How logits are scored (classification by default; task-incremental heads belong to the task).</param>
    /// <param name="prediction">The run's predictor, which classifies in place of the model's arg-max (the loss stays the
    /// model's); null: the arg-max.</param>
    public static EvalResult Run(nn.Module<Tensor, Tensor> model, TensorDataset data, int batchSize, PrecisionPolicy? precision = null,
        OutputTask? task = null, Prediction? prediction = null)
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
                var (loss, right, n) = task.Score(ModelInput.Logits(model, batch, precision), batch, prediction?.For(batch));
                lossSum += loss; correct += right; items += n;
            }
            if (items == 0) return new EvalResult(double.NaN, double.NaN, 0);
            var bitsPerByte = data.Utf8Bytes > 0 ? Text.LanguageModelMetrics.BitsPerByte(lossSum, data.Utf8Bytes) : double.NaN;
            return new EvalResult(lossSum / items, (double)correct / items, items, bitsPerByte);
        }
        finally { model.train(wasTraining); }
    }
}
