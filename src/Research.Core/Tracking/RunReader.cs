using System.Text.Json;

namespace Research.Core.Tracking;

/// <summary>A run as its store records it: identity, provenance, where it ran and how it ended.</summary>
/// <param name="Status"><c>running</c>, <c>finished</c>, <c>failed</c> or <c>interrupted</c> as recorded, or <c>killed</c>:
/// recorded running, but its process is gone (<see cref="RunStore.Liveness"/>).</param>
/// <param name="Error">Why a failed or interrupted run ended, in one line.</param>
public sealed record RunRecord(
    string Id, string Name, string Status, string StartedUtc, string? EndedUtc, string? ConfigFile, string? ConfigToml,
    string? ResolvedJson, string? Identity, long? Seed, string? DerivedSeeds, string? CodeVersion, string? Packages, string? Plugins,
    long? Threads, string? Device, string? StopReason, string? Error, string? Host, long? Pid, string? HeartbeatUtc);

/// <summary>One evaluation of a split; loss and accuracy are null where the store holds none (a NaN).</summary>
public sealed record EvaluationRow(string RunId, long Step, string Phase, long Epoch, string Split, double? Loss, double? Accuracy, long? Items);

/// <summary>One logged value of a metric at a step; null where the value was not a number.</summary>
public sealed record MetricRow(string RunId, long Step, string Key, double? Value);

/// <summary>A logged value that is a number, at its step.</summary>
public sealed record MetricPoint(long Step, double Value);

/// <summary>
/// A study's matrices of one split: row i after training task i, column j evaluated on task j; NaN where no cell is
/// stored. <see cref="Complete"/> when every cell of the T × T square is there (a study that ran to its end).
/// </summary>
public sealed record StudyMatrix(double[][] Accuracy, double[][] Loss, bool Complete);

/// <summary>A forgetting metric of a study as stored: its value and per-task values, or the reason it failed.</summary>
public sealed record StudyMetricRow(string Name, double? Value, double[]? PerTask, string? Error);

/// <summary>
/// Typed reads of a run store — runs, evaluations, metrics by step, a study's matrices, task names, probes and metrics —
/// for every reader: the CLI, the sweeps' summaries, the metrics recomputed from a record, the plots. The SQL stays here.
/// Opened with <see cref="Open"/> it never writes: a reader works on a read-only file and cannot change what it reads.
/// </summary>
public sealed class RunReader : IDisposable
{
    readonly RunStore _store;
    readonly bool _owns;

    internal RunReader(RunStore store, bool owns) => (_store, _owns) = (store, owns);

    /// <summary>Opens an existing store read-only; a missing file, or one that is not a run store, is one exception naming it
    /// (<see cref="FileNotFoundException"/>, <see cref="InvalidDataException"/>).</summary>
    public static RunReader Open(string path) => new(RunStore.OpenReadOnly(path), owns: true);

    public string Path => _store.Path;

    /// <summary>Probe matrices and per-task values hold NaN where undefined; JSON has no NaN literal.</summary>
    internal static readonly JsonSerializerOptions Json = new() { NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals };

    List<object?[]> Query(string sql, params (string Name, object? Value)[] args) => _store.Query(sql, args);

    /// <summary>Whether this store has a table (a store created before a table existed, or a sweep's, may lack one).</summary>
    internal bool HasTable(string table) =>
        Query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $t", ("$t", table)).Count > 0;

    const string RunColumns = "id, name, status, started_utc, ended_utc, config_file, config_toml, resolved_json, identity, seed, derived_seeds, " +
                              "code_version, packages, plugins, threads, device, stop_reason, error, host, pid, heartbeat_utc";

    RunRecord RunOf(object?[] r) => new(
        (string)r[0]!, (string)r[1]!, Seen((string)r[2]!, r[18] as string, r[19] as long?, r[20] as string, Folder), (string)r[3]!, r[4] as string,
        r[5] as string, r[6] as string, r[7] as string, r[8] as string, r[9] as long?, r[10] as string, r[11] as string, r[12] as string,
        r[13] as string, r[14] as long?, r[15] as string, r[16] as string, r[17] as string, r[18] as string, r[19] as long?, r[20] as string);

    /// <summary>How long another host's run may go without a heartbeat before a reader takes it for killed.</summary>
    static readonly TimeSpan StaleAfter = TimeSpan.FromMinutes(10);

    /// <summary>The folder holding this store: the run folder of the runs it records, whose lock their writer holds.</summary>
    string Folder => System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(Path))!;

    /// <summary>A recorded status as a reader sees it (<see cref="RunStore.Liveness"/>), asking the lock of the run's folder.</summary>
    static string Seen(string status, string? host, long? pid, string? heartbeatUtc, string runFolder) =>
        status != "running" ? status : RunStore.Liveness(status, host, pid, heartbeatUtc, RunLock.IsHeld(runFolder), StaleAfter);

    /// <summary>The status of a run this store holds a copy of (a sweep's merged trial run), as a reader sees it when its
    /// writer's lock is that of <paramref name="runFolder"/>; null when the store has no such run.</summary>
    internal string? StatusWrittenIn(string runId, string runFolder) =>
        Query("SELECT status, host, pid, heartbeat_utc FROM runs WHERE id = $id", ("$id", runId)).FirstOrDefault() is { } r
            ? Seen((string)r[0]!, r[1] as string, r[2] as long?, r[3] as string, runFolder)
            : null;

    /// <summary>Every run the store holds, in the order they started.</summary>
    public IReadOnlyList<RunRecord> Runs() =>
        Query($"SELECT {RunColumns} FROM runs ORDER BY started_utc, rowid").Select(RunOf).ToList();

    /// <summary>The run of that id, or null.</summary>
    public RunRecord? Run(string runId) =>
        Query($"SELECT {RunColumns} FROM runs WHERE id = $id", ("$id", runId)).Select(RunOf).FirstOrDefault();

    /// <summary>The status of a run as a reader sees it (<see cref="RunRecord.Status"/>: a run recorded running whose process is
    /// gone is <c>killed</c>), or null when the store has no such run.</summary>
    public string? Status(string runId) => Run(runId)?.Status;

    /// <summary>The run that finished last, or null when none finished.</summary>
    public string? LastFinished() =>
        Query("SELECT id FROM runs WHERE status = 'finished' ORDER BY ended_utc DESC LIMIT 1").FirstOrDefault()?[0] as string;

    /// <summary>
    /// Whether the run trained to its end and stored what it computed: it finished, or it failed only in computing a
    /// study's metrics afterwards — a study stores its matrices, task names and probes before its metrics, and a metric
    /// that fails is stored with its reason, so the rows of the other metrics are there to read.
    /// </summary>
    public bool Completed(string runId) => Query($"SELECT 1 FROM runs r WHERE r.id = $r AND {CompletedSql}", ("$r", runId)).Count > 0;

    /// <summary><see cref="Completed"/> as a condition on a run <c>r</c>.</summary>
    internal const string CompletedSql =
        "(r.status = 'finished' OR (r.status = 'failed' AND EXISTS (SELECT 1 FROM study_values v WHERE v.run_id = r.id AND v.kind = 'metric')))";

    /// <summary>The evaluations of a run (every run's when <paramref name="runId"/> is null), by run, step and split.</summary>
    public IReadOnlyList<EvaluationRow> Evaluations(string? runId = null) =>
        Query("SELECT run_id, step, phase, epoch, split, loss, accuracy, items FROM evaluations WHERE $r IS NULL OR run_id = $r ORDER BY run_id, step, split, rowid",
                ("$r", runId))
            .Select(r => new EvaluationRow((string)r[0]!, (long)r[1]!, (string)r[2]!, (long)r[3]!, (string)r[4]!, r[5] as double?, r[6] as double?, r[7] as long?))
            .ToList();

    /// <summary>Every logged metric row of a run (every run's when <paramref name="runId"/> is null), by run, step and key.</summary>
    public IReadOnlyList<MetricRow> Metrics(string? runId = null) =>
        Query("SELECT run_id, step, key, value FROM metrics WHERE $r IS NULL OR run_id = $r ORDER BY run_id, step, key", ("$r", runId))
            .Select(r => new MetricRow((string)r[0]!, (long)r[1]!, (string)r[2]!, r[3] as double?))
            .ToList();

    /// <summary>The values of one metric that are numbers, by step: a run's, or every run's when <paramref name="runId"/> is null.</summary>
    public IReadOnlyList<MetricPoint> Metric(string? runId, string key) =>
        Query("SELECT step, value FROM metrics WHERE ($r IS NULL OR run_id = $r) AND key = $k AND value IS NOT NULL ORDER BY step, rowid",
                ("$r", runId), ("$k", key))
            .Select(r => new MetricPoint((long)r[0]!, (double)r[1]!))
            .ToList();

    /// <summary>The last logged value of a metric (null when it was never logged or is not a number).</summary>
    public double? LastMetric(string runId, string key) =>
        Query("SELECT value FROM metrics WHERE run_id = $r AND key = $k ORDER BY step DESC, rowid DESC LIMIT 1", ("$r", runId), ("$k", key))
            .FirstOrDefault()?[0] as double?;

    /// <summary>
    /// The final <paramref name="column"/> (<c>accuracy</c> or <c>loss</c>) of a split: for a study, the average over
    /// the tasks after the last task; otherwise the run's last evaluation of that split. Null when there is none.
    /// </summary>
    public double? Final(string runId, string split, string column = "accuracy")
    {
        if (column is not ("accuracy" or "loss")) throw new ArgumentException($"column must be accuracy or loss, not {column}", nameof(column));
        if (Query("SELECT MAX(after_task) FROM study_matrix WHERE run_id = $r", ("$r", runId)).FirstOrDefault()?[0] is long last)
            return Query($"SELECT AVG({column}) FROM study_matrix WHERE run_id = $r AND split = $s AND after_task = $t",
                ("$r", runId), ("$s", split), ("$t", last)).FirstOrDefault()?[0] as double?;
        return Query($"SELECT {column} FROM evaluations WHERE run_id = $r AND split = $s ORDER BY step DESC, rowid DESC LIMIT 1",
            ("$r", runId), ("$s", split)).FirstOrDefault()?[0] as double?;
    }

    /// <summary>A study's matrices of a split (<c>test</c> or <c>val</c>), or null when the run stored none.</summary>
    public StudyMatrix? Matrix(string runId, string split)
    {
        var cells = Query("SELECT after_task, on_task, loss, accuracy FROM study_matrix WHERE run_id = $r AND split = $s", ("$r", runId), ("$s", split));
        if (cells.Count == 0) return null;
        int rows = (int)cells.Max(c => (long)c[0]!) + 1, columns = (int)cells.Max(c => (long)c[1]!) + 1;
        double[][] Filled() => Enumerable.Range(0, rows).Select(_ => Enumerable.Repeat(double.NaN, columns).ToArray()).ToArray();
        var (loss, accuracy) = (Filled(), Filled());
        foreach (var c in cells)
        {
            int i = (int)(long)c[0]!, j = (int)(long)c[1]!;
            (loss[i][j], accuracy[i][j]) = (c[2] as double? ?? double.NaN, c[3] as double? ?? double.NaN);
        }
        bool complete = rows == columns && cells.Select(c => ((long)c[0]!, (long)c[1]!)).Distinct().Count() == rows * columns;
        return new StudyMatrix(accuracy, loss, complete);
    }

    /// <summary>A study's task names, or null when the run stored none (a training run, or a study stored before they were kept).</summary>
    public IReadOnlyList<string>? TaskNames(string runId) =>
        Query("SELECT json FROM study_values WHERE run_id = $r AND kind = 'tasks' AND name = 'names' LIMIT 1", ("$r", runId)).FirstOrDefault()?[0] is string json
            ? JsonSerializer.Deserialize<string[]>(json)
            : null;

    /// <summary>A study's probes by name (each a matrix, row i written at the end of task i); empty when it stored none.</summary>
    public IReadOnlyDictionary<string, double[][]> Probes(string runId) =>
        Query("SELECT name, json FROM study_values WHERE run_id = $r AND kind = 'probe' ORDER BY rowid", ("$r", runId))
            .ToDictionary(r => (string)r[0]!, r => JsonSerializer.Deserialize<double[][]>((string)r[1]!, Json)!);

    /// <summary>A study's forgetting metrics by name: each value, or the reason it failed.</summary>
    public IReadOnlyList<StudyMetricRow> StudyMetrics(string runId) =>
        Query("SELECT name, value, json FROM study_values WHERE run_id = $r AND kind = 'metric' ORDER BY name", ("$r", runId))
            .Select(r =>
            {
                var (perTask, error) = ((double[]?)null, (string?)null);
                if (r[2] is string json)
                {
                    using var doc = JsonDocument.Parse(json);
                    if (doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("error", out var e)) error = e.GetString();
                    else if (doc.RootElement.ValueKind == JsonValueKind.Array) perTask = doc.RootElement.Deserialize<double[]>(Json);
                }
                return new StudyMetricRow((string)r[0]!, r[1] as double?, perTask, error);
            })
            .ToList();

    /// <summary>A study metric's value, or null when the run has none (or it failed).</summary>
    public double? StudyMetric(string runId, string name) =>
        Query("SELECT value FROM study_values WHERE run_id = $r AND kind = 'metric' AND name = $n", ("$r", runId), ("$n", name)).FirstOrDefault()?[0] as double?;

    /// <summary>Whether any run in the store is a study (it stored a study value).</summary>
    public bool HasStudies() => Query("SELECT 1 FROM study_values LIMIT 1").Count > 0;

    /// <summary>The folder of the run's newest recorded checkpoint (its final one), or null.</summary>
    public string? LastCheckpoint(string runId) =>
        Query("SELECT path FROM artifacts WHERE run_id = $r AND kind = 'checkpoint' ORDER BY rowid DESC LIMIT 1", ("$r", runId)).FirstOrDefault()?[0] as string;

    public void Dispose()
    {
        if (_owns) _store.Dispose();
    }
}
