using Research.Abstractions;
using Research.Core.Precision;
using static TorchSharp.torch;

namespace Research.Core.Models;

/// <summary>
/// How the core calls a model on a batch. The models of today read one tensor (<c>input</c>, or <c>input_ids</c> for a
/// token model); the batch's names are the contract, so a model reading several (an image and token ids) changes only
/// this mapping, never a plugin.
/// </summary>
public static class ModelInput
{
    /// <summary>The model's logits on a batch, in fp32, with the precision policy's input cast.</summary>
    public static Tensor Logits(nn.Module<Tensor, Tensor> model, Batch batch, PrecisionPolicy? precision = null)
    {
        var x = batch.TryGetValue(Batch.Input, out var input) ? (precision ?? PrecisionPolicy.Fp32).Input(input) : batch[Batch.InputIds];
        return PrecisionPolicy.Output(model.forward(x));
    }
}
