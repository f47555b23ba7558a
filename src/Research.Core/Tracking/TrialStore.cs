namespace Research.Core.Tracking;

/// <summary>What a sweep script says a trial is: its arm, axis labels and levels, seed, config and overrides (as JSON),
/// its command and the trial it starts from.</summary>
public sealed record TrialEntry(
    string Id, string Name, string Arm, string Labels, string Numbers, long Seed, string Config, string Overrides, string? Command, string? Source);

/// <summary>Where a trial is: its state, attempts, the last attempt's exit code and log, and where it runs (executor, job, pid).</summary>
public sealed record TrialState(string State, int Attempts, int? ExitCode, string? Log, string? Executor, string? Job, int? Pid);

/// <summary>A trial as the sweep's store holds it.</summary>
public sealed record TrialRow(TrialEntry Entry, TrialState State);

/// <summary>A run merged from a trial's own store: its status as a reader sees it (<c>killed</c> when recorded running and
/// its process is gone: <see cref="RunStore.Liveness"/>), and whether it completed (<see cref="RunReader.Completed"/>).</summary>
public sealed record MergedRun(string Id, string Status, bool Completed);

/// <summary>
/// A sweep's store: a run store (so every <c>research runs</c> command reads it) with a <c>trials</c> table besides and
/// the link from trials to the runs merged from their own stores.
/// </summary>
public sealed class TrialStore : IDisposable
{
    readonly RunStore _store;
    readonly bool _readOnly;

    TrialStore(RunStore store, bool readOnly) => (_store, _readOnly) = (store, readOnly);

    /// <summary>The runs merged into the sweep's store, for summaries.</summary>
    public RunReader Runs => _store.Reader;

    /// <summary>Opens the sweep's store for its driver, creating (or migrating) the run tables and the trial tables.</summary>
    public static TrialStore Open(string path)
    {
        var store = new RunStore(path);
        store.Execute("""
            CREATE TABLE IF NOT EXISTS trials (
              id TEXT PRIMARY KEY, name TEXT NOT NULL, arm TEXT NOT NULL, labels TEXT NOT NULL, numbers TEXT NOT NULL, seed INTEGER NOT NULL,
              config TEXT NOT NULL, overrides TEXT NOT NULL, canonical TEXT NOT NULL, state TEXT NOT NULL,
              attempts INTEGER NOT NULL DEFAULT 0, exit_code INTEGER, log TEXT, executor TEXT, job TEXT, pid INTEGER,
              updated_utc TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS trial_runs (run_id TEXT PRIMARY KEY, trial_id TEXT NOT NULL);
            """);
        // Columns added since: a trial's command (arms may differ from the sweep's) and the trial it starts from. Stores of
        // earlier versions gain them empty; their trials are then of the sweep's command, without a source.
        var trials = new TrialStore(store, readOnly: false);
        foreach (var column in new[] { "command", "source" })
            if (!trials.HasColumn(column)) store.Execute($"ALTER TABLE trials ADD COLUMN {column} TEXT");
        return trials;
    }

    /// <summary>Opens a sweep's store to read it (<c>research plot sweep</c>): nothing is created or migrated.</summary>
    public static TrialStore OpenReadOnly(string path) => new(RunStore.OpenReadOnly(path), readOnly: true);

    bool HasColumn(string column) =>
        _store.Query("SELECT 1 FROM pragma_table_info('trials') WHERE name = $c", ("$c", column)).Count > 0;

    static string? Text(object? v) => v is null ? null : Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture);
    static int? Int(object? v) => v is null ? null : Convert.ToInt32(v, System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>The trial's state as recorded, or null when the store does not know it.</summary>
    public TrialState? State(string id) =>
        _store.Query("SELECT state, attempts, exit_code, log, executor, job, pid FROM trials WHERE id = $id", ("$id", id))
            .Select(r => new TrialState((string)r[0]!, Int(r[1])!.Value, Int(r[2]), Text(r[3]), Text(r[4]), Text(r[5]), Int(r[6])))
            .FirstOrDefault();

    /// <summary>A new trial, pending, with the canonical resolved config that identifies it.</summary>
    public void Add(TrialEntry e, string canonical) =>
        _store.Execute("""
            INSERT INTO trials (id, name, arm, labels, numbers, seed, config, overrides, canonical, state, updated_utc, command, source)
            VALUES ($id, $name, $arm, $labels, $numbers, $seed, $config, $overrides, $canonical, 'pending', $t, $command, $source)
            """,
            ("$id", e.Id), ("$name", e.Name), ("$arm", e.Arm), ("$labels", e.Labels), ("$numbers", e.Numbers), ("$seed", e.Seed),
            ("$config", e.Config), ("$overrides", e.Overrides), ("$canonical", canonical), ("$t", DateTime.UtcNow.ToString("O")),
            ("$command", e.Command), ("$source", e.Source));

    /// <summary>A known trial as the script describes it now: the script may have relabelled it (its identity is what it
    /// computes, not its labels), and rows of earlier versions gain their command and source.</summary>
    public void Describe(TrialEntry e) =>
        _store.Execute("UPDATE trials SET name = $name, arm = $arm, labels = $labels, numbers = $numbers, command = $command, source = $source WHERE id = $id",
            ("$name", e.Name), ("$arm", e.Arm), ("$labels", e.Labels), ("$numbers", e.Numbers), ("$command", e.Command), ("$source", e.Source), ("$id", e.Id));

    public void Save(string id, TrialState s) =>
        _store.Execute("""
            UPDATE trials SET state = $s, attempts = $a, exit_code = $e, log = $l, executor = $x, job = $j, pid = $p, updated_utc = $t
            WHERE id = $id
            """,
            ("$s", s.State), ("$a", s.Attempts), ("$e", s.ExitCode), ("$l", s.Log), ("$x", s.Executor), ("$j", s.Job), ("$p", s.Pid),
            ("$t", DateTime.UtcNow.ToString("O")), ("$id", id));

    /// <summary>Every trial the store knows (of this and earlier versions of the script), in the order they were added;
    /// none when the store has no trials table (a run store that is not a sweep's).</summary>
    public IReadOnlyList<TrialRow> All()
    {
        if (!Runs.HasTable("trials")) return [];
        // A store of an earlier version opened read-only keeps its older columns.
        string Column(string name) => _readOnly && !HasColumn(name) ? $"NULL AS {name}" : name;
        return _store.Query($"SELECT id, name, arm, labels, numbers, seed, config, overrides, {Column("command")}, {Column("source")}, " +
                            "state, attempts, exit_code, log, executor, job, pid FROM trials ORDER BY rowid")
            .Select(r => new TrialRow(
                new TrialEntry((string)r[0]!, (string)r[1]!, (string)r[2]!, (string)r[3]!, (string)r[4]!, (long)r[5]!, (string)r[6]!, (string)r[7]!, Text(r[8]), Text(r[9])),
                new TrialState((string)r[10]!, Int(r[11])!.Value, Int(r[12]), Text(r[13]), Text(r[14]), Text(r[15]), Int(r[16]))))
            .ToList();
    }

    /// <summary>Run-store tables copied from a trial's store into the sweep's, keyed by run id.</summary>
    static readonly (string Table, string Key)[] RunTables =
        [("runs", "id"), ("metrics", "run_id"), ("evaluations", "run_id"), ("artifacts", "run_id"), ("study_matrix", "run_id"), ("study_values", "run_id")];

    /// <summary>
    /// Copies every run of one of a trial's own stores into this store, replacing what an earlier merge copied of the
    /// same runs, in one transaction. Returns those runs. A store without tables (a trial killed between creating its
    /// file and its tables) holds no run: nothing is merged.
    /// </summary>
    public IReadOnlyList<MergedRun> Merge(string trialId, string trialStoreFile)
    {
        _store.Execute("ATTACH DATABASE $f AS trial", ("$f", trialStoreFile));
        try
        {
            if (_store.Query("SELECT name FROM trial.sqlite_master WHERE type = 'table' AND name = 'runs'").Count == 0) return [];
            // BEGIN/COMMIT as statements: Microsoft.Data.Sqlite would otherwise want the transaction on every command.
            _store.Execute("BEGIN");
            try
            {
                var runs = _store.Query("SELECT id FROM trial.runs").Select(r => (string)r[0]!).ToList();
                foreach (var (table, key) in RunTables)
                {
                    var columns = string.Join(", ", _store.Query($"SELECT name FROM pragma_table_info('{table}', 'trial')").Select(r => (string)r[0]!));
                    foreach (var id in runs) _store.Execute($"DELETE FROM main.{table} WHERE {key} = $id", ("$id", id));
                    if (columns != "") _store.Execute($"INSERT INTO main.{table} ({columns}) SELECT {columns} FROM trial.{table}");
                }
                foreach (var id in runs) _store.Execute("INSERT OR REPLACE INTO trial_runs VALUES ($r, $t)", ("$r", id), ("$t", trialId));
                _store.Execute("COMMIT");
                // Seen with the lock of the trial's run folder, which the copy here does not have beside it.
                var folder = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(trialStoreFile))!;
                return runs.Select(id => new MergedRun(id, Runs.StatusWrittenIn(id, folder)!, Runs.Completed(id))).ToList();
            }
            catch
            {
                _store.Execute("ROLLBACK");
                throw;
            }
        }
        finally { _store.Execute("DETACH DATABASE trial"); }
    }

    /// <summary>The trial's completed run (<see cref="RunReader.Completed"/>), the latest should it have completed twice.</summary>
    public string? CompletedRun(string trialId) =>
        _store.Query($"SELECT r.id FROM runs r JOIN trial_runs x ON x.run_id = r.id WHERE x.trial_id = $t AND {RunReader.CompletedSql} ORDER BY r.ended_utc DESC LIMIT 1",
            ("$t", trialId)).FirstOrDefault()?[0] as string;

    /// <summary>The code versions that ran the completed runs of finished trials.</summary>
    public IReadOnlyList<string> CodeVersions() =>
        _store.Query($"SELECT DISTINCT r.code_version FROM runs r JOIN trial_runs x ON x.run_id = r.id JOIN trials t ON t.id = x.trial_id WHERE t.state = 'finished' AND {RunReader.CompletedSql}")
            .Select(r => r[0] as string).OfType<string>().ToList();

    public void Dispose() => _store.Dispose();
}
