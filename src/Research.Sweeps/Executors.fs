/// Executors: each trial is its own `research` process (crash isolation; the unit a cluster schedules), started
/// through a small shell script that keeps its log and writes its exit code to a file, so the outcome of a trial
/// survives the driver that started it.
module Research.Sweeps.Executors

open System
open System.Diagnostics
open System.IO
open System.Threading
open Research.Sweeps.SweepStore

/// How an attempt ended: its exit code as the wrapper recorded it, or None when the trial vanished (its wrapper was
/// killed too, or the scheduler dropped it) or was cancelled.
type Outcome =
    | Exited of int
    | Vanished of string
    | Cancelled

/// One attempt of a trial: the wrapper script, its log and the file that receives its exit code.
type Attempt = { Trial: Trial; Script: string; Log: string; ExitFile: string }

let quote (s: string) = "'" + s.Replace("'", "'\\''") + "'"

/// A text in characters safe for a file or folder name: letters, digits, '.', '-' and '_'; anything else becomes '_'.
let safeName (text: string) = text |> String.map (fun c -> if Char.IsLetterOrDigit c || c = '.' || c = '-' || c = '_' then c else '_')

/// A Slurm trial's job id (`123_4`): set when it was submitted, so a trial watched as Slurm's has one.
let jobOf (t: Trial) = match t.Job with | null -> invalidOp (sprintf "trial %s has no Slurm job" t.Id) | j -> j

/// The command that runs `research` as this process was run (the apphost, or `dotnet research.dll`).
let researchCommand () =
    let self = match Environment.ProcessPath with | null -> "dotnet" | p -> p
    if Path.GetFileNameWithoutExtension self = "dotnet" then [ self; Path.Combine(AppContext.BaseDirectory, "research.dll") ]
    else [ self ]

/// Exit code of an attempt that found its trial running already (the wrapper's lock is held).
[<Literal>]
let Busy = 75

/// `<sweep>/tensorboard/<arm>/<trial name>`: where a trial's run writes its TensorBoard events (trial folders are
/// `<sweep>/trials/<id>`; a trial's name is made of safe characters, and so is its arm, which starts it).
let tensorboardDir (t: Trial) =
    let sweep = Path.GetFullPath(Path.Combine(t.Dir, "..", ".."))
    let arm = safeName t.Spec.Arm
    Path.Combine(sweep, "tensorboard", arm, t.Name)

/// Writes `<trial dir>/attempt-<n>.sh`: run the trial with its overrides (then `extra`, those the driver adds: a
/// dependent trial's `model.init_from`), its label, its folder and its threads; log to attempt-<n>.log; write the exit
/// code to attempt-<n>.exit (via a rename, so a reader never sees half a file).
let prepare (command: string) (threads: int) (plugins: string[]) (extra: string list) (t: Trial) : Attempt =
    Directory.CreateDirectory t.Dir |> ignore
    let n = t.Attempts
    let file ext = Path.Combine(t.Dir, sprintf "attempt-%d.%s" n ext)
    let args =
        [ yield! researchCommand ()
          yield command
          yield t.Spec.Config
          for o in Seq.append t.Spec.Overrides extra do yield! [ "--set"; o ]
          yield! [ "--set"; sprintf "run.name=%s" (Toml.value t.Name) ]
          yield! [ "--set"; sprintf "run.output_dir=%s" (Toml.value t.Dir) ]
          // TensorBoard: `tensorboard --logdir <sweep>/tensorboard` shows the trials grouped by arm.
          yield! [ "--set"; sprintf "run.tensorboard_dir=%s" (Toml.value (tensorboardDir t)) ]
          yield! [ "--set"; sprintf "run.threads=%d" threads ]
          for p in plugins do yield! [ "--plugins"; p ] ]
    let script =
        String.concat "\n"
            [ "#!/bin/bash"
              sprintf "# trial %s (%s), attempt %d" t.Id t.Name n
              // One attempt of a trial at a time, whatever drivers think: an attempt whose trial is still running
              // elsewhere (started by a driver that died before recording it) exits 75 and is left to that one.
              "exec 9>>" + quote (Path.Combine(t.Dir, "lock"))
              "flock -n 9 || exit 75"
              "cd " + quote Environment.CurrentDirectory
              (args |> List.map quote |> String.concat " ") + " > " + quote (file "log") + " 2>&1"
              "code=$?"
              sprintf "echo $code > %s && mv %s %s" (quote (file "exit.tmp")) (quote (file "exit.tmp")) (quote (file "exit"))
              "exit $code"
              "" ]
    File.WriteAllText(file "sh", script)
    { Trial = t; Script = file "sh"; Log = file "log"; ExitFile = file "exit" }

let readExit (a: Attempt) =
    if File.Exists a.ExitFile then
        match Int32.TryParse(File.ReadAllText(a.ExitFile).Trim()) with
        | true, c -> Some c
        | _ -> None
    else None

/// sbatch refused the array.
exception SubmitError of string

/// Callbacks of the driver: attempts were handed to a scheduler (their job ids are known); an attempt started
/// running; an attempt ended.
type Events = { Submitted: Attempt list -> unit; Started: Attempt -> unit; Ended: Attempt -> Outcome -> unit }

/// Is this pid still the wrapper of this attempt? (Pids are reused: the command line must name its script.)
let alive (pid: int) (script: string) =
    try File.ReadAllText(sprintf "/proc/%d/cmdline" pid).Contains script with _ -> false

/// Local: at most `atOnce` trials at a time (trials adopted from an earlier driver count), each a child process, in
/// the order `next` hands them over. `next` is asked at the start and after each poll: a trial's end can make the
/// trials that start from it ready, and they join the queue then, so a free slot never waits for a whole wave.
/// On cancellation the children are killed and reported cancelled; adopted trials belong to no one and are left.
let runLocal (atOnce: int) (next: unit -> Attempt list) (adopted: Attempt list) (events: Events) (cancel: CancellationToken) =
    let queue = Collections.Generic.Queue<Attempt>(next ())
    let running = Collections.Generic.List<Attempt * Process>()
    let watched = Collections.Generic.List<Attempt>(adopted)
    while (queue.Count > 0 || running.Count > 0 || watched.Count > 0) && not cancel.IsCancellationRequested do
        while queue.Count > 0 && running.Count + watched.Count < atOnce do
            let a = queue.Dequeue()
            // In a session of its own: a Ctrl-C in the terminal reaches the driver, which stops the trials itself.
            let psi = ProcessStartInfo("setsid", [ "/bin/bash"; a.Script ])
            let p = match Process.Start psi with | null -> failwithf "%s did not start" a.Script | p -> p
            a.Trial.Pid <- Nullable p.Id
            a.Trial.Executor <- "local"
            events.Started a
            running.Add((a, p))
        for (a, p) in List.ofSeq running do
            if p.HasExited then
                running.Remove((a, p)) |> ignore
                // The wrapper's file, else the wrapper's own code (128 + signal when it was killed).
                events.Ended a (Exited(defaultArg (readExit a) p.ExitCode))
                p.Dispose()
        for a in List.ofSeq watched do
            if not (alive a.Trial.Pid.Value a.Script) then
                watched.Remove a |> ignore
                events.Ended a (match readExit a with Some c -> Exited c | None -> Vanished "its process is gone and left no exit code")
        for a in next () do queue.Enqueue a
        Thread.Sleep 200
    if cancel.IsCancellationRequested then
        for (a, p) in running do
            (try p.Kill true with _ -> ())
            p.WaitForExit()
            match readExit a with
            | Some c -> events.Ended a (Exited c) // it ended before the cancel reached it
            | None -> events.Ended a Cancelled

/// Runs a command and returns (exit code, stdout, stderr).
let run (file: string) (args: string list) =
    let psi = ProcessStartInfo(file, args, RedirectStandardOutput = true, RedirectStandardError = true)
    try
        use p = match Process.Start psi with | null -> failwithf "%s did not start" file | p -> p
        let out = p.StandardOutput.ReadToEndAsync()
        let err = p.StandardError.ReadToEnd()
        p.WaitForExit()
        p.ExitCode, out.Result, err
    with :? ComponentModel.Win32Exception as e -> 127, "", sprintf "%s: %s" file e.Message

/// Is a Slurm controller answering? (`sinfo` exists and reaches it.)
let slurmAvailable () =
    let code, out, _ = run "sinfo" [ "-h"; "-o"; "%T" ]
    code = 0 && out.Trim() <> ""

/// Slurm job states after which a task will not run again; any other state (PENDING, RUNNING, REQUEUED, PREEMPTED,
/// SUSPENDED, …) means it is not over.
let terminal = set [ "COMPLETED"; "FAILED"; "CANCELLED"; "TIMEOUT"; "OUT_OF_MEMORY"; "NODE_FAIL"; "BOOT_FAIL"; "DEADLINE" ]

/// The state of every task of the given jobs (`123_4` → RUNNING), finished ones included while Slurm remembers them
/// (MinJobAge); None when squeue fails.
let squeueStates (jobs: string list) : Map<string, string> option =
    if jobs.IsEmpty then Some Map.empty
    else
        let code, out, _ = run "squeue" [ "-h"; "-r"; "-t"; "all"; "-j"; String.Join(",", jobs); "-o"; "%i|%T" ]
        if code <> 0 then None
        else
            out.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            |> Array.choose (fun l -> match l.Split('|') with [| id; state |] -> Some(id.Trim(), state.Trim()) | _ -> None)
            |> Map.ofArray
            |> Some

/// Slurm: the attempts `next` hands over go in one job array (`--cpus-per-task` = threads; `%parallel` caps the
/// running tasks of each array when given). Progress by polling `squeue` (one line per array task, finished tasks
/// included for MinJobAge); the exit code from the wrapper's file, else from `scontrol show job`. `next` is asked again
/// after each poll, and what it hands over then (trials whose source trial has just finished) goes in a further array:
/// submitted when ready rather than with `--dependency=afterok`, because a dependent's `model.init_from` names its
/// source's run folder, which exists only once the source has run, and a failed source would leave afterok tasks
/// pending for ever. Adopted attempts are watched by their recorded job. On cancellation the arrays are cancelled
/// with `scancel` and their unfinished trials reported cancelled.
let runSlurm (sweepName: string) (threads: int) (atOnce: int option) (sbatchOptions: string list) (submitDir: string) (next: unit -> Attempt list)
             (adopted: Attempt list) (events: Events) (cancel: CancellationToken) =
    let watched = Collections.Generic.List<Attempt>(adopted)
    let started = Collections.Generic.HashSet<string>()
    for a in adopted do
        if a.Trial.State = "running" then started.Add a.Trial.Id |> ignore
    let mutable arrays = 0
    let submit (attempts: Attempt list) =
        Directory.CreateDirectory submitDir |> ignore
        arrays <- arrays + 1
        let listFile = Path.Combine(submitDir, sprintf "tasks-%d" arrays)
        File.WriteAllLines(listFile, attempts |> List.map (fun a -> a.Script))
        let batch = Path.Combine(submitDir, sprintf "array-%d.sh" arrays)
        File.WriteAllText(batch, sprintf "#!/bin/bash\nexec /bin/bash \"$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" %s)\"\n" (quote listFile))
        let range = sprintf "0-%d%s" (attempts.Length - 1) (match atOnce with Some p -> sprintf "%%%d" p | None -> "")
        let code, out, err =
            run "sbatch" (
                [ "--parsable"; "--job-name=" + sweepName; "--array=" + range; sprintf "--cpus-per-task=%d" threads
                  "--output=" + Path.Combine(submitDir, "slurm-%A_%a.out"); "--chdir=" + Environment.CurrentDirectory ]
                @ sbatchOptions @ [ batch ])
        if code <> 0 then raise (SubmitError(sprintf "sbatch failed (exit %d): %s" code (err.Trim())))
        let job = out.Trim().Split(';').[0]
        attempts |> List.iteri (fun i a ->
            a.Trial.Job <- sprintf "%s_%d" job i
            a.Trial.Executor <- "slurm"
            a.Trial.State <- "queued")
        watched.AddRange attempts
        events.Submitted attempts
        printfn "submitted job array %s: %d trial(s), %d cpu(s) each" job attempts.Length threads
    let submitReady () =
        match next () with
        | [] -> ()
        | attempts -> submit attempts
    submitReady ()
    let jobs () = watched |> Seq.map (fun a -> (jobOf a.Trial).Split('_').[0]) |> Seq.distinct |> List.ofSeq
    let exitFromScontrol (job: string) =
        let _, out, _ = run "scontrol" [ "show"; "job"; job ]
        let m = Text.RegularExpressions.Regex.Match(out, @"ExitCode=(\d+):(\d+)")
        if m.Success then Some(if m.Groups[2].Value <> "0" then 128 + int m.Groups[2].Value else int m.Groups[1].Value) else None
    let ended (a: Attempt) =
        match readExit a |> Option.orElse (exitFromScontrol (jobOf a.Trial)) with
        | Some c -> events.Ended a (Exited c)
        | None -> events.Ended a (Vanished "Slurm ended it without an exit code")
    while watched.Count > 0 && not cancel.IsCancellationRequested do
        // A failed squeue (a slow controller, a signal) says nothing about the tasks: skip this poll.
        match squeueStates (jobs ()) with
        | None -> ()
        | Some states ->
            for a in List.ofSeq watched do
                match states.TryFind (jobOf a.Trial) with
                | Some state when terminal.Contains state ->
                    watched.Remove a |> ignore
                    if state = "CANCELLED" && readExit a = None then events.Ended a Cancelled else ended a
                | Some("RUNNING" | "COMPLETING") ->
                    if started.Add a.Trial.Id then events.Started a
                | Some _ -> () // PENDING, CONFIGURING, REQUEUED, PREEMPTED, SUSPENDED, …: not over yet
                | None ->
                    // Gone from squeue (older than MinJobAge): its wrapper's file tells.
                    watched.Remove a |> ignore
                    match readExit a with
                    | Some c -> events.Ended a (Exited c)
                    | None -> events.Ended a (Vanished(sprintf "job %s is no longer known to Slurm" a.Trial.Job))
        if not cancel.IsCancellationRequested then submitReady ()
        if watched.Count > 0 && not cancel.IsCancellationRequested then Thread.Sleep 1000
    if cancel.IsCancellationRequested && watched.Count > 0 then
        // Only this sweep's unfinished tasks, by task id; then wait until Slurm has let them go.
        let tasks = [ for a in watched -> jobOf a.Trial ]
        let code, _, err = run "scancel" tasks
        if code <> 0 then eprintfn "warning: scancel %s failed: %s" (String.Join(" ", tasks)) (err.Trim())
        let until = DateTime.UtcNow.AddSeconds 30.0
        let active () =
            match squeueStates (jobs ()) with
            | Some states -> tasks |> List.exists (fun t -> match states.TryFind t with Some s -> not (terminal.Contains s) | None -> false)
            | None -> true
        while active () && DateTime.UtcNow < until do Thread.Sleep 500
        for a in watched do
            match readExit a with
            | Some c -> events.Ended a (Exited c) // it ended before the cancel reached it
            | None -> events.Ended a Cancelled
