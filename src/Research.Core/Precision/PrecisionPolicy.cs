using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Precision;

/// <summary>The numeric formats of training.</summary>
public enum PrecisionMode
{
    /// <summary>Everything in fp32.</summary>
    Fp32,
    /// <summary>bf16 parameters and activations; fp32 master weights, master gradients, moments, loss.</summary>
    Bf16,
    /// <summary>fp16 like bf16, plus dynamic loss scaling (fp16 has 5 exponent bits: small gradients underflow).</summary>
    Fp16,
}

/// <summary>
/// Mixed precision as a policy object (TorchSharp has no autocast): the module's parameters are cast to the
/// compute dtype, inputs are cast on the way in, and logits are cast to fp32 before the loss and softmax
/// (Micikevicius et al. 2018). The optimizer keeps fp32 master weights, into which micro-batch gradients
/// accumulate, and fp32 moments. Integer inputs (token ids) are not cast.
/// </summary>
public sealed class PrecisionPolicy
{
    public PrecisionMode Mode { get; }
    public ScalarType ComputeType { get; }
    /// <summary>Present in fp16 mode only.</summary>
    public DynamicLossScaler? Scaler { get; }

    public PrecisionPolicy(PrecisionMode mode, DynamicLossScaler? scaler = null)
    {
        Mode = mode;
        ComputeType = mode switch { PrecisionMode.Bf16 => ScalarType.BFloat16, PrecisionMode.Fp16 => ScalarType.Float16, _ => ScalarType.Float32 };
        Scaler = mode == PrecisionMode.Fp16 ? scaler ?? new DynamicLossScaler() : null;
    }

    public static readonly PrecisionPolicy Fp32 = new(PrecisionMode.Fp32);

    /// <summary>Casts the module's floating-point parameters to the compute type (before the optimizer adopts them).</summary>
    public void Prepare(nn.Module module)
    {
        if (Mode != PrecisionMode.Fp32) module.to(ComputeType);
    }

    /// <summary>The input as the module computes with it.</summary>
    public Tensor Input(Tensor x) => x.is_floating_point() && x.dtype != ComputeType ? x.to(ComputeType) : x;

    /// <summary>The model's output as the loss sees it: fp32.</summary>
    public static Tensor Output(Tensor logits) => logits.dtype == ScalarType.Float32 ? logits : logits.to(ScalarType.Float32);

    /// <summary>The factor the loss is multiplied by before backward (1 unless fp16).</summary>
    public double LossScale => Scaler?.Scale ?? 1.0;
}
