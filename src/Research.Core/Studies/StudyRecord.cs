using System.Text.Json;
using Research.Abstractions;
using Research.Core.Tracking;
using Research.Core.Training;

namespace Research.Core.Studies;

/// <summary>
/// A study's evaluation record in its run store — the test matrices (<c>study_matrix</c>), the task names and the
/// probes (<c>study_values</c>) — and the metrics computed from it. What a study stores is enough to compute any
/// metric again without training (<c>research metrics</c>).
/// </summary>
public static class StudyRecord
{
    // Per-task values are NaN where a metric is undefined (no task after the last); JSON has no NaN literal.
    static readonly JsonSerializerOptions Json = new() { NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals };

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
        store.StudyValue(runId, "tasks", "names", double.NaN, JsonSerializer.Serialize(record.Tasks));
        foreach (var (name, probe) in record.Probes) store.StudyValue(runId, "probe", name, double.NaN, JsonSerializer.Serialize(probe, Json));
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
    public static EvaluationRecord? Load(RunStore store, string runId)
    {
        var cells = store.Query("SELECT after_task, on_task, loss, accuracy FROM study_matrix WHERE run_id = $r AND split = 'test'", ("$r", runId));
        if (cells.Count == 0) return null;
        int t = (int)cells.Max(c => (long)c[1]!) + 1;
        if (cells.Count != t * t || cells.Max(c => (long)c[0]!) != t - 1) return null;
        var (accuracy, loss) = (new double[t][], new double[t][]);
        for (int i = 0; i < t; i++) (accuracy[i], loss[i]) = (new double[t], new double[t]);
        foreach (var c in cells)
        {
            int i = (int)(long)c[0]!, j = (int)(long)c[1]!;
            (loss[i][j], accuracy[i][j]) = (c[2] as double? ?? double.NaN, c[3] as double? ?? double.NaN);
        }
        var values = store.Query("SELECT kind, name, json FROM study_values WHERE run_id = $r AND kind IN ('tasks', 'probe')", ("$r", runId));
        var names = values.FirstOrDefault(v => (string)v[0]! == "tasks") is { } n
            ? JsonSerializer.Deserialize<string[]>((string)n[2]!)!
            : Enumerable.Range(0, t).Select(j => $"task {j}").ToArray();  // stores written before task names were kept
        var probes = values.Where(v => (string)v[0]! == "probe")
            .ToDictionary(v => (string)v[1]!, v => JsonSerializer.Deserialize<double[][]>((string)v[2]!, Json)!);
        return new EvaluationRecord(names, accuracy, loss, probes);
    }

    /// <summary>
    /// Computes each metric of the record; with a store, writes each value (replacing an earlier one of the same name).
    /// A metric that throws is reported, and the others are still computed.
    /// </summary>
    public static (List<(string Name, MetricValue Value)> Values, List<string> Failures) ComputeMetrics(
        IReadOnlyList<GuardedMetric> metrics, EvaluationRecord record, RunStore? store = null, string? runId = null)
    {
        var values = new List<(string, MetricValue)>();
        var failures = new List<string>();
        foreach (var metric in metrics)
        {
            var name = metric.Descriptor.Name;
            store?.Execute("DELETE FROM study_values WHERE run_id = $r AND kind = 'metric' AND name = $n", ("$r", runId), ("$n", name));
            try
            {
                var value = metric.Compute(record);
                values.Add((name, value));
                store?.StudyValue(runId!, "metric", name, value.Value, JsonSerializer.Serialize(value.PerTask, Json));
            }
            catch (PluginFailureException e)
            {
                failures.Add(e.Message);
                store?.StudyValue(runId!, "metric", name, double.NaN, JsonSerializer.Serialize(new { error = e.Message }));
            }
        }
        return (values, failures);
    }
}
