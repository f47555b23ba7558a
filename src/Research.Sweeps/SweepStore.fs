/// The sweep's store: `<sweep dir>/run.sqlite`, the run store schema (so every `research runs` command reads it) plus
/// a `trials` table and the link from trials to the runs merged from their own stores (Tracking.TrialStore).
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

/// The sweep's store (Research.Core.Tracking.TrialStore, where its SQL lives) as the driver and summaries use it: trials
/// as this library's records.
type Store private (trials: TrialStore) =
    let entry (id: string) (spec: TrialSpec) (name: string) (source: string | null) =
        TrialEntry(id, name, spec.Arm, Text.Json.JsonSerializer.Serialize spec.Labels, Text.Json.JsonSerializer.Serialize spec.Numbers,
                   int64 spec.Seed, spec.Config, Text.Json.JsonSerializer.Serialize spec.Overrides, spec.Command, source)
    let state (t: Trial) = TrialState(t.State, t.Attempts, t.ExitCode, t.Log, t.Executor, t.Job, t.Pid)

    /// Opens (creating or migrating) the sweep's store for its driver.
    new(path: string) = new Store(TrialStore.Open path)

    /// Opens a sweep's store to read it (`research plot sweep`): nothing is created or written.
    static member OpenReadOnly(path: string) = new Store(TrialStore.OpenReadOnly path)

    /// The runs merged into the store, for the readers shared with `research runs`.
    member _.Runs = trials.Runs

    /// The trial as recorded, or a new pending row. `source`: the id of the trial it starts from, or null.
    member _.Load(id: string, spec: TrialSpec, name: string, dir: string, canonical: string, source: string | null) : Trial =
        match trials.State id with
        | null ->
            trials.Add(entry id spec name source, canonical)
            { Id = id; Spec = spec; Name = name; Dir = dir; State = "pending"; Attempts = 0; ExitCode = Nullable(); Log = null
              Executor = null; Job = null; Pid = Nullable() }
        | s ->
            trials.Describe(entry id spec name source)
            { Id = id; Spec = spec; Name = name; Dir = dir; State = s.State; Attempts = s.Attempts; ExitCode = s.ExitCode; Log = s.Log
              Executor = s.Executor; Job = s.Job; Pid = s.Pid }

    /// Every trial the store knows (of this and earlier versions of the script), for summaries of a sweep folder;
    /// `command` for trials recorded before trials had their own.
    member _.All(sweepDir: string, command: string) : Trial list =
        let parse (v: string) : 'T = nonNull (Text.Json.JsonSerializer.Deserialize<'T> v)
        [ for r in trials.All() ->
              let e = r.Entry
              let spec =
                  { Arm = e.Arm; Labels = parse e.Labels; Numbers = parse e.Numbers; Seed = int e.Seed; Config = e.Config
                    Overrides = parse e.Overrides; Command = (match e.Command with null -> command | c -> c); From = null; FromKey = null }
              { Id = e.Id; Spec = spec; Name = e.Name; Dir = Path.Combine(sweepDir, "trials", e.Id[..15])
                State = r.State.State; Attempts = r.State.Attempts; ExitCode = Nullable(); Log = null; Executor = null; Job = null
                Pid = Nullable() } ]

    member _.Save(t: Trial) = trials.Save(t.Id, state t)

    /// Copies every run of the trial's own stores (`<trial dir>/<run>/run.sqlite`) into this store, replacing what an
    /// earlier merge copied of the same runs, one store per transaction. Returns the runs: whether each completed (it
    /// finished, or failed only in a study's metrics, whose other values are stored) and its recorded status.
    member _.Merge(t: Trial) : MergedRun list =
        let stores =
            if Directory.Exists t.Dir then
                Directory.GetDirectories t.Dir
                |> Array.map (fun d -> Path.Combine(d, RunStore.FileName))
                |> Array.filter File.Exists
                |> Array.sort
            else [||]
        [ for file in stores do yield! trials.Merge(t.Id, file) ]

    /// The trial's completed run (the latest, should it have completed twice).
    member _.CompletedRun(t: Trial) : string option = Option.ofObj (trials.CompletedRun t.Id)

    /// The code versions that ran the finished trials.
    member _.CodeVersions() = List.ofSeq (trials.CodeVersions())

    interface IDisposable with
        member _.Dispose() = trials.Dispose()
