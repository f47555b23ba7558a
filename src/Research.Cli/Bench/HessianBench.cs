using System.Diagnostics;
using System.Globalization;
using Research.Abstractions;
using Research.Core.Data;
using Research.Core.Hessian;
using Research.Core.Models;
using static TorchSharp.torch;

using Research.Core;
namespace Research.Cli.Bench;

/// <summary>
/// <c>research bench hessian</c>: the cost of curvature on the demo's model, the MLP 784-256-256-10 of
/// <c>experiments/configs/demo-pretrain.toml</c>, after a short pre-training on its data (Fashion-MNIST classes 0–4, AdamW
/// lr 1e-3, weight decay 0.01, batches of 128 — the demo runs ~1,050 such steps; a trained model's spectrum has the
/// separated outliers that forgetting studies read). On <c>samples</c> items of those classes, in float32:
/// (a) one Hessian-vector product and one Gauss-Newton-vector product against one gradient over the same data
/// (<see cref="CurvatureOperator"/>), interleaved repetitions, medians and their ratio; (b) the top-k eigenpairs of the
/// Hessian by <see cref="Lanczos.TopEigenpairs"/> at the default tolerance, wall time and products.
/// </summary>
/// <remarks>
/// Expected: a Hessian-vector product costs a forward and two backward passes, one of them through the doubled graph, so
/// about 2–3 gradients (Pearlmutter 1994); the Gauss-Newton product three reverse passes. Targets: the Hessian product
/// ≤ <see cref="TargetRatio"/>× a gradient, the top-20 eigenpairs on 2,000 samples within <see cref="TargetSeconds"/> s.
/// </remarks>
public static class HessianBench
{
    /// <summary>The most a Hessian-vector product may cost in gradients over the same data.</summary>
    public const double TargetRatio = 3;

    /// <summary>The most the top-k eigenpairs may take, in seconds.</summary>
    public const double TargetSeconds = 120;

    /// <summary>Items per batch of the curvature data (the operator sums the batches, so this changes only speed and memory).</summary>
    public const int BatchSize = 500;

    /// <summary>Runs the benchmark and writes its figures to <paramref name="output"/>.</summary>
    public static void Run(TextWriter output, int samples = 2000, int repetitions = 5, int k = 20, int trainSteps = 300, long seed = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(samples, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(repetitions, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(trainSteps);
        var inv = CultureInfo.InvariantCulture;
        var generator = new Generator((ulong)seed);
        var (train, test) = FashionMnist.Load(FashionMnist.ResolveDirectory(""));
        test.Dispose();
        using var all = train;
        using var classes = all.WithClasses([0, 1, 2, 3, 4]);
        using var model = new Mlp(784, [256, 256], 10);
        Init.LinearDefault(model, generator);
        var trainSeconds = Pretrain(model, classes, trainSteps, generator);
        using var items = classes.Sample(samples, generator);
        var data = Enumerable.Range(0, (int)((items.Count + BatchSize - 1) / BatchSize))
            .Select(b => (Start: (long)b * BatchSize, Rows: Math.Min(BatchSize, items.Count - (long)b * BatchSize)))
            .Select(b => new Batch(items.Inputs.narrow(0, b.Start, b.Rows), items.Targets.narrow(0, b.Start, b.Rows))).ToList();
        using var hessian = new CurvatureOperator(model, data);
        using var ggn = new CurvatureOperator(model, data, CurvatureKind.GaussNewton);

        output.WriteLine(string.Format(inv, "bench hessian: Mlp 784-256-256-10 ({0:N0} parameters), the demo's model after {1} AdamW steps on Fashion-MNIST classes 0–4 ({2:0.0} s); {3:N0} items of those classes in batches of {4}; float32; {5} intra-op threads; TorchSharp {6}",
            hessian.Dimension, trainSteps, trainSeconds, items.Count, BatchSize, get_num_threads(), typeof(Tensor).Assembly.GetName().Version));
        output.WriteLine($"cpu: {CpuModel.Describe()}");
        output.WriteLine();

        var v = randn(hessian.Dimension, generator: generator);
        void Gradient() { using var s = NewDisposeScope(); hessian.LossAndGradient(); }
        void HessianProduct() { using var s = NewDisposeScope(); hessian.Apply(v); }
        void GgnProduct() { using var s = NewDisposeScope(); ggn.Apply(v); }
        var products = new List<StepComparison>
        {
            StepBench.Compare("Hessian-vector product (candidate) vs gradient (baseline)", Gradient, HessianProduct, warmup: 1, repetitions: repetitions, stepsPerRepetition: 1),
            StepBench.Compare("Gauss-Newton-vector product (candidate) vs gradient (baseline)", Gradient, GgnProduct, warmup: 1, repetitions: repetitions, stepsPerRepetition: 1),
        };
        StepBench.Print(products, output);
        output.WriteLine(string.Format(inv, "Hessian-vector product / gradient: {0:0.00}× (target ≤ {1}×: {2}); Gauss-Newton / gradient: {3:0.00}×",
            products[0].Ratio, TargetRatio, products[0].Ratio <= TargetRatio ? "met" : "NOT met", products[1].Ratio));
        output.WriteLine();

        var watch = Stopwatch.StartNew();
        using var top = Lanczos.TopEigenpairs(hessian.AsFunction(), hessian.Dimension, k, generator);
        var seconds = watch.Elapsed.TotalSeconds;
        output.WriteLine(string.Format(inv, "top-{0} Hessian eigenpairs (Lanczos, full re-orthogonalisation, tolerance {1:0e0} · max|λ|): {2:0.0} s wall (target < {3} s: {4}), {5} Lanczos steps, {6} products ({7} to recompute the residuals), {8:0.000} s per product, converged: {9}",
            k, top.Tolerance, seconds, TargetSeconds, seconds < TargetSeconds ? "met" : "NOT met", top.Iterations, top.Products, top.Products - top.Iterations,
            seconds / top.Products, top.Converged ? "yes" : "no"));
        output.WriteLine("  i  eigenvalue      ‖Hv − λv‖ / max|λ|");
        var scale = top.Eigenvalues.Max(Math.Abs);
        for (var i = 0; i < k; i++)
            output.WriteLine(string.Format(inv, "{0,3}  {1,12:0.0000e+0}  {2,10:0.0e+0}", i + 1, top.Eigenvalues[i], top.Residuals[i] / scale));
    }

    /// <summary>AdamW steps on random batches of 128 of <paramref name="data"/>; returns the seconds taken.</summary>
    static double Pretrain(Mlp model, TensorDataset data, int steps, Generator generator)
    {
        var watch = Stopwatch.StartNew();
        using var optimizer = optim.AdamW(model.parameters(), lr: 1e-3, weight_decay: 0.01);
        model.train();
        for (var step = 0; step < steps; step++)
        {
            using var scope = NewDisposeScope();
            var pick = randint(0, data.Count, [128], generator: generator);
            optimizer.zero_grad();
            nn.functional.cross_entropy(model.forward(data.Inputs.index_select(0, pick)), data.Targets.index_select(0, pick)).backward();
            optimizer.step();
        }
        model.eval();
        return watch.Elapsed.TotalSeconds;
    }
}
