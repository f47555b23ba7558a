/// `research sweep SCRIPT.fsx`: asks the script for its trials, gives each its identity, skips what an earlier
/// invocation finished or still has queued or running, runs the rest through an executor, merges the trials' stores
/// into the sweep's and writes the summaries.
module Research.Sweeps.Driver

open System
open System.IO
open System.Threading
open Research.Core.Config
open Research.Core.Files
open Research.Core.Plugins
open Research.Sweeps.SweepStore
open Research.Sweeps.Executors

/// A mistake in the script, the options or a trial's config: printed as one line per problem, exit code 2.
exception SweepError of string list

let private fail lines = raise (SweepError lines)

/// Runs the script under `dotnet fsi` with RESEARCH_SWEEP_SPEC set; the script's `Sweep.run` writes its trials there.
let specFromScript (script: string) (dryRun: bool) : SweepSpec =
    if not (File.Exists script) then fail [ sprintf "%s: no such sweep script" script ]
    // `dotnet fsi` would wait for ever on a FIFO.
    InputFile.Require script
    let file = Path.GetTempFileName()
    try
        let psi = Diagnostics.ProcessStartInfo("dotnet", [ "fsi"; "--quiet"; script ], RedirectStandardOutput = true, RedirectStandardError = true)
        psi.Environment[Sweep.SpecVariable] <- file
        if dryRun then psi.Environment[Sweep.DryRunVariable] <- "1"
        use p =
            try
                match Diagnostics.Process.Start psi with
                | null -> fail [ sprintf "cannot start `dotnet fsi` to read %s" script ]
                | p -> p
            with :? ComponentModel.Win32Exception as e -> fail [ sprintf "cannot start `dotnet fsi` to read %s: %s" script e.Message ]
        let out = p.StandardOutput.ReadToEndAsync()
        let err = p.StandardError.ReadToEnd()
        p.WaitForExit()
        let output = (out.Result + err).Trim()
        if p.ExitCode <> 0 then
            fail [ yield sprintf "%s: the script failed (dotnet fsi exit %d):" script p.ExitCode
                   yield! output.Split('\n') |> Array.truncate 30 |> Array.map (fun l -> "  " + l) ]
        if FileInfo(file).Length = 0L then
            fail [ sprintf "%s: the script ended without describing a sweep (it must end with `Sweep.run fsi.CommandLineArgs sweep`)" script ]
        match Text.Json.JsonSerializer.Deserialize<SweepSpec>(File.ReadAllText file) with
        | null -> fail [ sprintf "%s: the script described no sweep (its description reads as null)" script ]
        | spec -> spec
    finally
        File.Delete file

/// A trial's run name: its arm, its levels and its seed, in characters safe for a folder name.
let trialName (t: TrialSpec) =
    let raw = String.concat "-" (t.Arm :: [ for l in t.Labels -> l[1] ] @ [ sprintf "s%d" t.Seed ])
    safeName raw

/// Where an attempt of a trial lives (to watch one started by an earlier driver).
let private attemptOf (t: Trial) (n: int) =
    let file ext = Path.Combine(t.Dir, sprintf "attempt-%d.%s" n ext)
    { Trial = t; Script = file "sh"; Log = file "log"; ExitFile = file "exit" }

/// Summaries of the given trials: a table per metric (printed and in summary.txt), its CSV, its plot, and for studies
/// the mean accuracy matrix of each group.
let summarize (name: string) (dir: string) (store: Store) (trials: Trial list) (summaries: SummarySpec list) (writeText: bool) =
    let summaries =
        if not summaries.IsEmpty then summaries
        else
            // Default: the average accuracy of study arms, the test accuracy of training arms (both when a sweep has
            // both), against the first numeric axis.
            let commands = trials |> List.map (fun t -> t.Spec.Command) |> set
            let metrics = [ if commands.Contains "study" then "average-accuracy"
                            if commands.Contains "train" then "test_accuracy" ]
            let axis = trials |> List.tryPick (fun t -> Array.zip t.Spec.Labels t.Spec.Numbers |> Array.tryPick (fun (l, n) -> if n.HasValue then Some l[0] else None))
            [ for metric in metrics -> { Metric = metric; Against = axis; LogX = false; PairedWith = None } ]
    let outDir = Path.Combine(dir, "summary")
    Directory.CreateDirectory outDir |> ignore
    let text = Text.StringBuilder()
    let written = Collections.Generic.List<string>()
    let curves, summaries = summaries |> List.partition (fun s -> s.Metric.StartsWith Curve.Prefix)
    let alongs, summaries = summaries |> List.partition (fun s -> s.Metric.StartsWith Along.Prefix)
    // File names from metric names and expressions ("probe:a / b"): letters, digits, '.', '-' and '_' only.
    let fileSlug (x: string) =
        let mapped = safeName (x.Replace(" / ", "-over-"))
        mapped.Trim('_')
    for s in summaries do
        let gs, title, slug =
            let gs = Summary.groups store trials s.Metric
            match s.PairedWith with
            | Some b -> Summary.paired b gs, sprintf "%s − %s (paired by seed)" s.Metric b, sprintf "%s-minus-%s" s.Metric b
            | None -> gs, s.Metric, s.Metric
        let slug = fileSlug slug
        let table = Summary.table title gs
        let absent = [ for (arm, labels), _ in Summary.byGroup trials do if not (gs |> List.exists (fun g -> g.Arm = arm && g.Labels = labels)) then yield arm ] |> List.distinct
        let table = if absent.IsEmpty || s.PairedWith.IsSome then table else table + sprintf "(no %s in the runs of: %s)\n" s.Metric (String.Join(", ", absent))
        text.AppendLine(table) |> ignore
        printfn ""
        printf "%s" table
        OutputFile.WriteAllText(Path.Combine(outDir, slug + ".csv"), Summary.csv title gs)
        written.Add(Path.Combine(outDir, slug + ".csv"))
        match s.Against with
        | Some axis when gs |> List.exists (fun g -> g.Numbers.ContainsKey axis) ->
            let png = Path.Combine(outDir, sprintf "%s-vs-%s.png" slug (Summary.short axis))
            Summary.plot png name title axis s.LogX gs
            written.Add png
        | Some axis -> printfn "(no plot against %s: no finished trial has a number on that axis)" axis
        | None -> ()
    for s in alongs do
        let expr = s.Metric.Substring Along.Prefix.Length
        let gs = Summary.along store trials expr
        let title = s.Metric + " inside the later task"
        let table = if gs.IsEmpty then sprintf "%s: no finished study stored points inside a task ([study] hessian snapshots_along)\n" s.Metric else Summary.table title gs
        text.AppendLine(table) |> ignore
        printfn ""
        printf "%s" table
        let slug = fileSlug s.Metric
        OutputFile.WriteAllText(Path.Combine(outDir, slug + ".csv"), Summary.csv title gs)
        written.Add(Path.Combine(outDir, slug + ".csv"))
        // One plot per arm: a line per level of its axes (a learning rate, say) against the fraction trained.
        for arm in gs |> List.map (fun g -> g.Arm) |> List.distinct do
            let png = Path.Combine(outDir, sprintf "%s-%s.png" slug (fileSlug arm))
            Summary.plot png arm expr Along.Axis false (gs |> List.filter (fun g -> g.Arm = arm))
            written.Add png
    written.AddRange(Summary.matrices outDir store trials)
    for key in "train_loss" :: [ for c in curves -> c.Metric.Substring Curve.Prefix.Length ] |> List.distinct do
        Summary.curves (Path.Combine(outDir, sprintf "curves-%s.png" (fileSlug key))) (sprintf "%s: %s, mean over seeds" name key) store trials key
        |> Option.iter written.Add
    // The sweep's own summary (all of its summaries) is summary.txt; `research plot sweep` adds files beside it.
    if writeText then
        OutputFile.WriteAllText(Path.Combine(outDir, "summary.txt"), text.ToString())
        written.Insert(0, Path.Combine(outDir, "summary.txt"))
    printfn ""
    printfn "wrote %s" (String.Join("\n      ", written))

/// The sweep: see the module comment. Returns the exit code: 0 when every trial finished, 1 when some did not,
/// 2 for a mistake (script, options, a trial's config, no Slurm).
/// Runs a sweep script; with `dryRun`, checks every trial's config and plugin options and prints the trials, running and
/// writing nothing.
let sweep (script: string) (executor: string) (parallelOpt: Nullable<int>) (retryFailed: bool) (outputOverride: string) (dryRun: bool) : int =
    try
        if executor <> "local" && executor <> "slurm" then fail [ sprintf "--executor must be local or slurm, not '%s'" executor ]
        let spec = specFromScript script dryRun
        // A trial of an earlier spec without its own command runs the sweep's.
        let spec =
            { spec with
                Trials = [| for t in spec.Trials -> if String.IsNullOrEmpty t.Command then { t with Command = spec.Command } else t |] }
        let order, sourceIndex =
            match Dependencies.plan spec.Trials with
            | Ok plan -> plan
            | Error lines -> fail lines
        let cores = Environment.ProcessorCount
        let atOnce =
            match executor, Option.ofNullable parallelOpt with
            | _, Some p when p < 1 -> fail [ sprintf "--parallel must be at least 1, not %d" p ]
            | "local", Some p when p * spec.Threads > cores ->
                fail [ sprintf "--parallel %d × %d thread(s) per trial = %d exceeds the %d cores of this machine (lower --parallel or the sweep's threads)" p spec.Threads (p * spec.Threads) cores ]
            | "local", _ when spec.Threads > cores ->
                fail [ sprintf "the sweep asks %d threads per trial; this machine has %d cores" spec.Threads cores ]
            | "local", None -> Some(max 1 (cores / spec.Threads))
            | _, p -> p
        if executor = "slurm" && not (slurmAvailable ()) then
            fail [ "--executor slurm: no Slurm controller answers (`sinfo` failed or is missing); start one with scripts/slurm-local.sh start" ]
        let dir = if String.IsNullOrEmpty outputOverride then spec.OutputDir else Path.GetFullPath outputOverride
        let host = PluginHost.Load(spec.Plugins)
        for p in host.Problems do eprintfn "warning: %O" p

        // Identities: a config error in any trial stops the sweep before anything runs. Sources first: a dependent's
        // identity includes its source's (Dependencies.identityOverride).
        let errors = Collections.Generic.List<string>()
        let ids : (string * string) option[] = Array.create spec.Trials.Length None
        for i in order do
            let t = spec.Trials[i]
            let fromSource =
                match sourceIndex[i] with
                | None -> Some []
                | Some s -> ids[s] |> Option.map (fun (sourceId, _) -> [ Dependencies.identityOverride t sourceId ])
            match fromSource with
            | None -> () // its source's config has an error, reported for the source
            | Some extra ->
                  try
                      let config = ConfigLoader.Load(t.Config, Array.append t.Overrides (Array.ofList extra))
                      // Plugin options are checked here too (their constructors validate), not when the trial starts.
                      let check role (choice: PluginChoice) =
                          match host.Create<obj>(role, choice, config.File) with
                          | :? IDisposable as d -> d.Dispose()
                          | _ -> ()
                      check PluginRole.Schedule config.Schedule
                      for m in config.Methods do check PluginRole.Method m
                      ids[i] <- Some(Identity.ofConfig host t.Command config)
                  with
                  | :? ConfigException as e -> for err in e.Errors do errors.Add(sprintf "trial %s: %O" (trialName t) err)
                  | :? PluginException as e -> errors.Add(sprintf "trial %s: %s" (trialName t) e.Message)
        if errors.Count > 0 then fail (List.ofSeq errors)
        if dryRun then
            for i in order do
                let t = spec.Trials[i]
                printfn "%s  %s  %s" (fst ids[i].Value).[..11] t.Command (trialName t)
            printfn "%d trial(s) of %s checked; nothing run (--dry-run)" spec.Trials.Length (Path.GetFileName script)
            0
        else
        let identified = [ for i in 0 .. spec.Trials.Length - 1 -> let id, canonical = ids[i].Value in spec.Trials[i], id, canonical ]
        let sourceIdOf = dict [ for i in 0 .. spec.Trials.Length - 1 do match sourceIndex[i] with Some s -> yield fst ids[i].Value, fst ids[s].Value | None -> () ]
        let unique = identified |> List.distinctBy (fun (_, id, _) -> id)
        if unique.Length < identified.Length then
            eprintfn "warning: %d trial(s) have the same resolved config as an earlier one and run once" (identified.Length - unique.Length)

        Directory.CreateDirectory dir |> ignore
        // One driver per sweep folder: a second one would start the same pending trials. The lock (flock, taken by
        // FileShare.None) goes with the process, so a driver killed with SIGKILL does not leave it behind.
        use _driverLock =
            try new FileStream(Path.Combine(dir, "driver.lock"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None)
            with :? IOException ->
                let holder = try File.ReadAllText(Path.Combine(dir, "driver.pid")).Trim() with _ -> "?"
                fail [ sprintf "another `research sweep` (pid %s) is driving %s; wait for it or stop it first" holder dir ]
        OutputFile.WriteAllText(Path.Combine(dir, "driver.pid"), string Environment.ProcessId)
        OutputFile.WriteAllText(Path.Combine(dir, "sweep.json"), Text.Json.JsonSerializer.Serialize(spec, Text.Json.JsonSerializerOptions(WriteIndented = true)))
        use store = new Store(Path.Combine(dir, Research.Core.Tracking.RunStore.FileName))
        let trials =
            [ for (t, id, canonical) in unique ->
                  let source : string | null = match sourceIdOf.TryGetValue id with | true, s -> s | _ -> null
                  store.Load(id, t, trialName t, Path.Combine(dir, "trials", id[..15]), canonical, source) ]
        let byId = dict [ for t in trials -> t.Id, t ]
        let sourceOf (t: Trial) = match sourceIdOf.TryGetValue t.Id with | true, s -> Some byId[s] | _ -> None
        let dependentsOf = trials |> List.choose (fun t -> sourceOf t |> Option.map (fun s -> s.Id, t)) |> List.groupBy fst |> List.map (fun (s, ds) -> s, List.map snd ds) |> dict

        // What an earlier invocation left: finished runs (perhaps by a trial that outlived its driver) count; trials
        // still queued or running are watched, not resubmitted; failed ones wait for --retry-failed.
        let adoptLocal = Collections.Generic.List<Attempt>()
        let adoptSlurm = Collections.Generic.List<Attempt>()
        let toRun = Collections.Generic.List<Trial>()
        // Slurm is asked first, before any store is read: a task that ends in between is then still watched.
        let slurmJobs =
            trials
            |> List.choose (fun t ->
                match t.Job with
                | null -> None
                | job -> if t.Executor = "slurm" && t.State <> "finished" then Some(job.Split('_').[0]) else None)
            |> List.distinct
        let slurmStates =
            match squeueStates slurmJobs with
            | Some states -> states
            | None ->
                fail [ sprintf "trials of this sweep were submitted to Slurm (jobs %s) and squeue cannot say whether they still run; rerun where Slurm answers"
                           (String.Join(", ", slurmJobs)) ]
        let slurmActive (t: Trial) =
            match t.Job with
            | null -> false
            | job ->
                t.Executor = "slurm"
                && (match slurmStates.TryFind job with
                    | Some state -> not (terminal.Contains state)
                    | None -> false)
        let localAlive (t: Trial) = t.Executor = "local" && t.Pid.HasValue && t.Attempts > 0 && alive t.Pid.Value (attemptOf t (t.Attempts - 1)).Script
        let mutable skippedFailed = 0
        for t in trials do
            if t.State <> "finished" then
                // Still running or queued (whatever the store says): watched, not resubmitted, its store left alone.
                if slurmActive t then
                    if executor = "slurm" then adoptSlurm.Add(attemptOf t (t.Attempts - 1))
                    else printfn "trial %s is still in Slurm (job %s): not resubmitted" t.Name t.Job
                elif localAlive t then
                    if executor = "local" then adoptLocal.Add(attemptOf t (t.Attempts - 1))
                    else printfn "trial %s is still running here (pid %d): not resubmitted" t.Name t.Pid.Value
                else
                    let runs = store.Merge t
                    let last = if t.Attempts > 0 then readExit (attemptOf t (t.Attempts - 1)) else None
                    if runs |> List.exists (fun r -> r.Completed) then
                        t.State <- "finished"
                        store.Save t
                    else
                        match t.State, last with
                        | ("queued" | "running"), Some c when c > 0 && c < 128 && c <> Busy ->
                            // It failed after its driver died: a failure of its own, kept like any other.
                            t.State <- "failed"
                            t.ExitCode <- Nullable c
                            t.Log <- (attemptOf t (t.Attempts - 1)).Log
                            store.Save t
                            if retryFailed then toRun.Add t else skippedFailed <- skippedFailed + 1
                        | "failed", _ when not retryFailed -> skippedFailed <- skippedFailed + 1
                        | _ -> toRun.Add t
        let finishedBefore = trials |> List.filter (fun t -> t.State = "finished") |> List.length
        // A trial's identity is what it computes by its config, not the code that computes it: say when finished
        // trials were run by other code than this (the README: a new output folder when results should change).
        let current = Research.Core.Tracking.Provenance.CodeVersion()
        let others = store.CodeVersions() |> List.filter (fun v -> v <> current)
        if not others.IsEmpty then
            eprintfn "warning: finished trials of this sweep were run by code %s; this is %s. They are kept; use --output DIR to run them again with this code."
                (String.Join(", ", others)) current
        // Trials that start from another wait for it while it runs in this invocation (or an earlier one's that is
        // watched); when it ends, they join the queue (it finished) or are not run (it did not).
        let active = Collections.Generic.HashSet<string>([ for t in toRun -> t.Id ] @ [ for a in Seq.append adoptLocal adoptSlurm -> a.Trial.Id ])
        let waiting = Collections.Generic.HashSet<string>()
        for t in toRun do
            match sourceOf t with
            | Some s when s.State <> "finished" -> waiting.Add t.Id |> ignore
            | _ -> ()
        let ready = Collections.Generic.Queue<Trial>(toRun |> Seq.filter (fun t -> not (waiting.Contains t.Id)))
        let afterSource = waiting.Count
        printfn "sweep %s: %d trial(s) — %d finished before, %d still running from an earlier invocation, %d failed before (kept; --retry-failed reruns them), %d to run%s (%s%s)"
            spec.Name trials.Length finishedBefore (adoptLocal.Count + adoptSlurm.Count) skippedFailed toRun.Count
            (if afterSource > 0 then sprintf ", %d of them after their source trial" afterSource else "") executor
            (match atOnce with Some p -> sprintf ", %d at a time, %d thread(s) each" p spec.Threads | None -> sprintf ", %d thread(s) each" spec.Threads)
        printfn "folder: %s" dir

        let mutable finished = finishedBefore
        let started = DateTime.UtcNow
        let lockObj = obj ()
        let reportTrial (verb: string) (t: Trial) (extra: string) =
            lock lockObj (fun () ->
                printfn "[%4.0fs %d/%d finished] %-9s %s (%s)%s" (DateTime.UtcNow - started).TotalSeconds finished trials.Length verb t.Name t.Id[..7] extra)
        let report (verb: string) (a: Attempt) (extra: string) = reportTrial verb a.Trial extra
        /// The trials waiting for `t`: queued when it finished; otherwise not run (nor the trials waiting for them), for
        /// the reason given. They keep their state: the next invocation runs them once their source has finished.
        let rec release (t: Trial) (why: string option) =
            match dependentsOf.TryGetValue t.Id with
            | true, ds ->
                for d in ds do
                    if waiting.Remove d.Id then
                        match why with
                        | None -> ready.Enqueue d
                        | Some reason ->
                            reportTrial "not run" d (": " + reason)
                            release d (Some(sprintf "its source trial %s was not run" d.Name))
            | _ -> ()
        let whyNotReady (t: Trial) =
            match t.State with
            | "finished" -> None
            | "failed" -> Some(sprintf "source trial %s failed" t.Name)
            | state -> Some(sprintf "source trial %s was %s" t.Name state)
        // Sources that give no result in this invocation: failed before and not retried, or run by the other executor.
        for s in trials do
            if s.State <> "finished" && not (active.Contains s.Id) then
                release s (Some(match s.State with
                                | "failed" -> sprintf "source trial %s failed (kept; --retry-failed reruns it)" s.Name
                                | state -> sprintf "source trial %s is %s and not run by this invocation" s.Name state))
        let events =
            { // Job ids are saved as soon as they exist: a driver killed now must find its trials queued, not resubmit them.
              Submitted =
                fun attempts ->
                    for a in attempts do
                        a.Trial.Attempts <- a.Trial.Attempts + 1
                        store.Save a.Trial
              Started =
                fun a ->
                    if a.Trial.Executor = "local" then a.Trial.Attempts <- a.Trial.Attempts + 1
                    a.Trial.State <- "running"
                    store.Save a.Trial
                    report "running" a ""
              Ended =
                fun a outcome ->
                    let t = a.Trial
                    let runs = store.Merge t
                    let ranWell = runs |> List.exists (fun r -> r.Completed)
                    t.Log <- a.Log
                    let lastLine () = try File.ReadAllLines a.Log |> Array.filter (fun l -> l.Trim() <> "") |> Array.tryLast |> Option.defaultValue "" with _ -> ""
                    match outcome with
                    | Exited 0 when ranWell ->
                        t.State <- "finished"
                        t.ExitCode <- Nullable 0
                        finished <- finished + 1
                        store.Save t
                        report "finished" a ""
                    | Exited c when ranWell && c > 0 && c < 128 && c <> Busy ->
                        // The run trained and stored its record; a study metric of it failed (recorded with its reason):
                        // the trial is finished, and its other values are summarised.
                        t.State <- "finished"
                        t.ExitCode <- Nullable c
                        finished <- finished + 1
                        store.Save t
                        report "finished" a (sprintf " with exit %d: %s; log %s" c (lastLine ()) a.Log)
                    | Exited 0 ->
                        // Exit 0 but no finished run (yet) in its store: not a failure of the trial; it runs again
                        // on the next invocation unless that one finds the run finished.
                        t.State <- "killed"
                        t.ExitCode <- Nullable 0
                        store.Save t
                        report "unclear" a (sprintf " exit 0 but no finished run in %s; the next invocation looks again" t.Dir)
                    | Exited Busy ->
                        t.State <- "killed"
                        store.Save t
                        report "busy" a " another attempt of this trial is still running (its lock is held); the next invocation takes its result"
                    | Exited c when c >= 128 ->
                        t.State <- "killed"
                        t.ExitCode <- Nullable c
                        store.Save t
                        report "killed" a (sprintf " by signal %d; it runs again on the next invocation; log %s" (c - 128) a.Log)
                    | Exited c ->
                        t.State <- "failed"
                        t.ExitCode <- Nullable c
                        store.Save t
                        report "FAILED" a (sprintf " exit %d: %s; log %s" c (lastLine ()) a.Log)
                    | Vanished why ->
                        t.State <- "killed"
                        store.Save t
                        report "killed" a (sprintf " (%s); it runs again on the next invocation" why)
                    | Cancelled ->
                        t.State <- "cancelled"
                        store.Save t
                        report "cancelled" a ""
                    release t (whyNotReady t) }

        use cancel = new CancellationTokenSource()
        // Ctrl-C (SIGINT) and SIGTERM cancel the sweep's trials; the handlers keep the process alive to do so.
        let onSignal (c: Runtime.InteropServices.PosixSignalContext) =
            c.Cancel <- true
            if not cancel.IsCancellationRequested then
                eprintfn "cancelling: stopping the sweep's trials…"
                cancel.Cancel()
        use _int = Runtime.InteropServices.PosixSignalRegistration.Create(Runtime.InteropServices.PosixSignal.SIGINT, onSignal)
        use _term = Runtime.InteropServices.PosixSignalRegistration.Create(Runtime.InteropServices.PosixSignal.SIGTERM, onSignal)
        /// The final weights of a finished trial: its finished run's final checkpoint, as its run recorded it.
        let finalWeights (s: Trial) =
            Summary.finishedRun store s
            |> Option.bind (fun run -> Option.ofObj (store.Runs.LastCheckpoint run))
            |> Option.map (fun checkpoint -> Path.Combine(checkpoint, Research.Core.Checkpoints.Checkpoint.Model))
        /// The trials ready to start, as attempts: an executor asks at the start and after trials end.
        let next () =
            [ while ready.Count > 0 do
                  let t = ready.Dequeue()
                  let extra =
                      match sourceOf t with
                      | None -> Ok []
                      | Some s ->
                          match finalWeights s with
                          | Some w when File.Exists w -> Ok [ Dependencies.runOverride t.Spec w ]
                          | Some w -> Error(sprintf "the final weights of its source trial %s are missing (%s)" s.Name w)
                          | None -> Error(sprintf "its source trial %s recorded no final checkpoint" s.Name)
                  match extra with
                  | Error why ->
                      reportTrial "not run" t (": " + why)
                      release t (Some(sprintf "its source trial %s was not run" t.Name))
                  | Ok extra ->
                      // Attempts are counted when they start (local) or are submitted (Slurm), not when prepared.
                      let a = prepare t.Spec.Command spec.Threads spec.Plugins extra t
                      t.State <- "queued"
                      t.ExitCode <- Nullable()
                      t.Log <- a.Log
                      t.Pid <- Nullable()
                      t.Job <- null
                      store.Save t
                      yield a ]
        match executor with
        | "slurm" ->
            runSlurm spec.Name spec.Threads atOnce (List.ofArray spec.Sbatch) (Path.Combine(dir, "slurm", sprintf "%s-%d" (DateTime.UtcNow.ToString "yyyyMMdd-HHmmss") Environment.ProcessId)) next (List.ofSeq adoptSlurm) events cancel.Token
        | _ -> runLocal atOnce.Value next (List.ofSeq adoptLocal) events cancel.Token
        if cancel.IsCancellationRequested then
            printfn "cancelled: %d/%d trial(s) finished; rerun the same command to continue" finished trials.Length
            130
        else
            let counts = trials |> List.countBy (fun t -> t.State) |> List.map (fun (s, n) -> sprintf "%d %s" n s) |> String.concat ", "
            printfn "sweep %s: %s" spec.Name counts
            summarize spec.Name dir store trials (List.ofArray spec.Summaries) true
            if trials |> List.forall (fun t -> t.State = "finished") then 0 else 1
    with
    | SweepError lines ->
        for l in lines do eprintfn "error: %s" l
        2
    | SubmitError message ->
        eprintfn "error: %s" message
        1
    | :? PluginException as e ->
        eprintfn "error: %s" e.Message
        2

/// `research plot sweep DIR`: the summaries of a sweep folder from its store (every trial it holds).
let summarizeFolder (dir: string) (metric: string) (against: string | null) (logX: bool) : int =
    let path = Path.Combine(dir, Research.Core.Tracking.RunStore.FileName)
    if not (File.Exists path) then
        eprintfn "error: %s holds no sweep store (%s)" dir Research.Core.Tracking.RunStore.FileName
        2
    else
        use store = Store.OpenReadOnly path
        // The sweep's own summaries, as its script asked for them (sweep.json is written at every invocation), and its
        // command for trials recorded before trials had their own (else: a study if any run recorded study metrics).
        let saved = Path.Combine(dir, "sweep.json")
        InputFile.Require saved
        let spec = if File.Exists saved then Option.ofObj (Text.Json.JsonSerializer.Deserialize<SweepSpec>(File.ReadAllText saved)) else None
        let command =
            match spec with
            | Some s -> s.Command
            | None -> if store.Runs.HasStudies() then "study" else "train"
        let trials = store.All(dir, command)
        if trials.IsEmpty then
            eprintfn "error: %s is not a sweep folder (its store has no trials)" dir
            2
        else
            let name = Path.GetFileName(Path.GetFullPath(dir).TrimEnd('/')) |> nonNull
            if String.IsNullOrEmpty metric then
                let specs = match spec with Some s -> List.ofArray s.Summaries | None -> []
                summarize name dir store trials specs true
            else
                summarize name dir store trials [ { Metric = metric; Against = Option.ofObj against; LogX = logX; PairedWith = None } ] false
            0
