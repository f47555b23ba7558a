using Research.Abstractions;
using static TorchSharp.torch;

namespace Research.Plugins.Methods;

public sealed record L2Options
{
    /// <summary>λ in R(θ) = λ/2 ‖θ‖².</summary>
    [Option(Min = 0)]
    public double Lambda { get; init; } = 1e-4;
}

/// <summary>
/// Coupled L2 toward zero: R(θ) = λ/2 Σᵢ θᵢ², gradient λθ. Added to the loss, it passes through Adam's scaling
/// (unlike AdamW's decoupled decay). It pulls toward zero — not toward the pre-trained weights (that is L2-SP).
/// </summary>
[Plugin("l2", Summary = "coupled L2 toward zero: λ/2 ‖θ‖²")]
public sealed class L2(L2Options options) : IPenalty
{
    public Tensor? Penalty(PenaltyContext context) =>
        options.Lambda == 0 ? null : SquaredDistance.Sum(context.Parameters, anchor: null).mul(options.Lambda / 2);
}
