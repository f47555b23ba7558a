using Research.Abstractions;
using Research.Core.Precision;
using static TorchSharp.torch;

namespace Research.Core.Models;

/// <summary>A model that reads a batch's named tensors itself (token ids with their attention mask, say) rather than one tensor.</summary>
public interface IBatchModule
{
    /// <summary>The logits of a batch.</summary>
    Tensor Logits(Batch batch);
}

/// <summary>
/// How the core calls a model on a batch. A model that reads one tensor gets <c>input</c> (features, images), or
/// <c>input_ids</c> for a token model; an <see cref="IBatchModule"/> reads the names it knows. The batch's names are the
/// contract, so a model reading several (an image and token ids) changes only the model, never a plugin.
/// </summary>
public static class ModelInput
{
    /// <summary>The model's logits on a batch, in fp32, with the precision policy's input cast (float inputs only).</summary>
    public static Tensor Logits(nn.Module<Tensor, Tensor> model, Batch batch, PrecisionPolicy? precision = null)
    {
        if (model is IBatchModule reader) return PrecisionPolicy.Output(reader.Logits(batch));
        var x = batch.TryGetValue(Batch.Input, out var input) ? (precision ?? PrecisionPolicy.Fp32).Input(input) : batch[Batch.InputIds];
        return PrecisionPolicy.Output(model.forward(x));
    }
}
