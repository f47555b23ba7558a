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
/// <remarks>
/// Every read checks what it returns against what a run can have written, so a damaged or hand-edited store is refused
/// here, once, for every command, with one <see cref="InvalidDataException"/> line naming the store's folder, the table,
/// the row and what is wrong: a value of the wrong type; an accuracy outside [0, 1]; a loss that is negative or not
/// finite (NULL, a NaN, stays "not evaluated"); a study cell for a task the study does not have, or a cell twice; a study
/// that ran to its end without its square T × T matrix; task names, probes and metrics that are not the JSON they must
/// be, or that have more rows than the study has tasks.
/// </remarks>
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

    RunRecord RunOf(object?[] values)
    {
        var r = new Row(this, "runs", values);
        string T(int i) => r.Text(i, RunColumnNames[i - 1]);
        string? O(int i) => r.TextOrNull(i, RunColumnNames[i - 1]);
        long? N(int i) => r.IntegerOrNull(i, RunColumnNames[i - 1]);
        return new(T(1), T(2), Seen(T(3), O(19), N(20), O(21), Folder), T(4), O(5), O(6), O(7), O(8), O(9), N(10), O(11), O(12), O(13), O(14), N(15), O(16), O(17), O(18),
            O(19), N(20), O(21));
    }

    static readonly string[] RunColumnNames = RunColumns.Split(", ");

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
        Query("SELECT rowid, status, host, pid, heartbeat_utc FROM runs WHERE id = $id", ("$id", runId)).FirstOrDefault() is { } v
            && new Row(this, "runs", v) is var r
            ? Seen(r.Text(1, "status"), r.TextOrNull(2, "host"), r.IntegerOrNull(3, "pid"), r.TextOrNull(4, "heartbeat_utc"), runFolder)
            : null;

    /// <summary>Every run the store holds, in the order they started.</summary>
    public IReadOnlyList<RunRecord> Runs() =>
        Query($"SELECT rowid, {RunColumns} FROM runs ORDER BY started_utc, rowid").Select(RunOf).ToList();

    /// <summary>The run of that id, or null.</summary>
    public RunRecord? Run(string runId) =>
        Query($"SELECT rowid, {RunColumns} FROM runs WHERE id = $id", ("$id", runId)).Select(RunOf).FirstOrDefault();

    /// <summary>The status of a run as a reader sees it (<see cref="RunRecord.Status"/>: a run recorded running whose process is
    /// gone is <c>killed</c>), or null when the store has no such run.</summary>
    public string? Status(string runId) => Run(runId)?.Status;

    /// <summary>The run that finished last, or null when none finished.</summary>
    public string? LastFinished() =>
        Query("SELECT rowid, id FROM runs WHERE status = 'finished' ORDER BY ended_utc DESC LIMIT 1").Select(v => new Row(this, "runs", v).Text(1, "id")).FirstOrDefault();

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
        Query("SELECT rowid, run_id, step, phase, epoch, split, loss, accuracy, items FROM evaluations WHERE $r IS NULL OR run_id = $r ORDER BY run_id, step, split, rowid",
                ("$r", runId))
            .Select(v =>
            {
                var r = new Row(this, "evaluations", v);
                return new EvaluationRow(r.Text(1, "run_id"), r.Integer(2, "step"), r.Text(3, "phase"), r.Integer(4, "epoch"), r.Text(5, "split"),
                    r.Loss(6), r.Accuracy(7), r.IntegerOrNull(8, "items"));
            })
            .ToList();

    /// <summary>Every logged metric row of a run (every run's when <paramref name="runId"/> is null), by run, step and key.</summary>
    public IReadOnlyList<MetricRow> Metrics(string? runId = null) =>
        Query("SELECT rowid, run_id, step, key, value FROM metrics WHERE $r IS NULL OR run_id = $r ORDER BY run_id, step, key", ("$r", runId))
            .Select(v =>
            {
                var r = new Row(this, "metrics", v);
                return new MetricRow(r.Text(1, "run_id"), r.Integer(2, "step"), r.Text(3, "key"), r.Real(4, "value"));
            })
            .ToList();

    /// <summary>The values of one metric that are numbers, by step: a run's, or every run's when <paramref name="runId"/> is null.</summary>
    public IReadOnlyList<MetricPoint> Metric(string? runId, string key) =>
        Query("SELECT rowid, step, value FROM metrics WHERE ($r IS NULL OR run_id = $r) AND key = $k AND value IS NOT NULL ORDER BY step, rowid",
                ("$r", runId), ("$k", key))
            .Select(v =>
            {
                var r = new Row(this, "metrics", v);
                return new MetricPoint(r.Integer(1, "step"), r.Real(2, "value")!.Value);
            })
            .ToList();

    /// <summary>The last logged value of a metric (null when it was never logged or is not a number).</summary>
    public double? LastMetric(string runId, string key) =>
        Query("SELECT rowid, value FROM metrics WHERE run_id = $r AND key = $k ORDER BY step DESC, rowid DESC LIMIT 1", ("$r", runId), ("$k", key))
            .Select(v => new Row(this, "metrics", v).Real(1, "value")).FirstOrDefault();

    /// <summary>The last logged value (by step, then as written) of every metric of a run whose key starts with
    /// <paramref name="prefix"/> (<c>plugin/</c>: what the plugins logged), by key.</summary>
    public IReadOnlyList<MetricRow> LastMetrics(string runId, string prefix) =>
        Query("""
              SELECT rowid, run_id, step, key, value FROM metrics m
              WHERE run_id = $r AND substr(key, 1, length($p)) = $p AND NOT EXISTS (SELECT 1 FROM metrics n
                WHERE n.run_id = m.run_id AND n.key = m.key AND (n.step > m.step OR (n.step = m.step AND n.rowid > m.rowid)))
              ORDER BY key
              """, ("$r", runId), ("$p", prefix))
            .Select(v =>
            {
                var r = new Row(this, "metrics", v);
                return new MetricRow(r.Text(1, "run_id"), r.Integer(2, "step"), r.Text(3, "key"), r.Real(4, "value"));
            })
            .ToList();

    /// <summary>
    /// The final <paramref name="column"/> (<c>accuracy</c> or <c>loss</c>) of a split: for a study, the average over
    /// the tasks after the last task; otherwise the run's last evaluation of that split. Null when there is none.
    /// </summary>
    public double? Final(string runId, string split, string column = "accuracy")
    {
        if (column is not ("accuracy" or "loss")) throw new ArgumentException($"column must be accuracy or loss, not {column}", nameof(column));
        if (Query("SELECT 1 FROM study_matrix WHERE run_id = $r LIMIT 1", ("$r", runId)).Count > 0)
        {
            // The study's last row of the split, read (and checked) as its matrix; a cell not evaluated does not count.
            if (Matrix(runId, split) is not { } m) return null;
            var last = (column == "accuracy" ? m.Accuracy : m.Loss)[^1].Where(v => !double.IsNaN(v)).ToList();
            return last.Count == 0 ? null : last.Average();
        }
        return Query($"SELECT rowid, {column} FROM evaluations WHERE run_id = $r AND split = $s ORDER BY step DESC, rowid DESC LIMIT 1",
                ("$r", runId), ("$s", split))
            .Select(v => column == "accuracy" ? new Row(this, "evaluations", v).Accuracy(1) : new Row(this, "evaluations", v).Loss(1)).FirstOrDefault();
    }

    /// <summary>
    /// A study's matrices of a split (<c>test</c> or <c>val</c>), or null when the run stored none. The study has T tasks:
    /// as many as its stored task names, or (a study that has not reached its end) as many as the tasks its cells were
    /// evaluated on. Every cell is for a task in 0 … T−1, at most once; every row is whole but a study's last while it has
    /// not reached its end (it is written cell by cell); a study that reached its end has the square T × T.
    /// </summary>
    public StudyMatrix? Matrix(string runId, string split)
    {
        var cells = Query("SELECT rowid, after_task, on_task, loss, accuracy FROM study_matrix WHERE run_id = $r AND split = $s ORDER BY rowid",
                ("$r", runId), ("$s", split))
            .Select(v =>
            {
                var r = new Row(this, "study_matrix", v);
                return (Row: r.RowId, I: r.Integer(1, "after_task"), J: r.Integer(2, "on_task"), Loss: r.Loss(3), Accuracy: r.Accuracy(4));
            })
            .ToList();
        if (cells.Count == 0) return null;
        var names = TaskNames(runId);
        int tasks = names?.Count ?? cells.Select(c => c.J).Distinct().Count();
        var first = new Dictionary<(long, long), long>();
        foreach (var c in cells)
        {
            foreach (var (column, task) in new[] { ("after_task", c.I), ("on_task", c.J) })
                if (task < 0 || task >= tasks)
                    throw Damaged("study_matrix", c.Row, $"{column} {task} is outside the study's {tasks} tasks (0–{tasks - 1}) in run {runId}");
            if (!first.TryAdd((c.I, c.J), c.Row))
                throw Damaged("study_matrix", c.Row, $"a second {split} cell after task {c.I} on task {c.J} of run {runId} (row {first[(c.I, c.J)]} is the first)");
        }
        int rows = (int)cells.Max(c => c.I) + 1;
        var perRow = cells.GroupBy(c => c.I).ToDictionary(g => g.Key, g => g.Count());
        for (int i = 0; i < rows; i++)
        {
            int held = perRow.GetValueOrDefault(i);
            bool mayBePartial = names is null && i == rows - 1;
            if (held < tasks && !mayBePartial)
                throw Damaged("study_matrix", LastRow(cells.Where(c => c.I <= i).Select(c => c.Row)),
                    $"run {runId}'s {split} row after task {i} holds {held} of its {tasks} cells" + (names is null ? " though later rows were written" : ""));
        }
        if (names is not null && rows != tasks)
            throw Damaged("study_matrix", LastRow(cells.Select(c => c.Row)),
                $"run {runId} ran to its end over {tasks} tasks but its {split} matrix has {rows} rows, not the square {tasks} × {tasks}");
        double[][] Filled() => Enumerable.Range(0, rows).Select(_ => Enumerable.Repeat(double.NaN, tasks).ToArray()).ToArray();
        var (loss, accuracy) = (Filled(), Filled());
        foreach (var c in cells) (loss[c.I][c.J], accuracy[c.I][c.J]) = (c.Loss ?? double.NaN, c.Accuracy ?? double.NaN);
        return new StudyMatrix(accuracy, loss, rows == tasks && cells.Count == tasks * tasks);
    }

    /// <summary>The last of some rows (the one a message names where a whole row of a matrix is wrong).</summary>
    static long LastRow(IEnumerable<long> rows) => rows.DefaultIfEmpty(-1).Max();

    /// <summary>A study's task names, or null when the run stored none (a training run, or a study stored before they were kept).</summary>
    public IReadOnlyList<string>? TaskNames(string runId)
    {
        var rows = Query("SELECT rowid, json FROM study_values WHERE run_id = $r AND kind = 'tasks' AND name = 'names' ORDER BY rowid LIMIT 1", ("$r", runId));
        if (rows.Count == 0) return null;
        var r = new Row(this, "study_values", rows[0]);
        var names = r.Json<string?[]>(1, $"run {runId}'s task names", Json);
        if (names is null || names.Length == 0 || names.Any(n => n is null))
            throw Damaged("study_values", r.RowId, $"run {runId}'s task names are not a non-empty JSON list of names");
        return Array.ConvertAll(names, n => n!);
    }

    /// <summary>The tasks of a study as far as its record knows them: its task names, else the tasks its test cells were
    /// evaluated on; null when it has neither.</summary>
    int? TaskCount(string runId) => TaskNames(runId)?.Count is { } n ? n
        : Query("SELECT COUNT(DISTINCT on_task) FROM study_matrix WHERE run_id = $r AND split = 'test'", ("$r", runId)).FirstOrDefault()?[0] is long t and > 0
            ? (int)t : null;

    /// <summary>A study's probes by name (each a matrix, row i written at the end of task i, at most one row per task); empty
    /// when it stored none.</summary>
    public IReadOnlyDictionary<string, double[][]> Probes(string runId)
    {
        var tasks = TaskCount(runId);
        var probes = new Dictionary<string, double[][]>();
        foreach (var v in Query("SELECT rowid, name, json FROM study_values WHERE run_id = $r AND kind = 'probe' ORDER BY rowid", ("$r", runId)))
        {
            var r = new Row(this, "study_values", v);
            var name = r.Text(1, "name");
            var matrix = r.Json<double[]?[]>(2, $"run {runId}'s probe '{name}'", Json);
            if (matrix is null || matrix.Any(row => row is null))
                throw Damaged("study_values", r.RowId, $"run {runId}'s probe '{name}' is not a JSON matrix of numbers");
            if (matrix.Length > tasks)
                throw Damaged("study_values", r.RowId, $"run {runId}'s probe '{name}' has {matrix.Length} rows, more than the study's {tasks} tasks");
            if (!probes.TryAdd(name, Array.ConvertAll(matrix, row => row!)))
                throw Damaged("study_values", r.RowId, $"run {runId} holds its probe '{name}' twice");
        }
        return probes;
    }

    /// <summary>A study's forgetting metrics by name: each value, or the reason it failed.</summary>
    public IReadOnlyList<StudyMetricRow> StudyMetrics(string runId)
    {
        var tasks = TaskCount(runId);
        return Query("SELECT rowid, name, value, json FROM study_values WHERE run_id = $r AND kind = 'metric' ORDER BY name", ("$r", runId))
            .Select(v =>
            {
                var r = new Row(this, "study_values", v);
                var name = r.Text(1, "name");
                var (perTask, error) = ((double[]?)null, (string?)null);
                if (r.TextOrNull(3, "json") is { } json)
                {
                    var what = $"run {runId}'s metric '{name}'";
                    using var doc = r.Parse(json, what);
                    if (doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("error", out var e) && e.ValueKind == JsonValueKind.String)
                        error = e.GetString();
                    else if (doc.RootElement.ValueKind == JsonValueKind.Array)
                    {
                        try { perTask = doc.RootElement.Deserialize<double[]>(Json); }
                        catch (JsonException) { throw Damaged("study_values", r.RowId, $"{what}: its per-task values are not a JSON list of numbers"); }
                        if (perTask!.Length > tasks)
                            throw Damaged("study_values", r.RowId, $"{what} has {perTask.Length} per-task values, more than the study's {tasks} tasks");
                    }
                    else if (doc.RootElement.ValueKind != JsonValueKind.Null)
                        throw Damaged("study_values", r.RowId, $"{what}: its JSON is neither per-task values nor the reason it failed");
                }
                return new StudyMetricRow(name, r.Real(2, "value"), perTask, error);
            })
            .ToList();
    }

    /// <summary>A study metric's value, or null when the run has none (or it failed).</summary>
    public double? StudyMetric(string runId, string name) =>
        Query("SELECT rowid, value FROM study_values WHERE run_id = $r AND kind = 'metric' AND name = $n", ("$r", runId), ("$n", name))
            .Select(v => new Row(this, "study_values", v).Real(1, "value")).FirstOrDefault();

    /// <summary>Whether any run in the store is a study (it stored a study value).</summary>
    public bool HasStudies() => Query("SELECT 1 FROM study_values LIMIT 1").Count > 0;

    /// <summary>The folder of the run's newest recorded checkpoint (its final one), or null.</summary>
    public string? LastCheckpoint(string runId) =>
        Query("SELECT rowid, path FROM artifacts WHERE run_id = $r AND kind = 'checkpoint' ORDER BY rowid DESC LIMIT 1", ("$r", runId))
            .Select(v => new Row(this, "artifacts", v).Text(1, "path")).FirstOrDefault();

    /// <summary>The one line that refuses a damaged record: the store's folder and file, the table, the row (SQLite's rowid)
    /// and what is wrong.</summary>
    InvalidDataException Damaged(string table, long row, string what)
    {
        var full = System.IO.Path.GetFullPath(Path);
        return new($"damaged run record in {System.IO.Path.GetDirectoryName(full)} ({System.IO.Path.GetFileName(full)}, table {table}, row {row}): {what}");
    }

    /// <summary>One row of a query whose first column is its rowid, read column by column with the type checked: SQLite
    /// keeps any value in any column, so a value of another type is a damaged record, named with its table and row.</summary>
    readonly struct Row(RunReader reader, string table, object?[] values)
    {
        public long RowId => values[0] is long id ? id : -1;

        InvalidDataException Wrong(int i, string column, string expected) =>
            reader.Damaged(table, RowId, $"{column} is {Describe(values[i])}, not {expected}");

        static string Describe(object? v) => v switch
        {
            null => "NULL",
            string s => $"the text '{(s.Length > 40 ? s[..40] + "…" : s)}'",
            byte[] b => $"a blob of {b.Length} bytes",
            _ => Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture) ?? "",
        };

        public string Text(int i, string column) => values[i] as string ?? throw Wrong(i, column, "text");
        public string? TextOrNull(int i, string column) => values[i] is null or string ? (string?)values[i] : throw Wrong(i, column, "text");
        public long Integer(int i, string column) => values[i] is long n ? n : throw Wrong(i, column, "an integer");
        public long? IntegerOrNull(int i, string column) => values[i] is null or long ? (long?)values[i] : throw Wrong(i, column, "an integer");

        /// <summary>A number, or null where the store holds none (SQLite stores a NaN as NULL).</summary>
        public double? Real(int i, string column) => values[i] switch
        {
            null => null,
            double d => d,
            long n => n,
            _ => throw Wrong(i, column, "a number"),
        };

        /// <summary>An accuracy: a fraction in [0, 1], or null (not evaluated).</summary>
        public double? Accuracy(int i)
        {
            var a = Real(i, "accuracy");
            return a is { } x && !(x >= 0 && x <= 1) ? throw reader.Damaged(table, RowId, $"accuracy {Describe(x)} is outside [0, 1]") : a;
        }

        /// <summary>A loss: a finite mean of per-item losses ≥ 0, or null (not evaluated).</summary>
        public double? Loss(int i)
        {
            var l = Real(i, "loss");
            return l is { } x && !(double.IsFinite(x) && x >= 0) ? throw reader.Damaged(table, RowId, $"loss {Describe(x)} is not a finite value ≥ 0") : l;
        }

        /// <summary>A JSON text deserialised; text that is not that JSON is a damaged record saying what it should hold.</summary>
        public T? Json<T>(int i, string what, JsonSerializerOptions options)
        {
            var text = Text(i, "json");
            try { return JsonSerializer.Deserialize<T>(text, options); }
            catch (JsonException e) { throw NotJson(what, e); }
        }

        /// <summary>A JSON text as a document, under the same rule.</summary>
        public JsonDocument Parse(string json, string what)
        {
            try { return JsonDocument.Parse(json); }
            catch (JsonException e) { throw NotJson(what, e); }
        }

        InvalidDataException NotJson(string what, JsonException e) =>
            reader.Damaged(table, RowId, $"{what}: not the JSON it must be ({e.Message.Split(" Path:")[0].TrimEnd('.')})");
    }

    public void Dispose()
    {
        if (_owns) _store.Dispose();
    }
}
