using System.Globalization;
using Research.Abstractions;
using Research.Core.Forgetting;
using Research.Core.Models;
using static TorchSharp.torch;

using Research.Core;
namespace Research.Cli.Bench;

/// <summary>
/// <c>research bench fisher</c>: the per-sample Fisher by the batched identity Σᵢ(gᵢxᵢᵀ)² = (G²)ᵀ(X²)
/// (<see cref="Fisher.Compute"/>) against the naive loop, one backward per sample and per class
/// (<see cref="Fisher.NaiveLoop"/>), for the Exact and Empirical Fisher of the demo MLP 784-256-256-10 on inputs
/// x ~ N(0, 1) with uniform random labels. Acceptance: at least <see cref="TargetSpeedUp"/>× faster, and equal within
/// <see cref="Tolerance"/> (max |fast − naive| / max |naive| per parameter tensor).
/// </summary>
public static class FisherBench
{
    /// <summary>The naive loop is timed on this many samples and its time scaled linearly to the full count: its cost
    /// per sample does not depend on N.</summary>
    public const int NaiveSamples = 500;

    /// <summary>Samples per mini-batch of the batched computation.</summary>
    public const int BatchSize = 500;

    /// <summary>The speed-up each per-sample Fisher must reach over the naive loop.</summary>
    public const double TargetSpeedUp = 20;

    /// <summary>The largest accepted max |fast − naive| / max |naive| over the parameter tensors.</summary>
    public const double Tolerance = 1e-5;

    /// <summary>Timed runs per side, interleaved (<see cref="StepBench.Compare"/>): the tables show medians and the
    /// min–max spread, since neighbours' load on a shared machine moves single timings by 2×.</summary>
    public const int Repetitions = 3;

    /// <summary>Runs the comparison on <paramref name="samples"/> samples with 2 intra-op threads and writes a table.</summary>
    public static void Run(TextWriter output, int samples = 10000)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(samples, 1);
        set_num_threads(2);
        var inv = CultureInfo.InvariantCulture;
        var generator = new Generator(20250217);
        using var model = new Mlp(784, [256, 256], 10);
        Init.LinearDefault(model, generator);
        using var scope = NewDisposeScope();
        var x = randn([samples, 784], generator: generator);
        var y = randint(0, 10, [samples], dtype: int64, generator: generator);
        var data = Enumerable.Range(0, (samples + BatchSize - 1) / BatchSize)
            .Select(b => (Start: (long)b * BatchSize, Rows: Math.Min(BatchSize, samples - (long)b * BatchSize)))
            .Select(b => new Batch(x.narrow(0, b.Start, b.Rows), y.narrow(0, b.Start, b.Rows))).ToList();
        var naiveSamples = Math.Min(NaiveSamples, samples);
        var scale = (double)samples / naiveSamples;
        var parameters = model.parameters().Sum(p => p.numel());

        output.WriteLine(string.Format(inv,
            "Fisher benchmark: Mlp 784-256-256-10 ({0:N0} parameters), {1:N0} samples x ~ N(0, 1) with uniform labels 0..9, batches of {2}, {3} intra-op threads.",
            parameters, samples, BatchSize, get_num_threads()));
        output.WriteLine(string.Format(inv,
            "Naive loop (one forward and backward per sample, and per class for Exact): timed on the first {0:N0} samples and scaled linearly to {1:N0} (×{2:0.##}).",
            naiveSamples, samples, scale));
        output.WriteLine(string.Format(inv,
            "Difference: max |Compute − NaiveLoop| / max |NaiveLoop| per parameter tensor, the largest over the tensors, on those {0:N0} samples. Times: median of {1} interleaved runs per side.",
            naiveSamples, Repetitions));
        output.WriteLine();
        output.WriteLine(string.Format(inv, "{0,-10} {1,12} {2,21} {3,9} {4,15}  {5}", "kind", "Compute (s)", "NaiveLoop (s, scaled)",
            "speed-up", "max rel. diff", string.Format(inv, "target (≥ {0}×, ≤ {1:0e0})", TargetSpeedUp, Tolerance)));

        var routing = new List<string>();
        foreach (var kind in new[] { FisherKind.Exact, FisherKind.Empirical })
        {
            // Warm-up on a few samples: the first calls pay for allocator growth and kernel selection.
            Fisher.Compute(model, data, kind, maxSamples: Math.Min(50, samples)).Dispose();
            Fisher.NaiveLoop(model, data, kind, maxSamples: Math.Min(10, samples)).Dispose();

            FisherResult? naive = null, fast = null;
            var timing = StepBench.Compare(kind.ToString(),
                baseline: () => { naive?.Dispose(); naive = Fisher.NaiveLoop(model, data, kind, maxSamples: naiveSamples); },
                candidate: () => { fast?.Dispose(); fast = Fisher.Compute(model, data, kind); },
                warmup: 0, repetitions: Repetitions, stepsPerRepetition: 1);
            using var fastSubset = Fisher.Compute(model, data, kind, maxSamples: naiveSamples);
            var difference = naive!.Diagonal.Max(p => RelativeDifference(fastSubset.Diagonal[p.Key], p.Value));
            var naiveSeconds = timing.BaselineMedian * scale;
            var speedUp = naiveSeconds / timing.CandidateMedian;
            var met = speedUp >= TargetSpeedUp && difference <= Tolerance;
            output.WriteLine(string.Format(inv, "{0,-10} {1,12:0.000} {2,21:0.0} {3,8:0.0}× {4,15:0.0e0}  {5}",
                kind, timing.CandidateMedian, naiveSeconds, speedUp, difference, met ? "met" : "NOT met"));
            output.WriteLine(string.Format(inv, "{0,-10} {1,12} {2,21} {3,9}", "  min–max",
                string.Format(inv, "{0:0.000}–{1:0.000}", timing.CandidateSpread.Min, timing.CandidateSpread.Max),
                string.Format(inv, "{0:0.0}–{1:0.0}", timing.BaselineSpread.Min * scale, timing.BaselineSpread.Max * scale),
                string.Format(inv, "{0:0.0}–{1:0.0}×", timing.BaselineSpread.Min * scale / timing.CandidateSpread.Max,
                    timing.BaselineSpread.Max * scale / timing.CandidateSpread.Min)));
            routing.Add(fast!.Describe());
            fast.Dispose();
            naive.Dispose();
        }
        output.WriteLine();
        foreach (var line in routing) output.WriteLine(line);
    }

    /// <summary>max |a − b| / max |b| (the absolute difference when b is all zeros).</summary>
    static double RelativeDifference(Tensor a, Tensor b)
    {
        using var _ = NewDisposeScope();
        var scale = b.abs().max().item<float>();
        var diff = (a - b).abs().max().item<float>();
        return scale == 0 ? diff : diff / scale;
    }
}
