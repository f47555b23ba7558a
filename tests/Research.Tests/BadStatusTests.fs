/// Issue 28's hangs on signals, crashes under a memory limit, and untrue run records and messages: every run's status is
/// true after a signal, a SIGKILL or an early failure; every line says what happened; a memory limit gives exit 0 or
/// one line, never .NET's abort. Real processes throughout.
module Research.Tests.BadStatusTests

open System
open System.Diagnostics
open System.IO
open Expecto
open Research.Core.Tracking
open Research.Tests.TestSupport

/// `research ARGS` started in the background, its output drained so it never blocks on a full pipe.
type private Running(dir: string, args: string list) =
    let psi = ProcessStartInfo("dotnet", WorkingDirectory = dir, RedirectStandardOutput = true, RedirectStandardError = true)
    do for a in Path.Combine(binDir, "research.dll") :: args do psi.ArgumentList.Add a
    do psi.Environment["TERM"] <- "dumb"
    let p = Process.Start psi
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    member _.Pid = p.Id
    member _.Kill() = p.Kill()
    /// Waits for the end (killed after two minutes): exit code, stdout, stderr.
    member _.Wait() =
        if not (p.WaitForExit 120_000) then p.Kill()
        p.WaitForExit()
        { ExitCode = p.ExitCode; Out = out.Result; Err = err.Result }
    interface IDisposable with
        member _.Dispose() =
            if not p.HasExited then p.Kill()
            p.Dispose()

/// The steps with a train_loss row in the store of the one run under DIR/runs (none while there is no store yet).
let private loggedSteps (dir: string) =
    try
        let runs = Path.Combine(dir, "runs")
        match (if Directory.Exists runs then Directory.GetDirectories runs else [||]) with
        | [| run |] when File.Exists(Path.Combine(run, RunStore.FileName)) ->
            Research.Tests.TrainingTests.storeRows run "SELECT step FROM metrics WHERE key = 'train_loss' ORDER BY step"
            |> List.map (fun r -> r[0] :?> int64)
        | _ -> []
    with _ -> []

/// A synthetic run whose method 'stuck' (Plugin.Faulty) never returns from Penalty at step 3, started in the
/// background; returns once steps 1–3 are in its store (the timer flushes them), so the process is inside the call.
let private stuckRun (prefix: string) (extra: string) =
    let dir = tempDir prefix
    let path = syntheticConfig dir ("log_every = 1\n[checkpoint]\nevery = 2\n" + extra + "[[methods]]\nname = \"stuck\"\nat_step = 3\n")
    let run = new Running(dir, [ "train"; path; "--plugins"; fixtureDir "Plugin.Faulty" ])
    let clock = Stopwatch.StartNew()
    while loggedSteps dir <> [ 1L; 2L; 3L ] && clock.Elapsed.TotalSeconds < 60.0 do Threading.Thread.Sleep 100
    Expect.equal (loggedSteps dir) [ 1L; 2L; 3L ] "the run reached the stuck call at step 3"
    dir, run

/// The status column of a run's row in `runs list DIR/runs`.
let private listed (dir: string) (runDir: string) =
    let r = research dir [ "runs"; "list"; Path.Combine(dir, "runs") ]
    Expect.equal r.ExitCode 0 r.Err
    let row = r.Out.Split('\n') |> Array.find (fun l -> l.StartsWith(Path.GetFileName runDir))
    row.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]

/// The status line of `runs show RUN_DIR`.
let private shown (runDir: string) =
    let r = research runDir [ "runs"; "show"; runDir ]
    Expect.equal r.ExitCode 0 r.Err
    r.Out.Split('\n') |> Array.find (fun l -> l.StartsWith "status ")

let private recorded (runDir: string) =
    let row = Research.Tests.TrainingTests.storeRows runDir "SELECT status, error FROM runs" |> List.exactlyOne
    string row[0], string row[1]

/// One line of stderr, no trace, not .NET's unhandled-exception report.
let private oneLine (r: ProcessResult) =
    Expect.isFalse (r.Err.Contains "Unhandled exception") r.Err
    Expect.isFalse (r.Err.Contains "   at ") (sprintf "no stack trace: %s" r.Err)

/// Is this process root (then a folder's modes do not stop it from writing)?
let private isRoot = lazy ((runProcess "." "id" [ "-u" ]).Out.Trim() = "0")

let tests =
    testList "bad status" [
        test "hangs on signals: SIGTERM or SIGINT while a plugin call loops ends the run within the documented grace (with the default call_timeout_s and with it off), recorded interrupted naming the method, its DLL, the call and the step; exit 143 / 130" {
            let grace = Research.Core.Training.Watchdog.SignalGrace.TotalSeconds
            // Both at once: the default limit (600 s) and no limit at all.
            let cases = [ "SIGTERM", 143, stuckRun "status-sigterm" ""; "SIGINT", 130, stuckRun "status-sigint" "[plugins]\ncall_timeout_s = 0\n" ]
            let sent = [ for signal, _, (_, run: Running) in cases -> (runProcess "." "kill" [ "-" + signal.Substring 3; string run.Pid ]).ExitCode, Stopwatch.StartNew() ]
            for (signal, code, (dir, run)), (killed, clock) in List.zip cases sent do
                use run = run
                Expect.equal killed 0 "the signal was sent"
                let r = run.Wait()
                let seconds = clock.Elapsed.TotalSeconds
                Expect.equal r.ExitCode code (sprintf "%s: exit %d; stderr %s" signal code r.Err)
                Expect.isGreaterThanOrEqual seconds (grace - 0.5) (sprintf "%s: the call had its grace" signal)
                Expect.isLessThan seconds (grace + 15.0) (sprintf "%s: ended within seconds of the grace, not after call_timeout_s" signal)
                oneLine r
                Expect.stringContains r.Err (sprintf "stopped by %s while method 'stuck' (" signal) "names the signal and the method"
                Expect.stringContains r.Err "Plugin.Faulty.dll) was in Penalty at step 3" "its DLL, the call and the step"
                Expect.isFalse (r.Err.Contains "Environment.Exit") "no second, wrong line from the exit handler"
                let runDir = onlyRunDir dir
                let status, error = recorded runDir
                Expect.equal status "interrupted" (sprintf "%s: recorded as interrupted" signal)
                Expect.stringContains error (sprintf "stopped by %s while method 'stuck'" signal) "with the reason"
                Expect.stringContains error "resume continues from the last checkpoint" "says how it goes on"
                Expect.isTrue (Directory.Exists(Path.Combine(runDir, "checkpoints", "step-000000002"))) "the checkpoint a resume starts from"
        }
        test "killed runs: a run whose process got SIGKILL reads as killed in runs list, runs show and a sweep's merge, even when its recorded pid is a live process's; while alive it reads as running" {
            let dir, run = stuckRun "status-killed" "[plugins]\ncall_timeout_s = 0\n"
            let runDir = onlyRunDir dir
            do
                use run = run
                Expect.equal (listed dir runDir) "running" "alive: runs list says running"
                Expect.stringContains (shown runDir) "running" "alive: runs show says running"
                run.Kill()
                Expect.equal (run.Wait()).ExitCode 137 "killed by SIGKILL"
            Expect.equal (fst (recorded runDir)) "running" "the store still says running: the process had no chance to say otherwise"
            Expect.equal (listed dir runDir) "killed" "runs list: killed"
            Expect.stringContains (shown runDir) "killed" "runs show: killed"
            // Pids are reused: with a live process's pid recorded (this test's own), the free lock still tells.
            do
                use db = new Microsoft.Data.Sqlite.SqliteConnection(sprintf "Data Source=%s;Pooling=False" (Path.Combine(runDir, RunStore.FileName)))
                db.Open()
                use cmd = db.CreateCommand()
                cmd.CommandText <- sprintf "UPDATE runs SET pid = %d" Environment.ProcessId
                Expect.equal (cmd.ExecuteNonQuery()) 1 "the pid rewritten"
            Expect.equal (listed dir runDir) "killed" "runs list: killed, though the recorded pid is alive"
            Expect.stringContains (shown runDir) "killed" "runs show: killed, though the recorded pid is alive"
            let spec : Research.Sweeps.TrialSpec =
                { Arm = "a"; Labels = [||]; Numbers = [||]; Seed = 1; Config = ""; Overrides = [||]; Command = "train"; From = null; FromKey = null }
            let trial : Research.Sweeps.SweepStore.Trial =
                { Id = "0123456789abcdef"; Spec = spec; Name = "a-s1"; Dir = Path.GetDirectoryName runDir; State = "running"; Attempts = 1
                  ExitCode = Nullable(); Log = null; Executor = null; Job = null; Pid = Nullable() }
            use sweep = new Research.Sweeps.SweepStore.Store(Path.Combine(tempDir "status-killed-sweep", RunStore.FileName))
            Expect.equal (sweep.Merge trial |> List.map (fun r -> r.Status, r.Completed)) [ "killed", false ] "a sweep's merge: killed, not completed"
        }
        test "failures before the first step: a run whose run.tensorboard_dir cannot be made is recorded as failed with the reason naming the key, not left running; exit 2" {
            let dir = tempDir "status-early"
            let path = syntheticConfig dir ""
            let blocked = Path.Combine(dir, "run.toml", "board")   // under a regular file: no one can make it, root included
            File.WriteAllText(path, File.ReadAllText(path).Replace("threads = 1\n", sprintf "threads = 1\ntensorboard_dir = \"%s\"\n" blocked))
            let r = research dir [ "train"; path ]
            Expect.equal r.ExitCode 2 r.Err
            oneLine r
            Expect.stringContains r.Err (sprintf "run.tensorboard_dir: \"%s\" cannot be written" blocked) "names the key and the folder"
            let runDir = onlyRunDir dir
            let status, error = recorded runDir
            Expect.equal status "failed" "recorded as failed"
            Expect.stringContains error "run.tensorboard_dir" "with the reason"
            Expect.equal (listed dir runDir) "failed" "runs list: failed"
        }
        test "read-only resume: a --resume in a run folder that cannot be written says the folder is not writable (exit 2), not that another process writes it; the store is left as it was" {
            let dir = tempDir "status-readonly"
            let path = syntheticConfig dir "[checkpoint]\nevery = 2\n"
            Expect.equal (researchKilledAfter 9 dir [ "train"; path ]).ExitCode 137 "killed"
            let runDir = onlyRunDir dir
            let before = Research.Tests.TrainingTests.storeRows runDir "SELECT status, (SELECT COUNT(*) FROM metrics) FROM runs"
            let expectRefused (label: string) (r: ProcessResult) =
                Expect.equal r.ExitCode 2 (sprintf "%s: exit 2; stderr %s" label r.Err)
                oneLine r
                Expect.stringContains r.Err (sprintf "%s is not writable" runDir) (sprintf "%s: says the folder is not writable" label)
                Expect.isFalse (r.Err.Contains "another process") (sprintf "%s: blames no other writer" label)
                Expect.equal (Research.Tests.TrainingTests.storeRows runDir "SELECT status, (SELECT COUNT(*) FROM metrics) FROM runs") before
                    (sprintf "%s: the store as it was" label)
            let command = [ "dotnet"; Path.Combine(binDir, "research.dll"); "train"; path; "--resume"; runDir ]
            // No write permission: every file and folder without w; root ignores modes, so then the resume runs as nobody.
            let all = Directory.GetFileSystemEntries(runDir, "*", SearchOption.AllDirectories) |> Array.append [| runDir |]
            let modes = all |> Array.map (fun p -> p, File.GetUnixFileMode p)
            for p, m in modes do File.SetUnixFileMode(p, m &&& ~~~(UnixFileMode.UserWrite ||| UnixFileMode.GroupWrite ||| UnixFileMode.OtherWrite))
            try
                let asUser = if isRoot.Value then [ "setpriv"; "--reuid=65534"; "--regid=65534"; "--clear-groups"; "env"; "HOME=" + dir ] else []
                match asUser @ command with
                | file :: args -> expectRefused "no permission" (runProcess dir file args)
                | [] -> ()
            finally
                for p, m in modes do File.SetUnixFileMode(p, m)
            // A read-only file system (what a cluster's read-only mount gives): a bind mount in a mount namespace of the
            // resume's own, where root may make one; it goes away with the process.
            if (runProcess dir "unshare" [ "-m"; "true" ]).ExitCode = 0 then
                let quoted = command |> List.map (fun a -> "'" + a + "'") |> String.concat " "
                let script = sprintf "mount --bind '%s' '%s' && mount -o remount,bind,ro '%s' '%s' && exec %s" runDir runDir runDir runDir quoted
                expectRefused "read-only file system" (runProcess dir "unshare" [ "-m"; "sh"; "-c"; script ])
            // Writable again, it resumes.
            let resumed = research dir [ "train"; path; "--resume"; runDir ]
            Expect.equal resumed.ExitCode 0 resumed.Err
            Expect.equal (fst (recorded runDir)) "finished" "resumed to its end"
        }
        test "watchdog timeout: a plugin call over call_timeout_s gives exactly one line, the true one (no second line guessing at Environment.Exit)" {
            let dir = tempDir "status-timeout"
            let path = syntheticConfig dir "log_every = 1\n[plugins]\ncall_timeout_s = 1.5\n[[methods]]\nname = \"stuck\"\nat_step = 3\n"
            let r = research dir [ "train"; path; "--plugins"; fixtureDir "Plugin.Faulty" ]
            Expect.equal r.ExitCode 1 r.Err
            oneLine r
            let failures = r.Err.Split('\n') |> Array.filter (fun l -> l.StartsWith "run failed:")
            Expect.equal failures.Length 1 (sprintf "one line: %s" r.Err)
            Expect.stringContains failures[0] "Plugin.Faulty.dll) did not return from Penalty at step 3 within 1.5 s ([plugins] call_timeout_s)" "the true one"
            Expect.isFalse (r.Err.Contains "Environment.Exit") "no guess at a plugin's exit"
            let status, error = recorded (onlyRunDir dir)
            Expect.equal status "failed" "recorded as failed"
            Expect.stringContains error "did not return from Penalty" "with the watchdog's reason"
        }
        test "empty fortune folder: a folder without fortune files is reported naming it (exit 2), not as a run with no training items; one of only empty entries too" {
            let empty = tempDir "status-fortunes-empty"
            File.WriteAllBytes(Path.Combine(empty, "index.dat"), [| 0uy; 1uy |])   // an index is not a fortune file
            let dir = tempDir "status-fortunes"
            let path = fortunesGptConfig dir ""
            let r = research dir [ "train"; path; "--dry-run"; "--set"; sprintf "data.path=\"%s\"" empty ]
            Expect.equal r.ExitCode 2 r.Err
            oneLine r
            Expect.stringContains r.Err (sprintf "fortune folder %s holds no fortune files" empty) "names the folder and what it lacks"
            Expect.isFalse (r.Err.Contains "no training items") "not a guess at classes and fractions"
            let separators = tempDir "status-fortunes-separators"
            File.WriteAllText(Path.Combine(separators, "blank"), "%\n%\n")
            let message =
                try
                    Research.Core.Text.Fortunes.English separators |> ignore
                    "read"
                with :? InvalidDataException as e -> e.Message
            Expect.equal message (sprintf "fortune folder %s holds no fortunes: every entry of its 1 file(s) (blank) is empty" separators) "names the folder and its files"
        }
        test "memory limit: under ulimit -v 8000000 a study dry-run on Fashion-MNIST exits 0; under 3000000 one line says memory ran out under the limit; an error line that cannot be written still leaves exit 2, not 134" {
            let config = Path.Combine(repoRoot, "experiments", "configs", "cl-permuted.toml")
            let limited (kb: int) =
                runProcess repoRoot "bash" [ "-c"; sprintf "ulimit -v %d; exec dotnet '%s' study '%s' --dry-run" kb (Path.Combine(binDir, "research.dll")) config ]
            let fits = limited 8_000_000
            Expect.equal fits.ExitCode 0 (sprintf "8 GB of address space is enough: %s" fits.Err)
            let tight = limited 3_000_000
            Expect.equal tight.ExitCode 1 tight.Err
            oneLine tight
            Expect.stringContains tight.Err "error: out of memory under this process's virtual-memory limit of 2.9 GiB (ulimit -v 3000000)" "says why, with the limit"
            // Standard error on /dev/full: every write to it fails, the catch-all's own included.
            let full = runProcess repoRoot "bash" [ "-c"; sprintf "exec dotnet '%s' train /no/such/config.toml 2>/dev/full" (Path.Combine(binDir, "research.dll")) ]
            Expect.equal full.ExitCode 2 "the exit code of the error, not the runtime's abort"
        }
    ]
