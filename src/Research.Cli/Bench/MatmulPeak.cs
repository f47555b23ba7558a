using System.Diagnostics;
using static TorchSharp.torch;

using Research.Core;
namespace Research.Cli.Bench;

/// <summary>
/// The reference a model's FLOP/s is divided by: the FLOP/s of one large fp32 matrix product C = A·B (n × n by n × n,
/// 2n³ FLOPs: n³ multiplies and n³ adds) on the current intra-op threads — what libtorch's BLAS reaches on this machine
/// when nothing else is in the way, so a step's fraction of it says how much of the step is arithmetic.
/// </summary>
public static class MatmulPeak
{
    /// <summary>The median FLOP/s over <paramref name="repetitions"/> timed products, after untimed ones for a second:
    /// the first products of a process run at ~60% of the later ones (measured here; thread pool start, page faults on
    /// the output, the BLAS's packing buffers).</summary>
    public static double Measure(long n = 1024, int repetitions = 9)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(n, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(repetitions, 1);
        using var scope = NewDisposeScope();
        using var generator = new Generator(1);
        var a = randn([n, n], generator: generator);
        var b = randn([n, n], generator: generator);
        for (var warmup = Stopwatch.StartNew(); warmup.Elapsed < TimeSpan.FromSeconds(1);) a.mm(b).Dispose();
        var seconds = new double[repetitions];
        for (var i = 0; i < repetitions; i++)
        {
            var watch = Stopwatch.StartNew();
            a.mm(b).Dispose();
            seconds[i] = watch.Elapsed.TotalSeconds;
        }
        return 2.0 * n * n * n / StepBench.Median(seconds);
    }
}
