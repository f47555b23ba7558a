using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Hessian;

/// <summary>
/// The k largest algebraic eigenvalues of a symmetric operator A on ℝⁿ given only as v ↦ Av (a Hessian or Gauss-Newton
/// product), and their eigenvectors, by the Lanczos iteration with full re-orthogonalisation.
/// </summary>
/// <remarks>
/// <para>
/// Lanczos (1950) builds an orthonormal basis q₁ … q_j of the Krylov space span{q₁, Aq₁, …, A^{j−1}q₁} in which A is the
/// tridiagonal T_j = QⱼᵀAQⱼ (diagonal αᵢ = qᵢᵀAqᵢ, off-diagonal βᵢ): A qⱼ = βⱼ₋₁ qⱼ₋₁ + αⱼ qⱼ + βⱼ qⱼ₊₁. The eigenpairs
/// (θᵢ, sᵢ) of the small T_j give Ritz pairs (θᵢ, Qⱼsᵢ) whose extreme values converge first. In floating point the
/// three-term recurrence loses orthogonality exactly as Ritz values converge (Paige 1971/1980), and ghost copies of
/// converged eigenvalues appear; re-orthogonalising every new vector against all earlier ones (classical Gram-Schmidt,
/// applied twice — "twice is enough", Giraud, Langou &amp; Rozložník 2005) keeps Q orthonormal to working precision at
/// O(jn) per step, small beside one curvature product (Golub &amp; Van Loan, Matrix Computations, 4th ed., §10.1–10.3).
/// </para>
/// <para>
/// Everything in the recurrence is float64 whatever the operator computes in (its result is cast), so the basis and T
/// carry no float32 rounding of their own. The start vector is N(0, I) from the caller's generator, normalised. T's
/// eigenproblem is solved with <c>torch.linalg.eigh</c> after every step once j ≥ k. Stopping: the Lanczos bound
/// ‖A(Qⱼsᵢ) − θᵢQⱼsᵢ‖ = βⱼ |e_jᵀsᵢ| (exact in exact arithmetic, Paige 1971; Golub &amp; Van Loan Thm. 10.1.4) for each of the
/// top k falls to ≤ tol · max|θ|, or the iteration count reaches its limit. If βⱼ vanishes (an invariant subspace:
/// A has fewer distinct eigenvalues in q₁'s span than steps taken), the iteration continues from a fresh random vector
/// orthogonal to the basis, with a zero coupling in T, so eigenvalues of higher multiplicity can still be found.
/// </para>
/// <para>
/// The residuals reported are, by default, recomputed as ‖Avᵢ − θᵢvᵢ‖ with one more product per Ritz vector
/// (<see cref="ResidualSource.Recomputed"/>), and the converged flag is judged on them; otherwise they are the Lanczos
/// bounds (<see cref="ResidualSource.LanczosBound"/>). For a symmetric A an eigenvalue's error is at most its residual,
/// and at most residual² / gap when the gap to the rest of the spectrum is known (Golub &amp; Van Loan §8.1).
/// </para>
/// </remarks>
public static class Lanczos
{
    /// <summary>The relative residual tolerance: ‖Av − θv‖ ≤ 1e-3 · max|θ|, about three significant digits of the top
    /// eigenvalues (their error is at most residual² / gap).</summary>
    public const double DefaultTolerance = 1e-3;

    /// <summary>The iteration limit when none is given: k + 100, at least 3k (n when smaller). Lanczos converges to the
    /// extreme eigenvalues in far fewer steps than n; the basis of m vectors holds 8·m·n bytes.</summary>
    public static int DefaultMaxIterations(int k) => Math.Max(3 * k, k + 100);

    /// <summary>
    /// The <paramref name="k"/> largest algebraic eigenpairs of the symmetric operator <paramref name="apply"/> on
    /// ℝ^<paramref name="dimension"/>, in descending order of eigenvalue. <paramref name="apply"/> receives float64 flat
    /// vectors (it may compute in float32 and return any floating dtype) and must not keep them.
    /// </summary>
    public static LanczosResult TopEigenpairs(Func<Tensor, Tensor> apply, long dimension, int k, Generator generator,
        double tolerance = DefaultTolerance, int? maxIterations = null, bool recomputeResiduals = true)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(dimension, 1);
        if (k < 1 || k > dimension) throw new ArgumentOutOfRangeException(nameof(k), k, $"must be between 1 and the dimension {dimension}");
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(tolerance);
        var limit = (int)Math.Min(dimension, maxIterations ?? DefaultMaxIterations(k));
        if (limit < k) throw new ArgumentOutOfRangeException(nameof(maxIterations), maxIterations, $"fewer iterations than the {k} eigenpairs asked for");

        var basis = new Basis(dimension, Math.Min(limit, 2 * k + 20), limit);
        var alphas = new List<double>();
        var betas = new List<double>();   // betas[j] couples steps j and j + 1
        long products = 0;
        double normEstimate = 0;
        (double[] Values, Tensor Vectors, double[] Bounds)? top = null;
        try
        {
            basis.Append(Normalised(randn(dimension, dtype: ScalarType.Float64, generator: generator)));
            while (true)
            {
                var j = alphas.Count;
                double beta;
                Tensor? next;
                using (var scope = NewDisposeScope())
                {
                    var q = basis[j];
                    var w = apply(q).to(ScalarType.Float64);
                    if (w.dim() != 1 || w.shape[0] != dimension) throw new InvalidOperationException($"the operator returned shape [{string.Join(", ", w.shape)}] for a vector of [{dimension}]");
                    products++;
                    var alpha = q.dot(w).item<double>();
                    w.sub_(q * alpha);
                    if (j > 0) w.sub_(basis[j - 1] * betas[j - 1]);
                    basis.Orthogonalise(w);
                    beta = w.norm().item<double>();
                    alphas.Add(alpha);
                    normEstimate = Math.Max(normEstimate, Math.Abs(alpha) + beta + (j > 0 ? betas[j - 1] : 0));
                    next = beta > Breakdown * normEstimate ? w.div_(beta).MoveToOuterDisposeScope() : null;
                }
                var steps = alphas.Count;
                var full = steps == dimension;
                if (steps >= k && (next is not null || full))
                {
                    top?.Vectors.Dispose();
                    top = RitzPairs(alphas, betas, beta, k);
                    var scale = Math.Max(top.Value.Values.Max(Math.Abs), Tiny);
                    if (top.Value.Bounds.All(b => b <= tolerance * scale) || steps >= limit || full)
                    {
                        next?.Dispose();
                        break;
                    }
                }
                else if (steps >= limit)
                {
                    next?.Dispose();
                    top?.Vectors.Dispose();
                    top = RitzPairs(alphas, betas, 0, k);
                    break;
                }
                if (next is null)
                {
                    // An invariant subspace: no coupling to what comes next, and a fresh direction orthogonal to it.
                    beta = 0;
                    using var scope = NewDisposeScope();
                    var fresh = randn(dimension, dtype: ScalarType.Float64, generator: generator);
                    basis.Orthogonalise(fresh);
                    next = Normalised(fresh).MoveToOuterDisposeScope();
                }
                betas.Add(beta);
                basis.Append(next);
            }

            var (values, coefficients, bounds) = top!.Value;
            Tensor vectors;
            using (var scope = NewDisposeScope())
                vectors = basis.Combine(coefficients).MoveToOuterDisposeScope();
            coefficients.Dispose();
            var residuals = bounds;
            if (recomputeResiduals)
            {
                residuals = new double[k];
                for (var i = 0; i < k; i++)
                {
                    using var scope = NewDisposeScope();
                    var v = vectors[i];
                    residuals[i] = (apply(v).to(ScalarType.Float64) - v * values[i]).norm().item<double>();
                    products++;
                }
            }
            var converged = residuals.All(r => r <= tolerance * Math.Max(values.Max(Math.Abs), Tiny));
            return new LanczosResult(values, vectors, residuals,
                recomputeResiduals ? ResidualSource.Recomputed : ResidualSource.LanczosBound, alphas.Count, products, converged, tolerance);
        }
        catch
        {
            top?.Vectors.Dispose();
            throw;
        }
        finally
        {
            basis.Dispose();
        }
    }

    /// <summary>β below this multiple of the estimate of ‖A‖ ends the Krylov space (the next vector would be rounding noise).</summary>
    const double Breakdown = 1e-10;

    /// <summary>A floor for max|θ| so that a zero operator still has a finite tolerance.</summary>
    const double Tiny = 1e-300;

    /// <summary>T's top k eigenpairs: values descending, the coefficient columns S [j, k], and the Lanczos bounds
    /// β |S[j−1, i]| with <paramref name="beta"/> the last coupling.</summary>
    static (double[] Values, Tensor Coefficients, double[] Bounds) RitzPairs(List<double> alphas, List<double> betas, double beta, int k)
    {
        using var scope = NewDisposeScope();
        var j = alphas.Count;
        var t = diag(tensor(alphas.ToArray(), dtype: ScalarType.Float64));
        if (j > 1)
        {
            var off = tensor(betas.Take(j - 1).ToArray(), dtype: ScalarType.Float64);
            t = t + diag(off, 1) + diag(off, -1);
        }
        var (theta, s) = linalg.eigh(t);
        var order = arange(j - 1, j - 1 - k, -1, dtype: ScalarType.Int64);   // eigh sorts ascending: the last k, largest first
        var values = theta.index_select(0, order).data<double>().ToArray();
        var top = s.index_select(1, order);
        var bounds = top[j - 1].abs().mul(beta).data<double>().ToArray();
        return (values, top.MoveToOuterDisposeScope(), bounds);
    }

    static Tensor Normalised(Tensor v) => v.div_(v.norm());

    /// <summary>The orthonormal Lanczos vectors as rows of one float64 buffer, grown by doubling up to the iteration limit,
    /// so re-orthogonalisation is two matrix-vector products over a view rather than a loop over vectors.</summary>
    sealed class Basis(long dimension, int capacity, int limit) : IDisposable
    {
        Tensor _rows = zeros([capacity, dimension], dtype: ScalarType.Float64).DetachFromDisposeScope();
        int _count;

        public Tensor this[int i] => _rows[i];

        public void Append(Tensor v)
        {
            if (_count == _rows.shape[0])
            {
                var grown = zeros([Math.Min(2 * _rows.shape[0], limit), dimension], dtype: ScalarType.Float64).DetachFromDisposeScope();
                grown.narrow(0, 0, _count).copy_(_rows);
                _rows.Dispose();
                _rows = grown;
            }
            _rows[_count++].copy_(v);
            v.Dispose();
        }

        /// <summary>w ← w − Q(Qᵀw), twice.</summary>
        public void Orthogonalise(Tensor w)
        {
            using var scope = NewDisposeScope();
            var q = _rows.narrow(0, 0, _count);
            for (var pass = 0; pass < 2; pass++) w.sub_(q.t().mv(q.mv(w)));
        }

        /// <summary>The Ritz vectors Qᵀ-combined: rows Sᵀ Q, [k, n].</summary>
        public Tensor Combine(Tensor coefficients) =>
            coefficients.t().matmul(_rows.narrow(0, 0, coefficients.shape[0])).contiguous();

        public void Dispose() => _rows.Dispose();
    }
}

/// <summary>Where <see cref="LanczosResult.Residuals"/> come from.</summary>
public enum ResidualSource
{
    /// <summary>‖Avᵢ − θᵢvᵢ‖ computed with one more operator product per Ritz vector.</summary>
    Recomputed,

    /// <summary>The Lanczos bound βⱼ |e_jᵀsᵢ|, free, exact while the basis stays orthonormal.</summary>
    LanczosBound,
}

/// <summary>
/// The top eigenpairs from <see cref="Lanczos.TopEigenpairs"/>: eigenvalues θ₁ ≥ … ≥ θ_k, unit eigenvectors as the rows of
/// a float64 [k, n] tensor (owned by this result), each one's residual ‖Avᵢ − θᵢvᵢ‖ and where it came from, the Lanczos
/// steps taken, the operator products used (steps plus k when the residuals were recomputed), and whether every residual
/// met tolerance · max|θ|.
/// </summary>
public sealed record LanczosResult(
    IReadOnlyList<double> Eigenvalues,
    Tensor Eigenvectors,
    IReadOnlyList<double> Residuals,
    ResidualSource ResidualSource,
    int Iterations,
    long Products,
    bool Converged,
    double Tolerance) : IDisposable
{
    public void Dispose() => Eigenvectors.Dispose();
}
