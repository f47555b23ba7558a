using System.Text.Json;
using Microsoft.Data.Sqlite;
using Research.Core.Files;

namespace Research.Core.Tracking;

/// <summary>A run store could not be read or written (a full disk, a damaged or read-only file); the message names it.</summary>
public sealed class RunStoreException(string message, Exception inner) : IOException(message, inner);

/// <summary>What the store knows about a run before it starts: identity and everything needed to reproduce it.</summary>
/// <param name="ResolvedJson">The canonical resolved config (<c>ResolvedConfig</c>): every default, plugin options bound.</param>
/// <param name="Identity">Its SHA-256 without the run's name, folder and threads: runs with one identity compute the same thing.</param>
/// <param name="Plugins">The plugin DLLs the run used, as JSON: role, name, path, version, SHA-256.</param>
public sealed record RunInfo(
    string Id, string Name, string ConfigFile, string ConfigToml, string ResolvedJson, string Identity, string Plugins, long Seed,
    string CodeVersion, string Packages, int Threads, string Device);

/// <summary>
/// The run store: one SQLite file per run directory (SQLite's locking is unreliable on the network file
/// systems of clusters; a sweep merges stores). Runs, metrics by step (written in batches, one transaction
/// per flush), evaluations, and artifacts.
/// </summary>
public sealed class RunStore : IDisposable
{
    public const string FileName = "run.sqlite";
    const int FlushEvery = 256;

    /// <summary>Buffered metric rows reach the file at least this often, by a timer, so a process that dies (SIGKILL, a
    /// plugin stuck in a call) loses at most the last two seconds of what it logged.</summary>
    static readonly TimeSpan FlushAfter = TimeSpan.FromSeconds(2);

    // The training thread writes; the flush timer, the watchdog and a process-exit handler write from other threads.
    readonly object _gate = new();
    Timer? _flusher;
    bool _disposed;

    readonly SqliteConnection _db;
    readonly List<(string Run, long Step, string Key, double Value)> _pending = [];

    public string Path { get; }

    /// <summary>Opens (creating or migrating) the store a run writes.</summary>
    public RunStore(string path) : this(path, readOnly: false) { }

    /// <summary>
    /// Opens an existing store for reading (<c>research runs</c>, <c>plot</c>, <c>metrics</c> without <c>--save</c>): it is
    /// never created, migrated or written, so a reader works on a read-only file and cannot change a run it looks at. A file
    /// that is missing or is not a run store is one <see cref="InvalidDataException"/> naming it.
    /// </summary>
    internal static RunStore OpenReadOnly(string path)
    {
        InputFile.Require(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"no run store at {path}", path);
        try
        {
            var store = new RunStore(path, readOnly: true);
            if (store.Query("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'runs'").Count == 0)
            {
                store.Dispose();
                throw new InvalidDataException($"{path} is not a run store (it has no runs table)");
            }
            return store;
        }
        catch (Exception e) when (e is SqliteException or RunStoreException)
        {
            throw new InvalidDataException($"{path} is not a readable run store: {(e.InnerException ?? e).Message}", e);
        }
    }

    readonly bool _readOnly;

    RunStore(string path, bool readOnly)
    {
        // SQLite reads the file as soon as it opens it: a FIFO would block the command for ever, a device feed it garbage.
        InputFile.Require(path);
        Path = path;
        _readOnly = readOnly;
        if (readOnly)
        {
            _db = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Pooling = false, Mode = SqliteOpenMode.ReadOnly }.ToString());
            _db.Open();
            return;
        }
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!);
        _db = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Pooling = false }.ToString());
        _db.Open();
        Execute("""
            PRAGMA journal_mode = WAL;
            CREATE TABLE IF NOT EXISTS runs (
              id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, started_utc TEXT NOT NULL, ended_utc TEXT,
              config_file TEXT, config_toml TEXT, resolved_json TEXT, seed INTEGER, code_version TEXT, packages TEXT,
              threads INTEGER, device TEXT, error TEXT, stop_reason TEXT, derived_seeds TEXT, host TEXT, pid INTEGER, heartbeat_utc TEXT,
              identity TEXT, plugins TEXT);
            CREATE TABLE IF NOT EXISTS metrics (run_id TEXT NOT NULL, step INTEGER NOT NULL, key TEXT NOT NULL, value REAL);
            CREATE INDEX IF NOT EXISTS metrics_by_run ON metrics (run_id, key, step);
            CREATE TABLE IF NOT EXISTS evaluations (
              run_id TEXT NOT NULL, step INTEGER NOT NULL, epoch INTEGER NOT NULL, phase TEXT NOT NULL, split TEXT NOT NULL,
              loss REAL, accuracy REAL, items INTEGER);
            CREATE TABLE IF NOT EXISTS artifacts (run_id TEXT NOT NULL, kind TEXT NOT NULL, path TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS study_matrix (
              run_id TEXT NOT NULL, after_task INTEGER NOT NULL, on_task INTEGER NOT NULL, split TEXT NOT NULL, loss REAL, accuracy REAL);
            CREATE TABLE IF NOT EXISTS study_values (run_id TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, value REAL, json TEXT);
            """);
        // Stores written by earlier versions lack the newer columns of `runs`: add them (NULL for old rows).
        var columns = Query("PRAGMA table_info(runs)").Select(r => (string)r[1]!).ToHashSet();
        foreach (var (column, type) in new[] { ("stop_reason", "TEXT"), ("derived_seeds", "TEXT"), ("host", "TEXT"), ("pid", "INTEGER"), ("heartbeat_utc", "TEXT"), ("identity", "TEXT"), ("plugins", "TEXT") })
            if (!columns.Contains(column)) Execute($"ALTER TABLE runs ADD COLUMN {column} {type}");
        _flusher = new Timer(_ =>
        {
            try { Flush(); }
            catch (RunStoreException) { }   // the next write on the training thread reports it
            catch (ObjectDisposedException) { }
        }, null, FlushAfter, FlushAfter);
    }

    /// <summary>Runs a statement (<see cref="TrialStore"/> keeps a sweep's own tables in its store through it).</summary>
    internal void Execute(string sql, params (string Name, object? Value)[] args)
    {
        lock (_gate) Guarded(() => Statement(null, sql, args));
    }

    void Statement(SqliteTransaction? tx, string sql, (string Name, object? Value)[] args)
    {
        using var cmd = _db.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = sql;
        foreach (var (n, v) in args) cmd.Parameters.AddWithValue(n, v ?? DBNull.Value);
        cmd.ExecuteNonQuery();
    }

    /// <summary>Every SQLite error (a full disk, a corrupt or read-only file) as one <see cref="RunStoreException"/> naming the store.</summary>
    void Guarded(Action action)
    {
        try { action(); }
        catch (SqliteException e) { throw new RunStoreException($"run store {Path}: {e.Message.Replace("SQLite Error ", "SQLite error ")}", e); }
    }

    public void BeginRun(RunInfo r)
    {
        Execute("""
            INSERT INTO runs (id, name, status, started_utc, config_file, config_toml, resolved_json, identity, plugins, seed, code_version, packages, threads, device)
            VALUES ($id, $name, 'running', $t, $file, $toml, $json, $identity, $plugins, $seed, $code, $pkgs, $threads, $device)
            """, ("$id", r.Id), ("$name", r.Name), ("$t", DateTime.UtcNow.ToString("O")), ("$file", r.ConfigFile), ("$toml", r.ConfigToml),
            ("$json", r.ResolvedJson), ("$identity", r.Identity), ("$plugins", r.Plugins), ("$seed", r.Seed), ("$code", r.CodeVersion), ("$pkgs", r.Packages), ("$threads", r.Threads), ("$device", r.Device));
        Heartbeat(r.Id);
    }

    /// <summary>
    /// Records that the run's process is alive: host, pid and time. A run still marked running whose process is gone was
    /// killed — <see cref="Liveness"/> tells, from these and the run folder's lock.
    /// Trainers and studies call it when a run starts or resumes, at every evaluation and checkpoint, and at task ends.
    /// </summary>
    public void Heartbeat(string runId) =>
        Execute("UPDATE runs SET host = $h, pid = $p, heartbeat_utc = $t WHERE id = $id",
            ("$h", Environment.MachineName), ("$p", Environment.ProcessId), ("$t", DateTime.UtcNow.ToString("O")), ("$id", runId));

    /// <summary>
    /// The status of a run as a reader sees it: <c>finished</c>, <c>failed</c> and <c>interrupted</c> as recorded; a
    /// recorded <c>running</c> becomes <c>killed</c> when its process is gone (SIGKILL, a crash, a lost node), since such a
    /// process records nothing. Told by, in order: the run folder's lock (<paramref name="lockHeld"/>, from
    /// <see cref="RunLock.IsHeld"/>; held means alive on any host, free means gone when the run was written on this host —
    /// another host's lock may not be seen here on a network file system); the recorded pid on this host (gone: killed;
    /// alive is not proof, since pids are reused); another host's heartbeat, older than <paramref name="staleAfter"/>.
    /// Derived when read, never written: readers do not write, and <c>--resume</c> takes such a run up again.
    /// </summary>
    public static string Liveness(string status, string? host, long? pid, string? heartbeatUtc, bool? lockHeld, TimeSpan staleAfter)
    {
        if (status != "running") return status;
        if (lockHeld == true) return "running";
        if (host == Environment.MachineName)
        {
            if (lockHeld == false) return "killed";
            if (pid is { } p)
            {
                try { using var process = System.Diagnostics.Process.GetProcessById((int)p); return process.HasExited ? "killed" : "running"; }
                catch (ArgumentException) { return "killed"; }
            }
        }
        return DateTime.TryParse(heartbeatUtc, null, System.Globalization.DateTimeStyles.RoundtripKind, out var beat) && DateTime.UtcNow - beat > staleAfter
            ? "killed" : "running";
    }

    /// <summary>Marks the run finished or failed; a failed run keeps the one-line reason.</summary>
    public void EndRun(string runId, bool succeeded, string? error = null) => EndRun(runId, succeeded ? "finished" : "failed", error);

    /// <summary>Marks the run with an end status (<c>finished</c>, <c>failed</c>, <c>interrupted</c>) and its reason.</summary>
    public void EndRun(string runId, string status, string? error)
    {
        Flush();
        Execute("UPDATE runs SET status = $s, ended_utc = $t, error = $e WHERE id = $id",
            ("$s", status), ("$t", DateTime.UtcNow.ToString("O")), ("$e", error), ("$id", runId));
    }

    /// <summary>The status of a run as a reader sees it (<see cref="RunReader.Status"/>), or null when the store has no such run.</summary>
    public string? Status(string runId) => Reader.Status(runId);

    RunReader? _reader;

    /// <summary>The typed reads over this store's own connection, for a command that reads what it writes (<c>research
    /// metrics --save</c>, <c>analyze hessian</c>, a sweep's driver). A reader alone opens <see cref="RunReader.Open"/>.</summary>
    public RunReader Reader => _reader ??= new RunReader(this, owns: false);

    /// <summary>The last row of metrics and of evaluations (SQLite's rowid; 0 when empty), after flushing: a checkpoint
    /// records them, and a resume drops what came after.</summary>
    public (long Metrics, long Evaluations) Watermark()
    {
        Flush();
        long Max(string table) => Query($"SELECT COALESCE(MAX(rowid), 0) FROM {table}").First()[0] is long n ? n : 0;
        return (Max("metrics"), Max("evaluations"));
    }

    /// <summary>
    /// Prepares a run to continue from a checkpoint: the rows the interrupted process wrote after it are dropped, since
    /// the resumed run writes them again — metrics and evaluations after the checkpoint's <see cref="Watermark"/>, a
    /// study's matrix rows from <paramref name="studyRows"/> on, its probes and metrics (written at its end), and the
    /// stop reason, which becomes <paramref name="stopReason"/> (the stops the checkpoint knows); the run is running again.
    /// </summary>
    public void ResumeRun(string runId, (long Metrics, long Evaluations) watermark, int studyRows = 0, string? stopReason = null)
    {
        Flush();
        Execute("DELETE FROM metrics WHERE run_id = $id AND rowid > $w", ("$id", runId), ("$w", watermark.Metrics));
        Execute("DELETE FROM evaluations WHERE run_id = $id AND rowid > $w", ("$id", runId), ("$w", watermark.Evaluations));
        Execute("UPDATE runs SET stop_reason = $r WHERE id = $id", ("$r", stopReason), ("$id", runId));
        Execute("DELETE FROM study_matrix WHERE run_id = $id AND after_task >= $n", ("$id", runId), ("$n", studyRows));
        Execute("DELETE FROM study_values WHERE run_id = $id", ("$id", runId));
        Execute("DELETE FROM artifacts WHERE run_id = $id", ("$id", runId));
        Execute("UPDATE runs SET status = 'running', ended_utc = NULL, error = NULL WHERE id = $id", ("$id", runId));
    }

    /// <summary>One cell of a study's evaluation matrix: after training task i, evaluated on task j.</summary>
    public void StudyCell(string runId, int afterTask, int onTask, string split, double loss, double accuracy) =>
        Execute("INSERT INTO study_matrix VALUES ($r, $i, $j, $s, $l, $a)",
            ("$r", runId), ("$i", afterTask), ("$j", onTask), ("$s", split), ("$l", loss), ("$a", accuracy));

    /// <summary>A study value in place of any earlier one of the same kind and name: one transaction, so a reader sees
    /// the old value or the new, never neither.</summary>
    void ReplaceStudyValue(string runId, string kind, string name, double value, string json)
    {
        (string, object?)[] args = [("$r", runId), ("$k", kind), ("$n", name), ("$v", double.IsNaN(value) ? null : value), ("$j", json)];
        lock (_gate)
            Guarded(() =>
            {
                using var tx = _db.BeginTransaction();
                Statement(tx, "DELETE FROM study_values WHERE run_id = $r AND kind = $k AND name = $n", args[..3]);
                Statement(tx, "INSERT INTO study_values VALUES ($r, $k, $n, $v, $j)", args);
                tx.Commit();
            });
    }

    /// <summary>A study's task names, in order (<see cref="RunReader.TaskNames"/>).</summary>
    public void TaskNames(string runId, IReadOnlyList<string> names) =>
        ReplaceStudyValue(runId, "tasks", "names", double.NaN, JsonSerializer.Serialize(names));

    /// <summary>A study's probe by name, replacing an earlier one of that name (<see cref="RunReader.Probes"/>).</summary>
    public void Probe(string runId, string name, double[][] matrix) =>
        ReplaceStudyValue(runId, "probe", name, double.NaN, JsonSerializer.Serialize(matrix, RunReader.Json));

    /// <summary>A study's forgetting metric with its per-task values, replacing an earlier value of that name.</summary>
    public void StudyMetric(string runId, string name, double value, IReadOnlyList<double>? perTask) =>
        ReplaceStudyValue(runId, "metric", name, value, JsonSerializer.Serialize(perTask, RunReader.Json));

    /// <summary>A study's forgetting metric that failed, without a value, with the reason (<see cref="StudyMetricRow.Error"/>).</summary>
    public void StudyMetricFailed(string runId, string name, string error) =>
        ReplaceStudyValue(runId, "metric", name, double.NaN, JsonSerializer.Serialize(new { error }));

    /// <summary>Records why a run ended before its last epoch (early stopping).</summary>
    public void StopReason(string runId, string reason) =>
        Execute("UPDATE runs SET stop_reason = $r WHERE id = $id", ("$r", reason), ("$id", runId));

    /// <summary>Records the seeds derived from the root seed, by stream name (JSON).</summary>
    public void DerivedSeeds(string runId, string json) =>
        Execute("UPDATE runs SET derived_seeds = $s WHERE id = $id", ("$s", json), ("$id", runId));

    /// <summary>The run's TensorBoard event file, when the run writes one: every metric and evaluation recorded here is
    /// written there too (a value the store keeps as NULL, NaN, is left out of both).</summary>
    public TensorBoardWriter? Board { get; private set; }

    /// <summary>Writes this run's metrics and evaluations to <paramref name="board"/> as well, from now on.</summary>
    public void Mirror(TensorBoardWriter board) => Board = board;

    /// <summary>Buffers one metric value; rows reach the file in batches.</summary>
    public void Metric(string runId, long step, string key, double value)
    {
        lock (_gate)
        {
            _pending.Add((runId, step, key, value));
            if (_pending.Count >= FlushEvery) Flush();
        }
        if (!double.IsNaN(value)) Board?.Scalar(TensorBoardWriter.MetricTag(key), step, value);
    }

    public void Evaluation(string runId, long step, int epoch, string phase, string split, double loss, double accuracy, long items)
    {
        Flush();
        Execute("INSERT INTO evaluations VALUES ($r, $s, $e, $p, $sp, $l, $a, $n)",
            ("$r", runId), ("$s", step), ("$e", epoch), ("$p", phase), ("$sp", split),
            ("$l", double.IsNaN(loss) ? null : loss), ("$a", double.IsNaN(accuracy) ? null : accuracy), ("$n", items));
        if (!double.IsNaN(loss)) Board?.Scalar($"{split}/loss", step, loss);
        if (!double.IsNaN(accuracy)) Board?.Scalar($"{split}/accuracy", step, accuracy);
        Board?.Flush();
    }

    public void Artifact(string runId, string kind, string path) =>
        Execute("INSERT INTO artifacts VALUES ($r, $k, $p)", ("$r", runId), ("$k", kind), ("$p", path));

    public void Flush()
    {
        Board?.Flush();
        lock (_gate)
        {
            if (_pending.Count == 0 || _disposed) return;
            Guarded(FlushPending);
        }
    }

    void FlushPending()
    {
        using var tx = _db.BeginTransaction();
        using var cmd = _db.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = "INSERT INTO metrics VALUES ($r, $s, $k, $v)";
        var r = cmd.Parameters.Add("$r", SqliteType.Text);
        var s = cmd.Parameters.Add("$s", SqliteType.Integer);
        var k = cmd.Parameters.Add("$k", SqliteType.Text);
        var v = cmd.Parameters.Add("$v", SqliteType.Real);
        foreach (var row in _pending)
        {
            // SQLite has no NaN: a value that is not a number (the gradient norm of a skipped fp16 step,
            // a norm not measured) is stored as NULL. Infinities are stored as they are.
            r.Value = row.Run; s.Value = row.Step; k.Value = row.Key; v.Value = double.IsNaN(row.Value) ? DBNull.Value : row.Value;
            cmd.ExecuteNonQuery();
        }
        tx.Commit();
        _pending.Clear();
    }

    /// <summary>Runs a query and returns its rows (for the typed reads of <see cref="RunReader"/> and <see cref="TrialStore"/>).</summary>
    internal List<object?[]> Query(string sql, params (string Name, object? Value)[] args)
    {
        lock (_gate)
        {
            Flush();
            var rows = new List<object?[]>();
            Guarded(() =>
            {
                using var cmd = _db.CreateCommand();
                cmd.CommandText = sql;
                foreach (var (n, v) in args) cmd.Parameters.AddWithValue(n, v ?? DBNull.Value);
                using var reader = cmd.ExecuteReader();
                while (reader.Read())
                {
                    var row = new object?[reader.FieldCount];
                    for (int i = 0; i < row.Length; i++) row[i] = reader.IsDBNull(i) ? null : reader.GetValue(i);
                    rows.Add(row);
                }
            });
            return rows;
        }
    }

    /// <summary>Where the store reports what it could not write while closing (the run's observer).</summary>
    public Action<string>? Warn { get; set; }

    public void Dispose()
    {
        _flusher?.Dispose();
        // Dispose runs while an error unwinds (a full disk): it reports what it could not write instead of throwing over it.
        try { Flush(); }
        catch (RunStoreException e) { Warn?.Invoke($"warning: {e.Message}; {_pending.Count} metric rows were not written"); }
        if (!_readOnly)
        {
            // WAL while the run writes (readers do not block it); a closed store goes back to one plain file, so a copy of
            // it is complete and a reader can open it read-only without creating the -wal and -shm files beside it. Another
            // connection still open (a reader, a sweep) keeps it in WAL: that is only a missed tidy-up.
            try { Execute("PRAGMA journal_mode = DELETE"); }
            catch (RunStoreException) { }
        }
        lock (_gate)
        {
            _disposed = true;
            _db.Dispose();
        }
    }
}
