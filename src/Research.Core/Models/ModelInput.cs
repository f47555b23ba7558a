using Research.Abstractions;
using Research.Core.Precision;
using static TorchSharp.torch;

namespace Research.Core.Models;

/// <summary>
/// How the core calls a model on a batch. A model that reads one tensor gets <c>input</c> (features, images), or
/// <c>input_ids</c> for a token model; an <see cref="IBatchModule"/> reads the names it knows. The batch's names are the
/// contract, so a model reading several (an image and token ids) changes only the model, never a plugin.
/// </summary>
public static class ModelInput
{
    /// <summary>The model's logits on a batch, in fp32, with the precision policy's input cast (float inputs only).</summary>
    public static Tensor Logits(nn.Module<Tensor, Tensor> model, Batch batch, PrecisionPolicy? precision = null) =>
        PrecisionPolicy.Output(Call(model, batch, (precision ?? PrecisionPolicy.Fp32).Input));

    /// <summary>The model's logits on a batch in the dtype the model computes them in, the batch's tensors as they are:
    /// float64 curvature products (<see cref="Hessian.CurvatureOperator"/>) must not round through fp32.</summary>
    public static Tensor NativeLogits(nn.Module<Tensor, Tensor> model, Batch batch) => Call(model, batch, x => x);

    static Tensor Call(nn.Module<Tensor, Tensor> model, Batch batch, Func<Tensor, Tensor> input) =>
        model is IBatchModule reader ? reader.Logits(Cast(batch, input))
        : model.forward(batch.TryGetValue(Batch.Input, out var x) ? input(x) : batch[Batch.InputIds]);

    /// <summary>The batch with the input cast applied to each tensor (it changes only floating-point ones, such as a VLM's
    /// <c>image</c>, which a bf16 encoder's convolution refuses in fp32); the batch itself when nothing changes.</summary>
    static Batch Cast(Batch batch, Func<Tensor, Tensor> input)
    {
        var cast = batch.Select(kv => KeyValuePair.Create(kv.Key, input(kv.Value))).ToList();
        return cast.Zip(batch).All(p => ReferenceEquals(p.First.Value, p.Second.Value)) ? batch : new Batch(cast);
    }
}
