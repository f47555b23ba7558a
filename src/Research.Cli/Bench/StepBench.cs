using System.Diagnostics;
using System.Globalization;
using System.Text;
using Research.Core.Memory;

using Research.Core;
namespace Research.Cli.Bench;

/// <summary>
/// The timings of one baseline-versus-candidate comparison: seconds per step of each repetition, for each side,
/// in the order the repetitions ran; over the same repetitions, the process's CPU seconds per step (user and system, all
/// threads: time spent waiting for a core shared with another job is not in it) and its minor page faults per step (empty
/// where the kernel does not count them).
/// </summary>
public sealed record StepComparison(
    string Label,
    IReadOnlyList<double> BaselineSeconds,
    IReadOnlyList<double> CandidateSeconds,
    int Warmup,
    int StepsPerRepetition,
    IReadOnlyList<double>? BaselineFaults = null,
    IReadOnlyList<double>? CandidateFaults = null,
    IReadOnlyList<double>? BaselineCpuSeconds = null,
    IReadOnlyList<double>? CandidateCpuSeconds = null)
{
    public double BaselineMedian => StepBench.Median(BaselineSeconds);
    public double CandidateMedian => StepBench.Median(CandidateSeconds);

    /// <summary>Median minor page faults per step of the baseline; NaN when not counted.</summary>
    public double BaselineFaultsMedian => MedianOrNaN(BaselineFaults);

    /// <summary>Median minor page faults per step of the candidate; NaN when not counted.</summary>
    public double CandidateFaultsMedian => MedianOrNaN(CandidateFaults);

    /// <summary>Median CPU seconds per step of the baseline; NaN when not measured.</summary>
    public double BaselineCpuMedian => MedianOrNaN(BaselineCpuSeconds);

    /// <summary>Median CPU seconds per step of the candidate; NaN when not measured.</summary>
    public double CandidateCpuMedian => MedianOrNaN(CandidateCpuSeconds);

    static double MedianOrNaN(IReadOnlyList<double>? values) => values is { Count: > 0 } v ? StepBench.Median(v) : double.NaN;

    public (double Min, double Max) BaselineSpread => (BaselineSeconds.Min(), BaselineSeconds.Max());
    public (double Min, double Max) CandidateSpread => (CandidateSeconds.Min(), CandidateSeconds.Max());

    /// <summary>median(candidate) / median(baseline): below 1 the candidate is faster.</summary>
    public double Ratio => CandidateMedian / BaselineMedian;
}

/// <summary>
/// Compares two step functions in one process. Repetitions are interleaved — baseline then candidate, then
/// candidate then baseline, and so on — so drift in the machine's speed (frequency scaling, a neighbour's load,
/// the allocator warming up) falls on both sides alike instead of on whichever ran second. Medians resist the
/// odd slow repetition; the min–max spread shows how far to trust a ratio near 1.
/// </summary>
public static class StepBench
{
    /// <summary>Repetitions per side a comparison should have at least, for a median with a meaningful spread.</summary>
    public const int DefaultRepetitions = 5;

    /// <summary>
    /// Runs <paramref name="warmup"/> steps of each side, then <paramref name="repetitions"/> timed blocks of
    /// <paramref name="stepsPerRepetition"/> steps per side, alternating which side goes first; a full garbage
    /// collection precedes each timed block so finalisers of the previous block's tensors do not land in it.
    /// </summary>
    public static StepComparison Compare(string label, Action baseline, Action candidate, int warmup = 3,
        int repetitions = DefaultRepetitions, int stepsPerRepetition = 10)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(warmup);
        ArgumentOutOfRangeException.ThrowIfLessThan(repetitions, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(stepsPerRepetition, 1);
        for (var i = 0; i < warmup; i++) { baseline(); candidate(); }
        var (b, c) = (new Side(), new Side());
        for (var r = 0; r < repetitions; r++)
        {
            if (r % 2 == 0)
            {
                b.Time(baseline, stepsPerRepetition);
                c.Time(candidate, stepsPerRepetition);
            }
            else
            {
                c.Time(candidate, stepsPerRepetition);
                b.Time(baseline, stepsPerRepetition);
            }
        }
        return new StepComparison(label, b.Seconds, c.Seconds, warmup, stepsPerRepetition, b.Faults, c.Faults, b.CpuSeconds, c.CpuSeconds);
    }

    /// <summary>One side's measurements, per step, one entry per repetition.</summary>
    sealed class Side
    {
        public List<double> Seconds { get; } = [];
        public List<double> CpuSeconds { get; } = [];
        public List<double> Faults { get; } = [];

        public void Time(Action step, int steps)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
            using var process = Process.GetCurrentProcess();
            var cpu = process.TotalProcessorTime;
            var faults = ProcessCounters.MinorFaults();
            var watch = Stopwatch.StartNew();
            for (var i = 0; i < steps; i++) step();
            Seconds.Add(watch.Elapsed.TotalSeconds / steps);
            process.Refresh();
            CpuSeconds.Add((process.TotalProcessorTime - cpu).TotalSeconds / steps);
            if (faults >= 0) Faults.Add((double)(ProcessCounters.MinorFaults() - faults) / steps);
        }
    }

    /// <summary>The middle value (mean of the two middle values for an even count).</summary>
    public static double Median(IReadOnlyList<double> values)
    {
        if (values.Count == 0) throw new ArgumentException("the median of no values is undefined", nameof(values));
        var sorted = values.Order().ToArray();
        var mid = sorted.Length / 2;
        return sorted.Length % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
    }

    /// <summary>
    /// A fixed-width table, one row per comparison: label, median ms/step and min–max spread of each side,
    /// the ratio candidate/baseline, and each side's median CPU ms and minor page faults per step. The header names the
    /// repetitions and steps of the first row.
    /// </summary>
    public static string Format(IReadOnlyList<StepComparison> results)
    {
        var inv = CultureInfo.InvariantCulture;
        static string Ms(double seconds) => (seconds * 1e3).ToString("0.000", CultureInfo.InvariantCulture);
        static string Spread((double Min, double Max) s) => $"{Ms(s.Min)}–{Ms(s.Max)}";
        var labelWidth = Math.Max("label".Length, results.Count == 0 ? 0 : results.Max(r => r.Label.Length));
        var sb = new StringBuilder();
        if (results.Count > 0)
            sb.AppendLine(string.Format(inv, "{0} interleaved repetitions × {1} steps per side, after {2} warm-up steps",
                results[0].BaselineSeconds.Count, results[0].StepsPerRepetition, results[0].Warmup));
        static string Faults(double f) => double.IsNaN(f) ? "–" : f.ToString("N0", CultureInfo.InvariantCulture);
        static string Cpu(double seconds) => double.IsNaN(seconds) ? "–" : (seconds * 1e3).ToString("0.0", CultureInfo.InvariantCulture);
        sb.AppendLine($"{"label".PadRight(labelWidth)}  {"baseline ms/step",16}  {"spread",17}  {"candidate ms/step",17}  {"spread",17}  {"ratio c/b",9}" +
                      $"  {"cpu ms b",8}  {"cpu ms c",8}  {"faults/step b",13}  {"faults/step c",13}");
        foreach (var r in results)
            sb.AppendLine($"{r.Label.PadRight(labelWidth)}  {Ms(r.BaselineMedian),16}  {Spread(r.BaselineSpread),17}  {Ms(r.CandidateMedian),17}  {Spread(r.CandidateSpread),17}  {r.Ratio.ToString("0.000", inv),9}" +
                          $"  {Cpu(r.BaselineCpuMedian),8}  {Cpu(r.CandidateCpuMedian),8}  {Faults(r.BaselineFaultsMedian),13}  {Faults(r.CandidateFaultsMedian),13}");
        return sb.ToString();
    }

    /// <summary>Writes <see cref="Format"/> to <paramref name="writer"/> (the console when null).</summary>
    public static void Print(IReadOnlyList<StepComparison> results, TextWriter? writer = null) =>
        (writer ?? Console.Out).Write(Format(results));
}
