using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Research.Core.Bench;

/// <summary>
/// The timings of one baseline-versus-candidate comparison: seconds per step of each repetition, for each side,
/// in the order the repetitions ran.
/// </summary>
public sealed record StepComparison(
    string Label,
    IReadOnlyList<double> BaselineSeconds,
    IReadOnlyList<double> CandidateSeconds,
    int Warmup,
    int StepsPerRepetition)
{
    public double BaselineMedian => StepBench.Median(BaselineSeconds);
    public double CandidateMedian => StepBench.Median(CandidateSeconds);
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
        var baselineSeconds = new List<double>(repetitions);
        var candidateSeconds = new List<double>(repetitions);
        for (var r = 0; r < repetitions; r++)
        {
            if (r % 2 == 0)
            {
                baselineSeconds.Add(SecondsPerStep(baseline, stepsPerRepetition));
                candidateSeconds.Add(SecondsPerStep(candidate, stepsPerRepetition));
            }
            else
            {
                candidateSeconds.Add(SecondsPerStep(candidate, stepsPerRepetition));
                baselineSeconds.Add(SecondsPerStep(baseline, stepsPerRepetition));
            }
        }
        return new StepComparison(label, baselineSeconds, candidateSeconds, warmup, stepsPerRepetition);
    }

    static double SecondsPerStep(Action step, int steps)
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        var watch = Stopwatch.StartNew();
        for (var i = 0; i < steps; i++) step();
        return watch.Elapsed.TotalSeconds / steps;
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
    /// and the ratio candidate/baseline. The header names the repetitions and steps of the first row.
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
        sb.AppendLine($"{"label".PadRight(labelWidth)}  {"baseline ms/step",16}  {"spread",17}  {"candidate ms/step",17}  {"spread",17}  {"ratio c/b",9}");
        foreach (var r in results)
            sb.AppendLine($"{r.Label.PadRight(labelWidth)}  {Ms(r.BaselineMedian),16}  {Spread(r.BaselineSpread),17}  {Ms(r.CandidateMedian),17}  {Spread(r.CandidateSpread),17}  {r.Ratio.ToString("0.000", inv),9}");
        return sb.ToString();
    }

    /// <summary>Writes <see cref="Format"/> to <paramref name="writer"/> (the console when null).</summary>
    public static void Print(IReadOnlyList<StepComparison> results, TextWriter? writer = null) =>
        (writer ?? Console.Out).Write(Format(results));
}
