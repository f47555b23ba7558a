/// Sweeps: what a script describes, trial identity, intervals, and whole sweeps through the local executor and a real
/// Slurm cluster (scripts/slurm-local.sh), including a driver and a trial killed midway.
module Research.Tests.SweepTests

open System
open System.Diagnostics
open System.IO
open Expecto
open FsCheck
open Microsoft.Data.Sqlite
open Research.Core.Config
open Research.Core.Plugins
open Research.Core.Tracking
open Research.Sweeps
open Research.Tests.TestSupport

let private host = lazy (PluginHost.Load([]))

/// The identity of a config file with overrides, as the driver computes it.
let private identity (file: string) (overrides: string list) =
    fst (Identity.ofConfig host.Value "study" (ConfigLoader.Load(file, overrides)))

/// A quick study on synthetic clusters (split-task, 5 tasks): about a second per trial, most of it start-up.
let private studyConfig (dir: string) (epochs: int) =
    let path = Path.Combine(dir, "study.toml")
    File.WriteAllText(path, sprintf """
[run]
name = "study"
seed = 5
[data]
dataset = "synthetic"
synthetic_samples = 600
synthetic_features = 16
synthetic_classes = 10
batch_size = 20
[model]
hidden = [32]
[optimizer]
lr = 0.01
[train]
epochs = %d
[study]
benchmark = "split-task"
tasks = 2
""" epochs)
    path

/// A study that runs for a few seconds (permuted synthetic clusters, 2 tasks × 200 epochs of 100 steps), to be
/// interrupted midway.
let private slowStudyConfig (dir: string) =
    let path = Path.Combine(dir, "study.toml")
    File.WriteAllLines(path, [|
        "[run]"
        "name = \"study\""
        "seed = 5"
        "[data]"
        "dataset = \"synthetic\""
        "synthetic_samples = 2000"
        "synthetic_features = 16"
        "synthetic_classes = 10"
        "batch_size = 20"
        "[model]"
        "hidden = [256]"
        "[optimizer]"
        "lr = 0.01"
        "[train]"
        "epochs = 200"
        "[study]"
        "benchmark = \"permuted\""
        "tasks = 2"
    |])
    path

/// A sweep script in DIR: arms "ft" and "ewc" (λ axis), with the given seeds, referencing the built library.
let private script (dir: string) (name: string) (lambdas: float list) (seeds: int list) (extra: string) =
    let path = Path.Combine(dir, "sweep.fsx")
    File.WriteAllText(path, sprintf """
#r "%s"
open Research.Sweeps
let sweep =
    Sweep.create "%s" Study
    |> Sweep.seeds %A
    |> Sweep.output "out"
    |> Sweep.arm (Arm.create "ft" "study.toml")
    |> Sweep.arm (Arm.create "ewc" "study.toml" |> Arm.methods [ [ "name", box "ewc"; "fisher", box "empirical" ] ] |> Arm.axis (Axis.grid "methods.0.lambda" %A))
    %s
exit (Sweep.run fsi.CommandLineArgs sweep)
""" (Path.Combine(binDir, "Research.Sweeps.dll").Replace("\\", "/")) name seeds lambdas extra)
    path

let query (db: string) (sql: string) =
    use c = new SqliteConnection(sprintf "Data Source=%s;Pooling=false;Mode=ReadOnly" db)
    c.Open()
    use cmd = c.CreateCommand()
    cmd.CommandText <- sql
    use r = cmd.ExecuteReader()
    [ while r.Read() do yield Array.init r.FieldCount (fun i -> if r.IsDBNull i then null else r.GetValue i) ]

/// Per trial of the merged store: (state, attempts, finished runs, all runs).
let trialRuns (db: string) =
    query db """
        SELECT t.name, t.state, t.attempts,
               (SELECT COUNT(*) FROM trial_runs x JOIN runs r ON r.id = x.run_id WHERE x.trial_id = t.id AND r.status = 'finished'),
               (SELECT COUNT(*) FROM trial_runs x WHERE x.trial_id = t.id)
        FROM trials t ORDER BY t.name"""
    |> List.map (fun r -> string r[0], (string r[1], Convert.ToInt32 r[2], Convert.ToInt32 r[3], Convert.ToInt32 r[4]))
    |> Map.ofList

/// Starts `research sweep ARGS` in DIR without waiting; both streams are read in the background.
let private startSweep (dir: string) (args: string list) =
    let psi = ProcessStartInfo("dotnet", Path.Combine(binDir, "research.dll") :: "sweep" :: args,
                               WorkingDirectory = dir, RedirectStandardOutput = true, RedirectStandardError = true)
    let p = Process.Start psi
    p, p.StandardOutput.ReadToEndAsync(), p.StandardError.ReadToEndAsync()

/// Polls the sweep store until its trials' states satisfy `ready`; false when `seconds` ran out first.
let private waitForStates (db: string) (seconds: float) (ready: string list -> bool) =
    let deadline = DateTime.UtcNow.AddSeconds seconds
    let mutable ok = false
    while not ok && DateTime.UtcNow < deadline do
        Threading.Thread.Sleep 200
        if File.Exists db then
            try ok <- ready (query db "SELECT state FROM trials" |> List.map (fun r -> string r[0])) with _ -> ()
    ok

let private slurmRequired = Environment.GetEnvironmentVariable "RESEARCH_REQUIRE_SLURM" = "1"

let private slurmUp () =
    try
        let r = runProcess "/" "sinfo" [ "-h"; "-o"; "%T" ]
        r.ExitCode = 0 && r.Out.Trim() <> ""
    with _ -> false

/// Skips a Slurm test where no Slurm answers, except under RESEARCH_REQUIRE_SLURM=1 (CI), where it fails.
let requireSlurm () =
    if not (slurmUp ()) then
        if slurmRequired then failtest "RESEARCH_REQUIRE_SLURM=1 but no Slurm controller answers (scripts/slurm-local.sh start)"
        else skiptest "no Slurm here (scripts/slurm-local.sh start); CI requires it"

let tests =
    testList "sweeps" [
        test "every committed sweep script checks with --dry-run: each trial's config and plugin options are accepted (exit 0, its trials listed) and nothing is written" {
            // ContinualLearning.fsx is the library cl-select and cl-reproduce load; cl-plot.fsx and *-plot.fsx draw a summary.
            let scripts =
                Directory.GetFiles(Path.Combine(repoRoot, "experiments", "sweeps"), "*.fsx")
                |> Array.filter (fun f -> Path.GetFileName f <> "ContinualLearning.fsx" && not (Path.GetFileName(f).EndsWith "-plot.fsx"))
                |> Array.sort
            Expect.isGreaterThanOrEqual scripts.Length 8 "the committed sweeps"
            let dir = tempDir "sweep-dry-run"
            for script in scripts do
                let r = research dir [ "sweep"; script; "--dry-run" ]
                Expect.equal r.ExitCode 0 (sprintf "%s\n%s\n%s" script r.Out r.Err)
                Expect.stringContains r.Out (sprintf "checked; nothing run (--dry-run)") script
                let listed = r.Out.Split('\n') |> Array.filter (fun l -> Text.RegularExpressions.Regex.IsMatch(l, "^[0-9a-f]{12}  (train|study)  ")) |> Array.length
                Expect.stringContains r.Out (sprintf "%d trial(s) of %s checked" listed (Path.GetFileName script)) (script + ": every trial listed")
            Expect.isEmpty (Directory.GetFileSystemEntries dir) "nothing written where the command ran"
        }
        testList "description" [
            test "a grid arm expands to levels × seeds, and every trial gets its seed and the level's override" {
                let s =
                    Sweep.create "g" Study
                    |> Sweep.seeds [ 1; 2; 3 ]
                    |> Sweep.arm (Arm.create "a" "x.toml" |> Arm.axis (Axis.grid "optimizer.lr" [ 0.1; 0.01 ]) |> Arm.axis (Axis.grid "train.epochs" [ 1; 2 ]))
                    |> Sweep.arm (Arm.create "b" "x.toml")
                    |> Sweep.expand
                Expect.equal s.Trials.Length (2 * 2 * 3 + 3) "2 × 2 levels × 3 seeds, plus 3 seeds of the plain arm"
                let t = s.Trials |> Array.find (fun t -> t.Arm = "a" && t.Seed = 2 && t.Labels = [| [| "optimizer.lr"; "0.01" |]; [| "train.epochs"; "2" |] |])
                Expect.equal t.Overrides [| "optimizer.lr=0.01"; "train.epochs=2"; "run.seed=2" |] "overrides in axis order, then the seed"
            }
            test "zip pairs levels i with i; random draws the same values for the same seed and others for another" {
                let z = Axis.zip "lr+warmup" [ Axis.grid "optimizer.lr" [ 0.1; 0.2 ]; Axis.grid "schedule.warmup_steps" [ 10; 20 ] ]
                Expect.equal [ for l in z.Levels -> l.Overrides ] [ [ "optimizer.lr", "0.1"; "schedule.warmup_steps", "10" ]; [ "optimizer.lr", "0.2"; "schedule.warmup_steps", "20" ] ] "zipped"
                let draw seed = [ for l in (Axis.random "optimizer.lr" 5 seed (Sample.logUniform 1e-4 1e-2)).Levels -> l.Number.Value ]
                Expect.equal (draw 7) (draw 7) "same seed, same values"
                Expect.notEqual (draw 7) (draw 8) "another seed, other values"
                Expect.all (draw 7) (fun v -> v >= 1e-4 && v <= 1e-2) "inside the range"
                Expect.throws (fun () -> Axis.zip "bad" [ Axis.grid "a" [ 1; 2 ]; Axis.grid "b" [ 1 ] ] |> ignore) "zipped axes of different lengths are refused"
            }
            test "TOML values: a float keeps its decimal point, strings are quoted, inline tables and arrays nest" {
                Expect.equal (Toml.value (box 1.0)) "1.0" "1.0 stays a float"
                Expect.equal (Toml.value (box 1e-5)) "1e-05" "exponent form"
                Expect.equal (Toml.value (box "a\"b")) "\"a\\\"b\"" "escaped"
                Expect.equal (Toml.value (box [ Toml.table [ "name", box "ewc"; "lambda", box 3 ] ])) "[{ name = \"ewc\", lambda = 3 }]" "array of inline tables"
            }
        ]
        test "the sweep script of docs/sweeps.md describes the 24 trials of the λ sweep (run under dotnet fsi as research sweep does)" {
            let page = File.ReadAllText(Path.Combine(repoRoot, "docs", "sweeps.md"))
            let block = Text.RegularExpressions.Regex.Match(page, "```fsharp\n(// experiments/sweeps/ewc-lambda.fsx \\(abridged\\)\n.*?)```", Text.RegularExpressions.RegexOptions.Singleline)
            Expect.isTrue block.Success "docs/sweeps.md shows the λ sweep script"
            let dir = tempDir "readme-sweep"
            let script = Path.Combine(dir, "readme.fsx")
            File.WriteAllText(script, block.Groups[1].Value.Replace("../../artifacts/bin/Research.Sweeps.dll", Path.Combine(binDir, "Research.Sweeps.dll")))
            let spec = Path.Combine(dir, "spec.json")
            let r = runProcessWith [ Sweep.SpecVariable, spec ] repoRoot "dotnet" [ "fsi"; "--quiet"; script ]
            Expect.equal r.ExitCode 0 (r.Out + r.Err)
            let s = Text.Json.JsonSerializer.Deserialize<SweepSpec>(File.ReadAllText spec)
            Expect.equal s.Trials.Length 24 "(fine-tuning + joint + 6 λ) × 3 seeds"
            Expect.all s.Trials (fun t -> File.Exists t.Config) "its configs exist"
        }
        testList "identity" [
            test "the identity ignores key order, the run's name, folder and threads, and plugin options left at their defaults" {
                let dir = tempDir "identity"
                let a = Path.Combine(dir, "a.toml")
                let b = Path.Combine(dir, "b.toml")
                File.WriteAllText(a, "[run]\nname = \"x\"\nseed = 1\n[optimizer]\nlr = 0.01\nname = \"adamw\"\n[[methods]]\nname = \"ewc\"\nlambda = 5.0\n")
                File.WriteAllText(b, "[optimizer]\nname = \"adamw\"\nlr = 0.01\n[run]\nseed = 1\nname = \"y\"\nthreads = 2\noutput_dir = \"elsewhere\"\n[[methods]]\nlambda = 5.0\nname = \"ewc\"\nfisher = \"exact\"\n")
                Expect.equal (identity a []) (identity b []) "same trial"
                Expect.equal (identity a []).Length 64 "SHA-256 in hex"
            }
            test "any change to what a trial computes changes its identity: a λ, a seed, a default made explicit with another value" {
                let dir = tempDir "identity"
                let a = Path.Combine(dir, "a.toml")
                File.WriteAllText(a, "[run]\nseed = 1\n[[methods]]\nname = \"ewc\"\nlambda = 5.0\n")
                let base' = identity a []
                for o in [ "methods.0.lambda=6.0"; "run.seed=2"; "methods.0.fisher=\"empirical\""; "train.epochs=7" ] do
                    Expect.notEqual (identity a [ o ]) base' o
            }
        ]
        testList "intervals" [
            // Rounding of a·x + b is of the order of ulp(max |a·x + b|); t ≤ 12.7 magnifies it: the tolerance scales with it.
            testPropertyWithConfig propConfig "mean ± CI is affine-equivariant: values a·x + b (a > 0) give mean a·m + b and half-width a·h (tolerance 1e-12·(1 + max |a·x + b|))" <|
                fun (xs: NormalFloat list) (a: NormalFloat) (b: NormalFloat) ->
                    let xs = xs |> List.map (fun x -> float x % 1e6) |> Array.ofList
                    let a, b = 0.5 + abs (float a % 100.0), float b % 1e6
                    xs.Length < 2 ||
                    (let m, h, _ = Summary.meanCi xs
                     let m2, h2, _ = Summary.meanCi (xs |> Array.map (fun x -> a * x + b))
                     let tol = 1e-12 * (1.0 + (xs |> Array.map (fun x -> abs (a * x + b)) |> Array.max))
                     abs (m2 - (a * m + b)) <= tol && abs (h2 - a * h) <= tol)
            test "three values 1, 2, 3: mean 2 and half-width t(0.975, 2) = 4.3027 times 1/√3 (tolerance 1e-9)" {
                let m, h, sd = Summary.meanCi [| 1.0; 2.0; 3.0 |]
                Expect.floatClose { absolute = 1e-12; relative = 0.0 } m 2.0 "mean"
                Expect.floatClose { absolute = 1e-12; relative = 0.0 } sd 1.0 "sample sd (n − 1)"
                // t quantile from the published table (4.302652729911275 to 15 digits).
                Expect.floatClose { absolute = 1e-9; relative = 0.0 } h (4.302652729911275 / sqrt 3.0) "half-width"
                let _, one, _ = Summary.meanCi [| 0.5 |]
                Expect.isTrue (Double.IsNaN one) "one seed: no interval"
            }
        ]
        testSequenced <| testList "end to end" [
            test "a sweep through the local executor runs every trial once, merges their stores and writes the summary" {
                let dir = tempDir "sweep-local"
                studyConfig dir 2 |> ignore
                let s = script dir "local" [ 1.0 ] [ 1; 2 ] """|> Sweep.summarize "average-accuracy" (Some "methods.0.lambda") false"""
                let r = research dir [ "sweep"; s; "--executor"; "local"; "--parallel"; "2" ]
                Expect.equal r.ExitCode 0 (sprintf "sweep ran\n%s\n%s" r.Out r.Err)
                let db = Path.Combine(dir, "out", "run.sqlite")
                let trials = trialRuns db
                Expect.equal trials.Count 4 "2 arms × 2 seeds"
                for KeyValue(name, (state, attempts, finished, runs)) in trials do
                    Expect.equal (state, attempts, finished, runs) ("finished", 1, 1, 1) (sprintf "%s: finished once, one attempt, one run" name)
                let executors = query db "SELECT DISTINCT executor FROM trials" |> List.map (fun r -> string r[0])
                Expect.equal executors [ "local" ] "local executor"
                let studies = query db "SELECT COUNT(DISTINCT run_id) FROM study_matrix" |> List.head
                Expect.equal (Convert.ToInt32 studies[0]) 4 "each trial's study matrix is in the merged store"
                let csv = File.ReadAllLines(Path.Combine(dir, "out", "summary", "average-accuracy.csv"))
                Expect.equal csv.Length 3 "header, ft, ewc λ=1"
                Expect.stringContains csv[0] "ci95_low" "interval columns"
                for plot in [ "average-accuracy-vs-lambda.png"; "curves-train_loss.png"; "matrix-ft.png"; "matrix-ewc-1.png" ] do
                    Expect.isTrue (File.Exists(Path.Combine(dir, "out", "summary", plot))) plot
                // The merged store is a run store: `research runs list` reads it.
                let listed = research dir [ "runs"; "list"; Path.Combine(dir, "out") ]
                Expect.equal ((listed.Out.Split('\n') |> Array.filter (fun l -> l.Contains "finished")).Length) 4 "4 finished runs listed once each"
                // A rerun finds everything finished and runs nothing.
                let again = research dir [ "sweep"; s ]
                Expect.equal again.ExitCode 0 again.Err
                Expect.stringContains again.Out "4 finished before" "skips finished trials"
                Expect.equal (trialRuns db) trials "nothing ran again"
            }
            test "a failed trial keeps its exit code and log, does not stop the others, and reruns only with --retry-failed" {
                let dir = tempDir "sweep-failed"
                studyConfig dir 1 |> ignore
                // Data that is not there passes the config check but fails the trial when it starts (exit 2). The whole
                // [data] table is replaced: Fashion-MNIST takes none of the base's synthetic keys.
                let s = script dir "failing" [ 1.0 ] [ 1 ] """|> Sweep.arm (Arm.create "nodata" "study.toml" |> Arm.set "data" (Toml.table [ "dataset", box "fashion-mnist"; "path", box "/nonexistent" ]))"""
                let r = research dir [ "sweep"; s; "--parallel"; "1" ]
                Expect.equal r.ExitCode 1 (sprintf "a failed trial fails the sweep\n%s\n%s" r.Out r.Err)
                let db = Path.Combine(dir, "out", "run.sqlite")
                let failed = query db "SELECT name, exit_code, log FROM trials WHERE state = 'failed'"
                Expect.equal (failed |> List.map (fun f -> string f[0])) [ "nodata-s1" ] "the trial without data failed"
                Expect.equal (Convert.ToInt32 failed.Head[1]) 2 "its exit code (missing data)"
                Expect.stringContains (File.ReadAllText(string failed.Head[2])) "/nonexistent" "its log says why"
                Expect.equal (trialRuns db |> Map.filter (fun _ (s, _, _, _) -> s = "finished") |> Map.count) 2 "the others finished"
                let again = research dir [ "sweep"; s ]
                Expect.stringContains again.Out "1 failed before" "kept"
                Expect.stringContains again.Out "0 to run" "not rerun"
                let retry = research dir [ "sweep"; s; "--retry-failed" ]
                Expect.equal retry.ExitCode 1 "fails again"
                Expect.equal (query db "SELECT attempts FROM trials WHERE state = 'failed'" |> List.map (fun r -> Convert.ToInt32 r[0])) [ 2 ] "rerun once"
            }
            test "a config mistake in any trial names the trial, the file and the key, and runs nothing" {
                let dir = tempDir "sweep-config"
                studyConfig dir 1 |> ignore
                let s = script dir "bad" [ 1.0; -1.0 ] [ 1 ] """|> Sweep.arm (Arm.create "typo" "study.toml" |> Arm.set "optimizer.lrr" 0.1)"""
                let r = research dir [ "sweep"; s ]
                Expect.equal r.ExitCode 2 r.Out
                Expect.stringContains r.Err "trial typo-s1" "names the trial"
                Expect.stringContains r.Err "lrr" "names the key"
                Expect.stringContains r.Err "trial ewc--1-s1" "a plugin option out of range is caught before any trial runs"
                Expect.stringContains r.Err "lambda" "names the option"
                Expect.isFalse (Directory.Exists(Path.Combine(dir, "out"))) "nothing ran"
            }
            test "a sweep of 6 trials through the local Slurm cluster: one job array with the sweep's sbatch options, every trial finished once in the merged store" {
                requireSlurm ()
                let dir = tempDir "sweep-slurm"
                studyConfig dir 2 |> ignore
                let s = script dir "slurm" [ 1.0; 10.0 ] [ 1; 2 ] """|> Sweep.sbatch [ "--time=00:10:00" ]"""
                let r = research dir [ "sweep"; s; "--executor"; "slurm" ]
                Expect.equal r.ExitCode 0 (sprintf "sweep ran\n%s\n%s" r.Out r.Err)
                Expect.stringContains r.Out "submitted job array" "one array"
                let db = Path.Combine(dir, "out", "run.sqlite")
                let trials = trialRuns db
                Expect.equal trials.Count 6 "ft × 2 seeds + ewc 2 λ × 2 seeds"
                for KeyValue(name, v) in trials do
                    Expect.equal v ("finished", 1, 1, 1) (sprintf "%s: finished once" name)
                let jobs = query db "SELECT executor, job FROM trials"
                Expect.all jobs (fun j -> string j[0] = "slurm" && Text.RegularExpressions.Regex.IsMatch(string j[1], @"^\d+_\d+$")) "each trial is an array task"
                Expect.equal (jobs |> List.map (fun j -> (string j[1]).Split('_').[0]) |> List.distinct |> List.length) 1 "one job array"
                let shown = runProcess dir "scontrol" [ "show"; "job"; string jobs.Head[1] ]
                Expect.stringContains shown.Out "TimeLimit=00:10:00" "the script's sbatch options reached sbatch"
                Expect.stringContains shown.Out "NumCPUs=1" "--cpus-per-task = the sweep's threads"
            }
            test "a second driver on the same sweep folder is refused while the first runs, naming its pid" {
                let dir = tempDir "sweep-two-drivers"
                slowStudyConfig dir |> ignore
                let s = script dir "two" [ 1.0 ] [ 1 ] ""
                let first, _, _ = startSweep dir [ s; "--parallel"; "1" ]
                use _first = first
                Expect.isTrue (waitForStates (Path.Combine(dir, "out", "run.sqlite")) 60.0 (List.contains "running")) "the first runs"
                let second = research dir [ "sweep"; s ]
                Expect.equal second.ExitCode 2 second.Out
                Expect.stringContains second.Err (sprintf "another `research sweep` (pid %d)" first.Id) "names the driver"
                first.Kill true
                first.WaitForExit()
            }
            test "merging a trial whose attempt was killed between creating its store file and its tables (an empty run.sqlite) merges its other runs and skips that one" {
                let dir = tempDir "sweep-merge-empty"
                let spec = { Arm = "a"; Labels = [||]; Numbers = [||]; Seed = 1; Config = "c.toml"; Overrides = [||]; Command = "study"; From = null; FromKey = null }
                let trial : SweepStore.Trial =
                    { Id = "fedcba9876543210"; Spec = spec; Name = "a-s1"; Dir = Path.Combine(dir, "trial"); State = "finished"; Attempts = 2
                      ExitCode = Nullable 0; Log = null; Executor = null; Job = null; Pid = Nullable() }
                let killed = Path.Combine(trial.Dir, "a-s1-killed")
                Directory.CreateDirectory killed |> ignore
                File.WriteAllBytes(Path.Combine(killed, RunStore.FileName), [||])
                let finished = Path.Combine(trial.Dir, "a-s1-finished")
                do
                    use run = new RunStore(Path.Combine(finished, RunStore.FileName))
                    run.BeginRun(RunInfo("a-s1-finished", "a-s1", "c.toml", "", "{}", "id", "[]", 1L, "code", "{}", 1, "cpu"))
                    run.EndRun("a-s1-finished", true)
                use store = new SweepStore.Store(Path.Combine(dir, "run.sqlite"))
                Expect.equal (store.Merge trial |> List.map (fun r -> r.Id, r.Status, r.Completed)) [ "a-s1-finished", "finished", true ] "the finished run, and nothing from the empty store"
            }
            test "two attempts of one trial never run at once: the second finds the trial's lock held and exits 75" {
                let dir = tempDir "sweep-lock"
                let config = slowStudyConfig dir
                let spec = { Arm = "a"; Labels = [||]; Numbers = [||]; Seed = 1; Config = config; Overrides = [| "run.seed=1"; "train.epochs=40" |]; Command = "study"; From = null; FromKey = null }
                let trial : SweepStore.Trial =
                    { Id = "0123456789abcdef"; Spec = spec; Name = "a-s1"; Dir = Path.Combine(dir, "trial"); State = "pending"; Attempts = 0
                      ExitCode = Nullable(); Log = null; Executor = null; Job = null; Pid = Nullable() }
                let first = Executors.prepare "study" 1 [||] [] trial
                trial.Attempts <- 1
                let second = Executors.prepare "study" 1 [||] [] trial
                use a = Process.Start("/bin/bash", [ first.Script ])
                let until = DateTime.UtcNow.AddSeconds 20.0
                while not (File.Exists first.Log) && DateTime.UtcNow < until do Threading.Thread.Sleep 50
                use b = Process.Start("/bin/bash", [ second.Script ])
                b.WaitForExit()
                a.WaitForExit()
                Expect.equal b.ExitCode Executors.Busy "the second attempt stood aside"
                Expect.equal a.ExitCode 0 (sprintf "the first ran to the end: %s" (File.ReadAllText first.Log))
                Expect.equal (Executors.readExit first) (Some 0) "the first wrote its exit code"
                Expect.isFalse (File.Exists second.Log) "the second never started research"
            }
            test "Ctrl-C (SIGINT) on a Slurm sweep cancels its job array with scancel; a rerun runs the cancelled trials" {
                requireSlurm ()
                let dir = tempDir "sweep-cancel"
                slowStudyConfig dir |> ignore
                let s = script dir "cancel" [ 1.0 ] [ 1; 2 ] ""
                let driver, out, err = startSweep dir [ s; "--executor"; "slurm" ]
                use _driver = driver
                let db = Path.Combine(dir, "out", "run.sqlite")
                let running = waitForStates db 60.0 (List.contains "running")
                Expect.isTrue running "a trial runs"
                let job = query db "SELECT job FROM trials WHERE job IS NOT NULL LIMIT 1" |> List.head |> fun r -> (string r[0]).Split('_').[0]
                runProcess dir "kill" [ "-INT"; string driver.Id ] |> ignore
                Expect.isTrue (driver.WaitForExit 30000) "the driver ends"
                Expect.equal driver.ExitCode 130 (sprintf "cancelled\n%s\n%s" out.Result err.Result)
                let active () = (runProcess dir "squeue" [ "-h"; "-r"; "-j"; job; "-t"; "PENDING,RUNNING,COMPLETING" ]).Out.Trim()
                let until = DateTime.UtcNow.AddSeconds 20.0
                while active () <> "" && DateTime.UtcNow < until do Threading.Thread.Sleep 500
                Expect.equal (active ()) "" "no task of the array is left queued or running"
                let states = query db "SELECT state FROM trials" |> List.map (fun r -> string r[0])
                Expect.contains states "cancelled" "running trials are recorded cancelled"
                let rerun = research dir [ "sweep"; s; "--executor"; "slurm" ]
                Expect.equal rerun.ExitCode 0 (sprintf "rerun\n%s\n%s" rerun.Out rerun.Err)
                for KeyValue(name, (state, _, finished, _)) in trialRuns db do
                    Expect.equal (state, finished) ("finished", 1) (sprintf "%s: finished exactly once" name)
            }
            test "a Slurm sweep whose driver is killed after submitting: the rerun watches the same array tasks and submits nothing" {
                requireSlurm ()
                let dir = tempDir "sweep-slurm-adopt"
                slowStudyConfig dir |> ignore
                let s = script dir "adopt" [ 1.0 ] [ 1; 2 ] ""
                let driver, _, _ = startSweep dir [ s; "--executor"; "slurm" ]
                use _driver = driver
                let db = Path.Combine(dir, "out", "run.sqlite")
                Expect.isTrue (waitForStates db 60.0 (List.contains "running")) "the array runs"
                driver.Kill()
                driver.WaitForExit()
                let jobsBefore = query db "SELECT id, job FROM trials ORDER BY id" |> List.map (fun r -> string r[0], string r[1])
                let rerun = research dir [ "sweep"; s; "--executor"; "slurm" ]
                Expect.equal rerun.ExitCode 0 (sprintf "rerun\n%s\n%s" rerun.Out rerun.Err)
                Expect.isFalse (rerun.Out.Contains "submitted job array") (sprintf "nothing resubmitted\n%s" rerun.Out)
                Expect.stringContains rerun.Out "still running from an earlier invocation" "watched"
                Expect.equal (query db "SELECT id, job FROM trials ORDER BY id" |> List.map (fun r -> string r[0], string r[1])) jobsBefore "the same array tasks"
                for KeyValue(name, v) in trialRuns db do
                    Expect.equal v ("finished", 1, 1, 1) (sprintf "%s: one attempt, finished once" name)
            }
            test "killing the driver and a running trial with SIGKILL, then rerunning, runs only the unfinished trials: each finishes exactly once" {
                let dir = tempDir "sweep-kill"
                slowStudyConfig dir |> ignore
                let s = script dir "kill" [ 1.0 ] [ 1; 2; 3 ] ""
                let driver, out, _ = startSweep dir [ s; "--parallel"; "2" ]
                use _driver = driver
                let db = Path.Combine(dir, "out", "run.sqlite")
                // The second wave: two trials finished, the next ones just started (seconds of their run ahead).
                let ready = waitForStates db 300.0 (fun states -> (states |> List.filter ((=) "finished") |> List.length) >= 2 && List.contains "running" states)
                Expect.isTrue ready "trials finished while others ran"
                driver.Kill() // SIGKILL, the driver alone: its trials run on
                driver.WaitForExit()
                // SIGKILL one running trial's `research` process.
                // The trial that started last: the one with the most of its run still ahead.
                let victim = query db "SELECT id FROM trials WHERE state = 'running' ORDER BY updated_utc DESC LIMIT 1" |> List.head |> fun r -> string r[0]
                let trialDir = Path.Combine(dir, "out", "trials", victim[..15])
                // Midway: once the trial has recorded its run, not while its process starts.
                let until = DateTime.UtcNow.AddSeconds 20.0
                let started () =
                    Directory.GetFiles(trialDir, "run.sqlite", SearchOption.AllDirectories)
                    |> Array.exists (fun f -> try not (List.isEmpty (query f "SELECT 1 FROM runs")) with _ -> false)
                while not (started ()) && DateTime.UtcNow < until do
                    Threading.Thread.Sleep 100
                let pids () =
                    [ for p in Directory.GetDirectories "/proc" do
                          match Int32.TryParse(Path.GetFileName p) with
                          | true, pid ->
                              let cmd = try File.ReadAllText(Path.Combine(p, "cmdline")) with _ -> ""
                              if cmd.Contains("run.output_dir=\"" + trialDir) && not (cmd.StartsWith "/bin/bash") then yield pid
                          | _ -> () ]
                let pids = pids ()
                Expect.isNonEmpty pids (sprintf "the running trial's process (trial %s)\n%s" trialDir (String.Join("\n", query db "SELECT name, state, pid, updated_utc FROM trials" |> List.map (fun r -> String.Join(" ", r)))))
                for pid in pids do
                    try Process.GetProcessById(pid).Kill() with _ -> ()
                let finishedBefore = query db "SELECT COUNT(*) FROM trials WHERE state = 'finished'" |> List.head |> fun r -> Convert.ToInt32 r[0]
                let rerun = research dir [ "sweep"; s; "--parallel"; "2" ]
                // Exit 0, not 2: the killed driver's lock on the sweep folder went with it.
                Expect.equal rerun.ExitCode 0 (sprintf "rerun\n%s\n%s\nfirst driver:\n%s" rerun.Out rerun.Err out.Result)
                // Trials the first driver saw finish, and any that finished on their own since, are skipped.
                let skipped = Text.RegularExpressions.Regex.Match(rerun.Out, @"(\d+) finished before")
                Expect.isTrue (skipped.Success && int skipped.Groups[1].Value >= finishedBefore) (sprintf "finished trials are skipped\n%s" rerun.Out)
                let trials = trialRuns db
                Expect.equal trials.Count 6 "ft + ewc × 3 seeds"
                for KeyValue(name, (state, _, finished, _)) in trials do
                    Expect.equal (state, finished) ("finished", 1) (sprintf "%s: finished exactly once" name)
                let victimName = query db (sprintf "SELECT name FROM trials WHERE id = '%s'" victim) |> List.head |> fun r -> string r[0]
                let state, attempts, _, runs = trials[victimName]
                Expect.equal (attempts, runs) (2, 2) "the killed trial ran again: its killed run and its finished run are both in the store"
                let killed = query db "SELECT status, pid FROM runs WHERE status = 'running'"
                Expect.equal killed.Length 1 "the killed run is recorded (running, with a dead pid: `runs list` shows it killed)"
                let untouched = trials |> Map.filter (fun n (_, a, _, _) -> n <> victimName && a <> 1)
                Expect.isEmpty untouched "no other trial ran twice"
            }
        ]
    ]
