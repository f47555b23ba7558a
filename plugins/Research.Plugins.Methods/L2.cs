using Research.Abstractions;
using static TorchSharp.torch;

namespace Research.Plugins.Methods;

public sealed record L2Options
{
    /// <summary>λ in R(θ) = λ/2 ‖θ‖²: the <c>weight_decay</c> of PyTorch's SGD and Adam (coupled); a λ′ written as
    /// λ′‖θ‖² is λ/2.</summary>
    [Option(Min = 0)]
    public double Lambda { get; init; } = 1e-4;
}

/// <summary>
/// Coupled L2 toward zero (weight decay as an L2 penalty, Krogh &amp; Hertz 1991, "A simple weight decay can improve
/// generalization"): R(θ) = λ/2 Σᵢ θᵢ², gradient λθ. Added to the loss, it passes through Adam's scaling (unlike
/// AdamW's decoupled decay). It pulls toward zero — not toward the pre-trained weights (that is L2-SP). Strength
/// convention: the ½ inside, so λ is the weight_decay of PyTorch's SGD and Adam, which add λθ to the gradient; Avalanche
/// has no L2 plugin (it leaves weight decay to the optimizer).
/// </summary>
[Plugin("l2", Summary = "coupled L2 toward zero: λ/2 ‖θ‖²")]
public sealed class L2(L2Options options) : IPenalty
{
    public Tensor? Penalty(PenaltyContext context) =>
        options.Lambda == 0 ? null : SquaredDistance.Sum(context.Parameters, anchor: null).mul(options.Lambda / 2);
}
