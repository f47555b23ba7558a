namespace Research.Core.Memory;

/// <summary>
/// How full fine-tuning stores each parameter: bytes of the working weights, of their gradients, and of an fp32
/// master copy. Counting follows ZeRO (Rajbhandari et al. 2020, §3.1): mixed precision keeps 16-bit weights and
/// gradients for the forward and backward passes and updates an fp32 copy of the weights, 2 + 2 + 4 bytes. (PyTorch
/// autocast arranges it differently, fp32 weights and gradients with 16-bit casts made on the fly, 4 + 4 bytes:
/// the same 8 bytes per parameter before the optimizer.)
/// </summary>
/// <param name="Name">The canonical name the command line accepts.</param>
/// <param name="WeightBytes">Bytes per parameter of the weights the forward pass reads.</param>
/// <param name="GradientBytes">Bytes per parameter of the gradients the backward pass writes.</param>
/// <param name="MasterBytes">Bytes per parameter of the fp32 master copy the optimizer updates; 0 when there is none.</param>
/// <param name="WeightType">The number format of the weights and gradients, as printed ("fp16").</param>
/// <param name="Summary">One line for the command's output.</param>
public sealed record Precision(string Name, int WeightBytes, int GradientBytes, int MasterBytes, string WeightType, string Summary)
{
    public static readonly Precision Fp32 = new("fp32", 4, 4, 0, "fp32",
        "fp32 weights and gradients; the optimizer updates the weights themselves, so there is no master copy");

    public static readonly Precision MixedBf16 = new("mixed-bf16", 2, 2, 4, "bf16",
        "bf16 compute, weights and gradients, with an fp32 master copy that the optimizer updates");

    public static readonly Precision MixedFp16 = new("mixed-fp16", 2, 2, 4, "fp16",
        "fp16 compute, weights and gradients, with an fp32 master copy that the optimizer updates (and a loss scale)");

    /// <summary>
    /// bf16 weights updated in place. bf16 keeps 8 significant bits, so w + Δ rounds back to w whenever |Δ| is below
    /// half a bf16 spacing, 2⁻⁹ to 2⁻⁸ of |w|: at fine-tuning learning rates most small updates are lost.
    /// </summary>
    public static readonly Precision PureBf16 = new("pure-bf16", 2, 2, 0, "bf16",
        "bf16 weights updated in place, no master copy: updates below 2^-9..2^-8 of a weight round away and are lost");

    /// <summary>Every precision by every name it is accepted under: "bf16" means mixed-bf16, "fp16" mixed-fp16.</summary>
    public static IReadOnlyDictionary<string, Precision> ByName { get; } = new Dictionary<string, Precision>(StringComparer.OrdinalIgnoreCase)
    {
        ["fp32"] = Fp32,
        ["bf16"] = MixedBf16, ["mixed-bf16"] = MixedBf16,
        ["fp16"] = MixedFp16, ["mixed-fp16"] = MixedFp16,
        ["pure-bf16"] = PureBf16,
    };

    /// <summary>Weights, gradients and master copy: the bytes per parameter before the optimizer's state.</summary>
    public int BytesPerParameter => WeightBytes + GradientBytes + MasterBytes;
}
