using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Probes;

/// <summary>
/// A linear probe: multinomial logistic regression on frozen features, trained to convergence, its L2 strength chosen on
/// validation accuracy — the measure of how much linearly decodable information a representation keeps (Alain &amp;
/// Bengio 2016, "Understanding intermediate layers using linear classifier probes"; the full-batch L-BFGS fit with a
/// validated L2 strength follows the linear evaluation of Kornblith, Shlens &amp; Le 2019, "Do better ImageNet models
/// transfer better?", §3).
/// </summary>
/// <remarks>
/// <para>
/// With features standardised by the training mean μ and standard deviation σ (floored at 1e-6, so a constant feature
/// gives a zero column instead of a division by zero), x̃ = (x − μ)/σ, the fit minimises over W [C, d], b [C]
/// f(W, b) = (1/n) Σᵢ [log Σ_c exp(zᵢc) − zᵢ,yᵢ] + (λ/2)‖W‖²_F,  zᵢ = W x̃ᵢ + b  (the bias is not penalised),
/// whose gradient is ∇_W f = Gᵀ X̃ + λW, ∇_b f = Gᵀ1 with G = (softmax(Z) − onehot(y)) / n. Standardising makes one λ
/// grid mean the same thing for every layer, whatever the scale of its activations, and conditions L-BFGS.
/// </para>
/// <para>
/// The λ grid is fitted from the largest λ down, each fit warm-started from the previous solution: a regularisation
/// path, where the strongly regularised problems are well conditioned and each solution is close to the next. The
/// chosen λ has the best validation accuracy; ties go to the larger λ, the simpler model.
/// </para>
/// <para>
/// The returned W, b are folded back into the raw feature space: W x̃ + b = (W/σ) x + (b − (W/σ) μ), so that
/// logits = x Wᵀ + b without a standardisation step, and a model's <c>head</c> can take them directly.
/// </para>
/// </remarks>
public static class LinearProbe
{
    /// <summary>λ = 10^k for k = −6…1: from barely regularised to strongly shrunk, on standardised features.</summary>
    public static IReadOnlyList<double> DefaultL2Grid { get; } = Enumerable.Range(-6, 8).Select(k => Math.Pow(10, k)).ToArray();

    /// <summary>σ below this counts as a constant feature (its standardised column is 0).</summary>
    const double StdFloor = 1e-6;

    /// <summary>
    /// Fits the probe on <paramref name="trainX"/> [n, d] with targets <paramref name="trainY"/> [n] (int64 class ids in
    /// [0, <paramref name="classes"/>)) for every λ of <paramref name="l2Grid"/> (default <see cref="DefaultL2Grid"/>),
    /// and keeps the λ with the best accuracy on <paramref name="valX"/>, <paramref name="valY"/>. Each fit runs L-BFGS
    /// in float64 until ‖∇f‖∞ ≤ <paramref name="tolerance"/> (or float64 resolution), at most
    /// <paramref name="maxIterations"/> iterations.
    /// </summary>
    public static ProbeFit Fit(Tensor trainX, Tensor trainY, Tensor valX, Tensor valY, int classes,
        IReadOnlyList<double>? l2Grid = null, int maxIterations = 500, double tolerance = 1e-6)
    {
        Check(trainX, trainY, valX, valY, classes, l2Grid, maxIterations, tolerance);
        var grid = (l2Grid ?? DefaultL2Grid).Distinct().OrderByDescending(l => l).ToList();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var device = trainX.device;
        var x = trainX.detach().to(float64, copy: true);
        var mean = x.mean([0], keepdim: true);
        var std = x.std(0L, false, true).clamp_min_(StdFloor);
        var xs = x.sub_(mean).div_(std);
        var vs = valX.detach().to(float64, device, copy: true).sub_(mean).div_(std);
        var y = trainY.to(int64, device);
        var vy = valY.to(int64, device);
        var onehot = nn.functional.one_hot(y, classes).to(float64);
        long d = xs.shape[1];

        var theta = new double[classes * (d + 1)];
        Lbfgs.Result? best = null;
        double bestL2 = double.NaN, bestValidation = -1;
        var tried = new List<(double, double)>();
        foreach (var l2 in grid)
        {
            var result = Lbfgs.Minimize(t => Objective(xs, y, onehot, classes, l2, t), theta, maxIterations, tolerance);
            theta = result.Theta;
            var validation = Accuracy(vs, vy, classes, theta);
            tried.Add((l2, validation));
            if (validation > bestValidation) { best = result; bestL2 = l2; bestValidation = validation; }
        }

        var chosen = best!.Value;
        var (w, b) = Unpack(chosen.Theta, classes, d, device);
        var rawW = w.div(std);                                        // W/σ, column by column
        var rawB = b.sub(rawW.mv(mean.squeeze(0L)));                   // b − (W/σ) μ
        var fit = new ProbeFit(rawW.to(float32).DetachFromDisposeScope(), rawB.to(float32).DetachFromDisposeScope(), bestL2,
            Accuracy(xs, y, classes, chosen.Theta), bestValidation, chosen.Iterations, chosen.Converged, tried);
        return fit;
    }

    /// <summary>f(θ) and ∇f(θ) of the remarks, θ = [W row-major; b].</summary>
    static (double, double[]) Objective(Tensor xs, Tensor y, Tensor onehot, int classes, double l2, double[] theta)
    {
        using var scope = NewDisposeScope();
        long n = xs.shape[0], d = xs.shape[1];
        var (w, b) = Unpack(theta, classes, d, xs.device);
        var logits = xs.mm(w.t()).add_(b);
        var lse = logits.logsumexp(1, keepdim: true);
        var data = lse.sum().item<double>() - logits.mul(onehot).sum().item<double>();
        var value = data / n + 0.5 * l2 * w.square().sum().item<double>();
        var g = logits.sub_(lse).exp_().sub_(onehot).div_(n);        // (softmax(Z) − onehot(y)) / n
        var gradW = g.t().mm(xs).add_(w, alpha: l2);
        var gradB = g.sum(0L);
        var gradient = cat([gradW.flatten(), gradB]).cpu().data<double>().ToArray();
        return (value, gradient);
    }

    static double Accuracy(Tensor xs, Tensor y, int classes, double[] theta)
    {
        using var scope = NewDisposeScope();
        var (w, b) = Unpack(theta, classes, xs.shape[1], xs.device);
        return xs.mm(w.t()).add_(b).argmax(1).eq(y).to(float64).mean().item<double>();
    }

    /// <summary>W [C, d] and b [C] as float64 tensors from θ = [W row-major; b].</summary>
    static (Tensor W, Tensor B) Unpack(double[] theta, int classes, long d, Device device)
    {
        var all = tensor(theta, float64, device);
        return (all.narrow(0, 0, classes * d).view(classes, d), all.narrow(0, classes * d, classes));
    }

    static void Check(Tensor trainX, Tensor trainY, Tensor valX, Tensor valY, int classes, IReadOnlyList<double>? l2Grid,
        int maxIterations, double tolerance)
    {
        if (classes < 2) throw new ArgumentException($"a probe separates at least 2 classes; got {classes}");
        if (trainX.dim() != 2 || valX.dim() != 2)
            throw new ArgumentException($"probe features are [N, d]; got train [{string.Join(", ", trainX.shape)}] and validation [{string.Join(", ", valX.shape)}]");
        if (trainX.shape[1] != valX.shape[1])
            throw new ArgumentException($"train and validation features differ in width: {trainX.shape[1]} and {valX.shape[1]}");
        if (trainX.shape[0] == 0 || valX.shape[0] == 0) throw new ArgumentException("a probe needs training and validation items");
        if (!trainX.is_floating_point() || !valX.is_floating_point())
            throw new ArgumentException($"probe features must be floating point; got {trainX.dtype} and {valX.dtype}");
        CheckTargets(trainY, trainX.shape[0], classes, "training");
        CheckTargets(valY, valX.shape[0], classes, "validation");
        if (l2Grid is { Count: 0 }) throw new ArgumentException("the L2 grid is empty");
        foreach (var l2 in l2Grid ?? [])
            if (!(l2 >= 0) || double.IsInfinity(l2)) throw new ArgumentException($"every L2 strength must be finite and ≥ 0; got {l2}");
        if (maxIterations < 1) throw new ArgumentException($"maxIterations must be ≥ 1; got {maxIterations}");
        if (!(tolerance > 0)) throw new ArgumentException($"tolerance must be > 0; got {tolerance}");
    }

    static void CheckTargets(Tensor y, long rows, int classes, string which)
    {
        if (y.dim() != 1 || y.shape[0] != rows)
            throw new ArgumentException($"{which} targets must be [{rows}] class ids; got [{string.Join(", ", y.shape)}]");
        if (y.dtype != int64) throw new ArgumentException($"{which} targets must be int64 class ids; got {y.dtype}");
        using var min = y.min();
        using var max = y.max();
        long lo = min.item<long>(), hi = max.item<long>();
        if (lo < 0 || hi >= classes)
            throw new ArgumentException($"{which} targets must lie in [0, {classes}); they span [{lo}, {hi}]");
    }
}
