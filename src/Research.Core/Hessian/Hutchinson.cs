using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Hessian;

/// <summary>
/// Hutchinson's stochastic trace estimator: tr(A) ≈ (1/m) Σⱼ zⱼᵀAzⱼ over m Rademacher probes zⱼ ∈ {−1, +1}ⁿ, for an
/// operator known only through v ↦ Av (Hutchinson 1989, "A stochastic estimator of the trace of the influence matrix for
/// Laplacian smoothing splines", Comm. Statist. Simulation Comput. 18(3)).
/// </summary>
/// <remarks>
/// E[zzᵀ] = I gives E[zᵀAz] = tr(A) for any symmetric A. With Rademacher entries one probe's variance is
/// 2 Σ_{i≠j} A_ij² — the diagonal contributes nothing, since zᵢ² = 1 — the least among probes with independent
/// unit-variance entries (Hutchinson 1989; Avron &amp; Toledo 2011, "Randomized algorithms for estimating the trace of an
/// implicit symmetric positive semi-definite matrix", J. ACM 58(2), which also bounds the probes needed for a relative
/// error ε with probability 1 − δ). The samples are independent, so the standard error reported is the samples'
/// standard deviation (n − 1 denominator) over √m, and shrinks as 1/√m.
/// </remarks>
public static class Hutchinson
{
    /// <summary>The estimate of tr(<paramref name="apply"/>) on ℝ^<paramref name="dimension"/> from
    /// <paramref name="probes"/> Rademacher probes (float64) drawn from <paramref name="generator"/>.</summary>
    public static TraceEstimate Trace(Func<Tensor, Tensor> apply, long dimension, int probes, Generator generator)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(dimension, 1);
        if (probes < 2) throw new ArgumentOutOfRangeException(nameof(probes), probes, "a standard error needs at least 2 probes");
        var samples = new double[probes];
        for (var j = 0; j < probes; j++)
        {
            using var scope = NewDisposeScope();
            var z = randint(0, 2, [dimension], dtype: ScalarType.Int64, generator: generator).to(ScalarType.Float64).mul_(2).sub_(1);
            samples[j] = z.dot(apply(z).to(ScalarType.Float64)).item<double>();
        }
        var mean = samples.Average();
        var variance = samples.Sum(s => (s - mean) * (s - mean)) / (probes - 1);
        return new TraceEstimate(mean, Math.Sqrt(variance / probes), probes, samples);
    }
}

/// <summary>A trace estimate: the mean of the probes' zᵀAz, its standard error, the probe count and the samples.</summary>
public sealed record TraceEstimate(double Estimate, double StandardError, int Probes, IReadOnlyList<double> Samples);
