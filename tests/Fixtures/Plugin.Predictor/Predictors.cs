using Research.Abstractions;
using static TorchSharp.torch;

namespace Plugin.Predictor;

/// <summary>The model's arg-max over the rows it is handed: a run with it must score exactly as a run without.</summary>
[Plugin("argmax-predictor", Summary = "the model's arg-max, through the predictor hook")]
public sealed class ArgmaxPredictor : IPredictor
{
    public Tensor Predict(PredictContext context) => context.Logits.argmax(-1);
}

public sealed record TargetPredictorOptions
{
    /// <summary>s: each counted row is predicted as (target + s) mod C (0: always right; 1: always wrong).</summary>
    [Option(Min = 0, Max = 1000)]
    public int Shift { get; init; }
}

/// <summary>Reads the targets: accuracy 1 with shift 0 and 0 with shift 1, whatever the model, so what a run records as
/// accuracy is seen to be the predictor's. It also reads the representation of every batch, which must have a row per item.</summary>
[Plugin("target-predictor", Summary = "predicts (target + shift) mod C")]
public sealed class TargetPredictor(TargetPredictorOptions options) : IPredictor
{
    public Tensor Predict(PredictContext context)
    {
        var features = context.Representation(context.Batch);
        if (features.dim() != 2 || features.shape[0] != context.Batch.Size)
            throw new InvalidOperationException($"the representation has shape [{string.Join(", ", features.shape)}] for {context.Batch.Size} items");
        var classes = context.Logits.shape[^1];
        var counted = context.Targets.ne(Batch.IgnoreIndex);
        using var zero = zeros_like(context.Targets);
        return where(counted, context.Targets, zero).add(options.Shift).remainder(classes);
    }
}
