using Research.Core.Optim;
using Research.Core.Precision;
using static TorchSharp.torch;

namespace Research.Core.Memory;

/// <summary>
/// Exact bytes of the model state of a model the framework builds: module weights (trainable and frozen, in
/// the compute dtype), their gradients (trainable only), the fp32 master weights and the fp32 master gradient
/// that micro-batches accumulate into (mixed precision only), and the optimizer's moments (fp32).
/// </summary>
/// <remarks>
/// The master gradient is a fifth component beside ZeRO's 16 B/param (Rajbhandari et al. 2020): accumulating
/// micro-batches in fp32 costs 4 B/param more than accumulating them in half precision, and avoids summing many
/// micro-batches with an 8-bit (bf16) or 11-bit (fp16) mantissa.
/// </remarks>
public sealed record ModelMemory(long Weights, long Gradients, long MasterWeights, long MasterGradients, long Moments)
{
    public long Total => Weights + Gradients + MasterWeights + MasterGradients + Moments;

    /// <summary>The prediction from counts alone: bytes per parameter by precision and optimizer.</summary>
    public static ModelMemory Predict(long trainable, long frozen, PrecisionMode precision, string optimizer, double momentum = 0)
    {
        long half = precision == PrecisionMode.Fp32 ? 4 : 2;
        long master = precision == PrecisionMode.Fp32 ? 0 : 4;
        long moments = optimizer switch
        {
            "adamw" or "adam" => 8,
            "sgd" when momentum > 0 => 4,
            "sgd" => 0,
            _ => throw new ArgumentException($"unknown optimizer '{optimizer}'", nameof(optimizer)),
        };
        return new(half * (trainable + frozen), half * trainable, master * trainable, master * trainable, moments * trainable);
    }

    /// <summary>The bytes the tensors really hold, read off the module and the optimizer.</summary>
    public static ModelMemory Measure(nn.Module model, Optimizer optimizer)
    {
        static long Bytes(Tensor t) => t.numel() * t.element_size();
        long weights = model.parameters().Sum(p => Bytes(p));
        return new(
            weights,
            Bytes(optimizer.Buffer.Grads),
            optimizer.HasMasterCopy ? Bytes(optimizer.Master) : 0,
            optimizer.HasMasterCopy ? Bytes(optimizer.MasterGrad) : 0,
            optimizer.State().Sum(s => Bytes(s.Flat)));
    }
}
