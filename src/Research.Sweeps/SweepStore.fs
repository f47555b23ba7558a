/// The sweep's store: `<sweep dir>/run.sqlite`, the run store schema (so every `research runs` command reads it) plus
/// a `trials` table and the link from trials to the runs merged from their own stores.
module Research.Sweeps.SweepStore

open System
open System.IO
open Research.Core.Tracking

/// pending: to run. queued/running: handed to an executor. finished: its run ended well. failed: the trial exited
/// with an error of its own (kept with its exit code and log; `--retry-failed` reruns it). killed: ended by a signal
/// or vanished with its driver (runs again on the next invocation). cancelled: withdrawn on Ctrl-C (runs again).
type Trial =
    { Id: string
      Spec: TrialSpec
      Name: string
      Dir: string
      mutable State: string
      mutable Attempts: int
      mutable ExitCode: Nullable<int>
      mutable Log: string | null
      mutable Executor: string | null
      mutable Job: string | null
      mutable Pid: Nullable<int> }

/// Run-store tables copied from a trial's store into the sweep's, keyed by run id.
let private runTables = [ "runs", "id"; "metrics", "run_id"; "evaluations", "run_id"; "artifacts", "run_id"; "study_matrix", "run_id"; "study_values", "run_id" ]

/// A run store with the sweep's tables besides (through RunStore.Execute and RunStore.Query).
type Store(path: string) =
    let runs = new RunStore(path) // creates (or migrates) the run-store tables

    let args (xs: (string * objnull) list) = [| for (n, v) in xs -> struct (n, v) |]
    let exec (sql: string) (xs: (string * objnull) list) = runs.Execute(sql, args xs)
    let query (sql: string) (xs: (string * objnull) list) = runs.Query(sql, args xs) |> List.ofSeq

    do
        exec
            """
            CREATE TABLE IF NOT EXISTS trials (
              id TEXT PRIMARY KEY, name TEXT NOT NULL, arm TEXT NOT NULL, labels TEXT NOT NULL, numbers TEXT NOT NULL, seed INTEGER NOT NULL,
              config TEXT NOT NULL, overrides TEXT NOT NULL, canonical TEXT NOT NULL, state TEXT NOT NULL,
              attempts INTEGER NOT NULL DEFAULT 0, exit_code INTEGER, log TEXT, executor TEXT, job TEXT, pid INTEGER,
              updated_utc TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS trial_runs (run_id TEXT PRIMARY KEY, trial_id TEXT NOT NULL);
            """
            []
        // Columns added since: a trial's command (arms may differ from the sweep's) and the trial it starts from. Stores of
        // earlier versions gain them empty; their trials are then of the sweep's command, without a source.
        let columns = query "SELECT name FROM pragma_table_info('trials')" [] |> List.map (fun r -> string r[0])
        for column in [ "command"; "source" ] do
            if not (List.contains column columns) then exec (sprintf "ALTER TABLE trials ADD COLUMN %s TEXT" column) []

    member _.Query sql args = query sql args
    /// The store as a run store, for the readers shared with `research runs` (RunResults).
    member _.Runs = runs

    /// The trial as recorded, or a new pending row. `source`: the id of the trial it starts from, or null.
    member _.Load(id: string, spec: TrialSpec, name: string, dir: string, canonical: string, source: string | null) : Trial =
        match query "SELECT state, attempts, exit_code, log, executor, job, pid FROM trials WHERE id = $id" [ "$id", box id ] with
        | [ r ] ->
            // The script may have relabelled the trial since (its identity is what it computes, not its labels); rows of
            // earlier versions gain their command and source.
            exec "UPDATE trials SET name = $name, arm = $arm, labels = $labels, numbers = $numbers, command = $command, source = $source WHERE id = $id"
                [ "$name", box name; "$arm", box spec.Arm; "$labels", box (Text.Json.JsonSerializer.Serialize spec.Labels)
                  "$numbers", box (Text.Json.JsonSerializer.Serialize spec.Numbers); "$command", box spec.Command; "$source", box source; "$id", box id ]
            { Id = id; Spec = spec; Name = name; Dir = dir; State = string r[0]; Attempts = Convert.ToInt32 r[1]
              ExitCode = (if isNull r[2] then Nullable() else Nullable(Convert.ToInt32 r[2]))
              Log = (match r[3] with null -> null | v -> string v); Executor = (match r[4] with null -> null | v -> string v)
              Job = (match r[5] with null -> null | v -> string v)
              Pid = (if isNull r[6] then Nullable() else Nullable(Convert.ToInt32 r[6])) }
        | _ ->
            let labels = Text.Json.JsonSerializer.Serialize spec.Labels
            exec
                """
                INSERT INTO trials (id, name, arm, labels, numbers, seed, config, overrides, canonical, state, updated_utc, command, source)
                VALUES ($id, $name, $arm, $labels, $numbers, $seed, $config, $overrides, $canonical, 'pending', $t, $command, $source)
                """
                [ "$id", box id; "$name", box name; "$arm", box spec.Arm; "$labels", box labels; "$numbers", box (Text.Json.JsonSerializer.Serialize spec.Numbers); "$seed", box spec.Seed
                  "$config", box spec.Config; "$overrides", box (Text.Json.JsonSerializer.Serialize spec.Overrides)
                  "$canonical", box canonical; "$t", box (DateTime.UtcNow.ToString "O"); "$command", box spec.Command; "$source", box source ]
            { Id = id; Spec = spec; Name = name; Dir = dir; State = "pending"; Attempts = 0; ExitCode = Nullable(); Log = null
              Executor = null; Job = null; Pid = Nullable() }

    /// Every trial the store knows (of this and earlier versions of the script), for summaries of a sweep folder;
    /// `command` for trials recorded before trials had their own.
    member _.All(sweepDir: string, command: string) : Trial list =
        let json (v: objnull) : 'T = nonNull (Text.Json.JsonSerializer.Deserialize<'T>(string v))
        [ for r in query "SELECT id, name, arm, labels, numbers, seed, config, overrides, state, attempts, command FROM trials ORDER BY rowid" [] ->
              let spec =
                  { Arm = string r[2]; Labels = json r[3]; Numbers = json r[4]; Seed = Convert.ToInt32 r[5]; Config = string r[6]
                    Overrides = json r[7]; Command = (match r[10] with null -> command | c -> string c); From = null }
              { Id = string r[0]; Spec = spec; Name = string r[1]; Dir = Path.Combine(sweepDir, "trials", (string r[0]).[..15])
                State = string r[8]; Attempts = Convert.ToInt32 r[9]; ExitCode = Nullable(); Log = null; Executor = null; Job = null
                Pid = Nullable() } ]

    member _.Save(t: Trial) =
        exec
            """
            UPDATE trials SET state = $s, attempts = $a, exit_code = $e, log = $l, executor = $x, job = $j, pid = $p, updated_utc = $t
            WHERE id = $id
            """
            [ "$s", box t.State; "$a", box t.Attempts; "$e", (if t.ExitCode.HasValue then box t.ExitCode.Value else null)
              "$l", box t.Log; "$x", box t.Executor; "$j", box t.Job
              "$p", (if t.Pid.HasValue then box t.Pid.Value else null); "$t", box (DateTime.UtcNow.ToString "O"); "$id", box t.Id ]

    /// Copies every run of the trial's own stores (`<trial dir>/<run>/run.sqlite`) into this store, replacing what an
    /// earlier merge copied of the same runs, in one transaction. Returns the runs with their recorded status.
    member _.Merge(t: Trial) : (string * string) list =
        let stores =
            if Directory.Exists t.Dir then
                Directory.GetDirectories t.Dir
                |> Array.map (fun d -> Path.Combine(d, RunStore.FileName))
                |> Array.filter File.Exists
                |> Array.sort
            else [||]
        let mergeOne (file: string) =
            exec "ATTACH DATABASE $f AS trial" [ "$f", box file ]
            try
                // A trial killed (Ctrl-C, scancel) between creating its store file and its tables leaves a store without
                // tables: it holds no run, so there is nothing to merge.
                if List.isEmpty (query "SELECT name FROM trial.sqlite_master WHERE type = 'table' AND name = 'runs'" []) then []
                else
                    // BEGIN/COMMIT as statements: Microsoft.Data.Sqlite would otherwise want the transaction on every command.
                    exec "BEGIN" []
                    try
                        let runs = query "SELECT id, status FROM trial.runs" [] |> List.map (fun r -> string r[0], string r[1])
                        for (table, key) in runTables do
                            let columns =
                                query (sprintf "SELECT name FROM pragma_table_info('%s', 'trial')" table) []
                                |> List.map (fun r -> string r[0])
                                |> String.concat ", "
                            for (id, _) in runs do
                                exec (sprintf "DELETE FROM main.%s WHERE %s = $id" table key) [ "$id", box id ]
                            if columns <> "" then
                                exec (sprintf "INSERT INTO main.%s (%s) SELECT %s FROM trial.%s" table columns columns table) []
                        for (id, _) in runs do
                            exec "INSERT OR REPLACE INTO trial_runs VALUES ($r, $t)" [ "$r", box id; "$t", box t.Id ]
                        exec "COMMIT" []
                        runs
                    with _ ->
                        exec "ROLLBACK" []
                        reraise ()
            finally
                exec "DETACH DATABASE trial" []
        [ for file in stores do yield! mergeOne file ]

    interface IDisposable with
        member _.Dispose() = runs.Dispose()
