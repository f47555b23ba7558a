using Research.Abstractions;
using Research.Core.Tracking;

namespace Research.Core.Studies;

/// <summary>
/// A study's evaluation record in its run store — the test matrices, the task names and the probes — and the metrics
/// computed from it. What a study stores is enough to compute any metric again without training (<c>research metrics</c>).
/// </summary>
public static class StudyRecord
{
    /// <summary>The evaluation record of a study's rows: the test matrices R and L, the random initialisation's accuracies,
    /// the parameter change per task and every probe row the observers and methods added.</summary>
    public static EvaluationRecord From(IReadOnlyList<string> tasks, Checkpoints.StudyProgress progress)
    {
        var rows = progress.Rows;
        return new EvaluationRecord(tasks, rows.Select(r => r.TestAccuracy).ToArray(), rows.Select(r => r.TestLoss).ToArray(),
            new Dictionary<string, double[][]>
            {
                [ProbeNames.RandomInitAccuracy] = [progress.RandomInit],
                [ProbeNames.ParameterChangeNorm] = rows.Select(r => new[] { r.ChangeNorm }).ToArray(),
            }.Concat(Matrices(rows.Select(r => (IReadOnlyDictionary<string, double[]>?)r.Probes).ToList())).ToDictionary());
    }

    /// <summary>Stores the task names and the probes (the matrices are stored row by row as the study runs).</summary>
    public static void Store(RunStore store, string runId, EvaluationRecord record)
    {
        store.TaskNames(runId, record.Tasks);
        foreach (var (name, probe) in record.Probes) store.Probe(runId, name, probe);
    }

    /// <summary>Probe rows (one per task, each a name → row) as T-row matrices; a task that added no row for a probe gets
    /// NaN of the probe's widest row. The trainer's record and <c>research analyze hessian</c> both assemble theirs here.</summary>
    public static Dictionary<string, double[][]> Matrices(IReadOnlyList<IReadOnlyDictionary<string, double[]>?> rows) =>
        rows.SelectMany(r => r?.Keys ?? Enumerable.Empty<string>()).Distinct().ToDictionary(name => name, name =>
        {
            int width = rows.Max(r => r?.GetValueOrDefault(name)?.Length ?? 0);
            return rows.Select(r => r?.GetValueOrDefault(name) ?? Enumerable.Repeat(double.NaN, width).ToArray()).ToArray();
        });

    /// <summary>The record of a finished study as its store holds it, or null when the run has no complete T × T matrix.</summary>
    public static EvaluationRecord? Load(RunReader store, string runId)
    {
        if (store.Matrix(runId, "test") is not { Complete: true } matrix) return null;
        int t = matrix.Accuracy.Length;
        var names = store.TaskNames(runId)
                    ?? Enumerable.Range(0, t).Select(j => $"task {j}").ToArray();  // stores written before task names were kept
        return new EvaluationRecord(names, matrix.Accuracy, matrix.Loss, store.Probes(runId));
    }
}
