using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Probes;

/// <summary>
/// A fitted linear probe (<see cref="LinearProbe.Fit"/>): logits = x Wᵀ + b in the RAW feature space, so
/// <see cref="Weight"/> [classes, d] and <see cref="Bias"/> [classes] (float32) can be copied into a model's
/// <c>head</c> Linear as they are. Owns its two tensors.
/// </summary>
/// <param name="Weight">W [classes, d], float32, for raw (unstandardised) features.</param>
/// <param name="Bias">b [classes], float32.</param>
/// <param name="L2">The chosen λ of the penalty (λ/2)‖W‖² on the standardised problem.</param>
/// <param name="TrainAccuracy">Accuracy of the chosen fit on the training features.</param>
/// <param name="ValidationAccuracy">Accuracy of the chosen fit on the validation features (what chose λ).</param>
/// <param name="Iterations">L-BFGS iterations of the chosen fit (counted from its warm start).</param>
/// <param name="Converged">Whether the chosen fit stopped on its tolerance (or at float64 resolution), not on the iteration cap.</param>
/// <param name="Grid">Every λ tried, largest first, with its validation accuracy.</param>
public sealed record ProbeFit(Tensor Weight, Tensor Bias, double L2, double TrainAccuracy, double ValidationAccuracy,
    int Iterations, bool Converged, IReadOnlyList<(double L2, double ValidationAccuracy)> Grid) : IDisposable
{
    /// <summary>The fraction of rows of x [N, d] whose arg-max logit is their target y [N] (int64 class ids), computed in float64.</summary>
    public double Accuracy(Tensor x, Tensor y)
    {
        if (x.dim() != 2 || x.shape[1] != Weight.shape[1])
            throw new ArgumentException($"the probe reads features [N, {Weight.shape[1]}]; got [{string.Join(", ", x.shape)}]");
        if (y.dim() != 1 || y.shape[0] != x.shape[0])
            throw new ArgumentException($"targets must be [{x.shape[0]}] class ids; got [{string.Join(", ", y.shape)}]");
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var device = x.device;
        var logits = x.to(float64).mm(Weight.to(float64, device).t()).add_(Bias.to(float64, device));
        return logits.argmax(1).eq(y.to(int64, device)).to(float64).mean().item<double>();
    }

    public void Dispose()
    {
        Weight.Dispose();
        Bias.Dispose();
    }
}
