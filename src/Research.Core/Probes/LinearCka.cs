using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Probes;

/// <summary>
/// Linear centred kernel alignment between two representations X [n, p] and Y [n, q] of the same n items (rows):
/// CKA(K, L) = HSIC(K, L) / √(HSIC(K, K)·HSIC(L, L)) with the linear kernels K = XXᵀ, L = YYᵀ (Kornblith et al. 2019,
/// "Similarity of neural network representations revisited", eq. 4). It is invariant to orthogonal transforms and
/// isotropic scaling of either representation, not to arbitrary invertible linear maps.
/// </summary>
/// <remarks>
/// <para>
/// <see cref="Unbiased"/> uses the unbiased HSIC estimator of Song et al. 2012 ("Feature selection via dependence
/// maximization", JMLR 13, eq. 5), as Nguyen, Raghu &amp; Kornblith 2021 ("Do wide and deep networks learn the same
/// things?", §3) do for CKA: with K̃, L̃ the Gram matrices with zeroed diagonals,
/// HSIC₁(K, L) = [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1 / ((n−1)(n−2)) − 2/(n−2)·1ᵀK̃L̃1] / (n(n−3)).
/// The biased estimator tr(KHLH)/(n−1)² (H = I − 11ᵀ/n) is positive for independent representations, by an amount that
/// shrinks only like 1/n and grows with the dimension, so two unrelated wide layers look similar on a few hundred
/// items; the unbiased one has expectation 0 there.
/// </para>
/// <para>
/// Neither form needs the n×n Gram matrices. With kᵢ = ‖xᵢ‖² (the diagonal of K) and s = Σᵢ xᵢ:
/// tr(K̃L̃) = ⟨K, L⟩_F − Σᵢ kᵢlᵢ, 1ᵀK̃1 = ‖s‖² − Σᵢ kᵢ, K̃1 = X s − k, and ⟨K, L⟩_F = ‖XᵀY‖²_F. The one product that
/// costs more than O(n(p + q)) is ⟨K, L⟩_F: n·p·q multiply-adds through XᵀY, n²(p + q) through the Gram matrices.
/// <see cref="GramProducts"/> takes the cheaper route, so n may be far larger than the width (12,500 items of a
/// 512-wide layer need no 1.2 GB Gram matrix) and a wide layer on few items never forms a p×p product.
/// </para>
/// <para>
/// Both estimators compute in float64 on copies of the inputs (fp32 activations would lose the cancellation in
/// ⟨K, L⟩ − Σ kᵢlᵢ), on the device of <c>x</c>, and free every intermediate before returning.
/// </para>
/// </remarks>
public static class LinearCka
{
    /// <summary>
    /// Linear CKA from the unbiased HSIC estimator (Song et al. 2012, eq. 5; Nguyen et al. 2021). 1 for a representation
    /// and itself, near 0 (either sign) for independent ones; NaN when HSIC(K, K)·HSIC(L, L) ≤ 0, which only a degenerate
    /// representation on very few items gives. x: [n, p], y: [n, q], n ≥ 4.
    /// </summary>
    public static double Unbiased(Tensor x, Tensor y)
    {
        Check(x, y, minimumRows: 4);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (a, b) = Float64(x, y);
        long n = a.shape[0];
        var (kl, kk, ll) = GramProducts(a, b);
        var ka = a.square().sum(1);                 // diagonal of K: ‖xᵢ‖²
        var lb = b.square().sum(1);
        var rk = a.mv(a.sum(0L)).sub_(ka);           // K̃1 = X s − k
        var rl = b.mv(b.sum(0L)).sub_(lb);
        double sk = rk.sum().item<double>(), sl = rl.sum().item<double>();       // 1ᵀK̃1, 1ᵀL̃1
        double hsicKL = Hsic1(n, kl - Dot(ka, lb), sk, sl, Dot(rk, rl));
        double hsicKK = Hsic1(n, kk - Dot(ka, ka), sk, sk, Dot(rk, rk));
        double hsicLL = Hsic1(n, ll - Dot(lb, lb), sl, sl, Dot(rl, rl));
        return Ratio(hsicKL, hsicKK, hsicLL);
    }

    /// <summary>
    /// Linear CKA from the biased HSIC estimator tr(KHLH)/(n−1)² (Kornblith et al. 2019, eq. 3–4): with column-centred
    /// X and Y, ‖YᵀX‖²_F / (‖XᵀX‖_F·‖YᵀY‖_F). Positive for independent representations (see the remarks of
    /// <see cref="LinearCka"/>); kept for comparison with work that reports it. x: [n, p], y: [n, q], n ≥ 2.
    /// </summary>
    public static double Biased(Tensor x, Tensor y)
    {
        Check(x, y, minimumRows: 2);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (a, b) = Float64(x, y);
        // HKH = (HX)(HX)ᵀ: centring the columns centres the Gram matrix, and the (n−1)² cancels in the ratio.
        a.sub_(a.mean([0], keepdim: true));
        b.sub_(b.mean([0], keepdim: true));
        var (kl, kk, ll) = GramProducts(a, b);
        return Ratio(kl, kk, ll);
    }

    /// <summary>
    /// HSIC₁ of Song et al. 2012 eq. 5 from its pieces: t = tr(K̃L̃), sk = 1ᵀK̃1, sl = 1ᵀL̃1, r = 1ᵀK̃L̃1 (= (K̃1)ᵀ(L̃1),
    /// K̃ being symmetric).
    /// </summary>
    static double Hsic1(long n, double t, double sk, double sl, double r) =>
        (t + sk * sl / ((n - 1.0) * (n - 2.0)) - 2.0 / (n - 2.0) * r) / (n * (n - 3.0));

    static double Ratio(double kl, double kk, double ll)
    {
        var denominator = kk * ll;
        return denominator > 0 ? kl / Math.Sqrt(denominator) : double.NaN;
    }

    /// <summary>
    /// The Frobenius products ⟨K, L⟩, ⟨K, K⟩, ⟨L, L⟩ of K = XXᵀ and L = YYᵀ, by whichever route costs fewer
    /// multiply-adds: in feature space (‖XᵀY‖²_F and its twins, n(pq + p² + q²)) or through the Gram matrices
    /// (n²(p + q) to form them, each formed once).
    /// </summary>
    static (double KL, double KK, double LL) GramProducts(Tensor x, Tensor y)
    {
        double n = x.shape[0], p = x.shape[1], q = y.shape[1];
        if (p * q + p * p + q * q <= n * (p + q))
            return (FrobeniusSquared(x.t().mm(y)), FrobeniusSquared(x.t().mm(x)), FrobeniusSquared(y.t().mm(y)));
        var k = x.mm(x.t());
        var l = y.mm(y.t());
        return (Dot(k, l), FrobeniusSquared(k), FrobeniusSquared(l));
    }

    static double FrobeniusSquared(Tensor m) => m.square().sum().item<double>();

    static double Dot(Tensor a, Tensor b) => a.mul(b).sum().item<double>();

    static (Tensor X, Tensor Y) Float64(Tensor x, Tensor y) =>
        (x.detach().to(float64, copy: true), y.detach().to(float64, x.device, copy: true));

    static void Check(Tensor x, Tensor y, int minimumRows)
    {
        if (x.dim() != 2 || y.dim() != 2)
            throw new ArgumentException($"CKA compares two representations [n, features]; got shapes [{string.Join(", ", x.shape)}] and [{string.Join(", ", y.shape)}]");
        if (x.shape[0] != y.shape[0])
            throw new ArgumentException($"CKA compares two representations of the same items: x has {x.shape[0]} rows, y has {y.shape[0]}");
        if (x.shape[0] < minimumRows)
            throw new ArgumentException($"this CKA estimator needs at least {minimumRows} items (rows); got {x.shape[0]}");
        if (!x.is_floating_point() || !y.is_floating_point())
            throw new ArgumentException($"CKA needs floating-point representations; got {x.dtype} and {y.dtype}");
    }
}
