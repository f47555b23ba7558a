/// Studies: a sequence of tasks through the same trainer, the evaluation matrices, probes and metrics.
module Research.Tests.StudyTests

open System.IO
open Expecto
open Research.Abstractions
open Research.Core.Config
open Research.Core.Plugins
open Research.Core.Studies
open Research.Core.Training
open Research.Core.Tracking
open Research.Tests.TestSupport

let private host = lazy (PluginHost.Load([]))

/// A small study on synthetic clusters (16 features, 10 classes, 5 epochs of 45 steps per task unless overridden) with
/// the given plugin host, overrides and extra TOML (which continues the [train] table unless it opens another).
let studyWith (plugins: PluginHost) (overrides: string list) (dir: string) (extra: string) =
    let path = Path.Combine(dir, "study.toml")
    File.WriteAllText(path, sprintf """
[run]
name = "study"
seed = 5
threads = 1
output_dir = "%s"
[data]
dataset = "synthetic"
synthetic_samples = 1000
synthetic_features = 16
synthetic_classes = 10
batch_size = 20
[model]
hidden = [32]
[optimizer]
lr = 0.01
[train]
epochs = 5
%s
""" (Path.Combine(dir, "runs").Replace("\\", "/")) extra)
    Trainer.Run(ConfigLoader.Load(path, overrides), plugins, kind = RunKind.Study)

let private study (dir: string) (extra: string) = studyWith host.Value [] dir extra

let private rows (o: RunOutcome) sql = Research.Tests.TrainingTests.storeRows o.RunDir sql

/// `research study` as a process on a small synthetic study (8 features, a hidden layer of 8, one thread) with extra
/// TOML and plugin folders: the result and the run directory (null when none was made).
let private studyProcess (prefix: string) (extra: string) (plugins: string list) =
    let dir = tempDir prefix
    let path = Path.Combine(dir, "study.toml")
    File.WriteAllText(path, "[run]\nname = \"s\"\nthreads = 1\n[data]\ndataset = \"synthetic\"\nsynthetic_features = 8\n[model]\nhidden = [8]\n" + extra)
    let r = research dir ([ "study"; path ] @ (plugins |> List.collect (fun p -> [ "--plugins"; p ])))
    let runs = Path.Combine(dir, "runs")
    r, (if Directory.Exists runs then Directory.GetDirectories runs |> Array.exactlyOne else null)

/// A permuted 2-task study on the synthetic clusters (900 training items per task, batches of 20: 45 steps per epoch,
/// 5 epochs) evaluated every 10 steps; early stopping whose threshold no evaluation can beat stops each task at its 4th
/// evaluation, and reduce-on-plateau with patience 0 and the same impossible threshold cuts the lr ×0.1 at each
/// evaluation after the first.
let private loopStudy () =
    study (tempDir "study-loop") """eval_every = 10
log_every = 1
early_stopping_patience = 3
early_stopping_threshold = 10.0
[schedule]
name = "reduce-on-plateau"
metric = "val_accuracy"
mode = "max"
patience = 0
threshold = 10.0
[study]
benchmark = "permuted"
tasks = 2
"""

// Training results depend (slightly) on the intra-op thread count, which is process-global: run sequenced.
let tests =
    testSequenced <| testList "studies" [
        test "one loop: each task of a study evaluates every eval_every steps, stops early at its 4th evaluation, and reduce-on-plateau reads that task's history" {
            let o = loopStudy ()
            let evals =
                rows o "SELECT phase, step FROM evaluations WHERE split = 'val' ORDER BY step"
                |> List.map (fun r -> string r[0], r[1] :?> int64)
            Expect.equal evals [ "task-0", 10L; "task-0", 20L; "task-0", 30L; "task-0", 40L; "task-1", 50L; "task-1", 60L; "task-1", 70L; "task-1", 80L ]
                "every 10 steps, each task stopped after its 4th evaluation (45 steps per epoch: no epoch ended)"
            let reason = rows o "SELECT stop_reason FROM runs" |> List.exactlyOne
            Expect.stringContains (string reason[0]) "task 0: early stopping at step 40" "task 0's stop is recorded"
            Expect.stringContains (string reason[0]) "task 1: early stopping at step 80" "and task 1's"
            let lr = rows o "SELECT step, value FROM metrics WHERE key = 'lr'" |> List.map (fun r -> r[0] :?> int64, r[1] :?> float) |> Map
            // Task 1 restarts the schedule: its own first evaluation (step 50) cannot reduce, its second (60) does.
            for first, second in [ 15L, 25L; 55L, 65L ] do
                Expect.floatClose Accuracy.veryHigh (lr[second] / lr[first]) 0.1 (sprintf "the lr after step %d is 0.1 × the lr after %d" second first)
            Expect.floatClose Accuracy.veryHigh lr[55L] lr[15L] "task 1 starts again at the full rate"
            let norms = rows o "SELECT step, COUNT(*) FROM metrics WHERE key = 'grad_norm' GROUP BY step ORDER BY step"
            Expect.equal (norms |> List.map (fun r -> r[0] :?> int64)) [ 1L .. 80L ] "one step count for the run: applied updates 1…80 across both tasks"
            Expect.isTrue (norms |> List.forall (fun r -> r[1] :?> int64 = 1L)) "each step once"
            let final = Research.Core.Checkpoints.Checkpoint.ReadState(Path.Combine(o.RunDir, "checkpoints", "final"))
            Expect.equal (final.StopReasons |> Seq.map (fun s -> s.Phase) |> List.ofSeq) [ 0; 1 ] "the stops are in the checkpoint state"
            for best in [ "best-task-0"; "best-task-1" ] do
                Expect.isTrue (Directory.Exists(Path.Combine(o.RunDir, "checkpoints", best))) (sprintf "%s written" best)
        }
        test "a study with EWC is bitwise equal to plain fine-tuning through task 0 (a penalty-only regularizer keeps AdamW's fused update)" {
            let arm extra = study (tempDir "study-fused") (sprintf "[study]\nbenchmark = \"permuted\"\ntasks = 2\n%s" extra)
            let plain = arm ""
            let ewc = arm "[[methods]]\nname = \"ewc\"\nlambda = 100.0\n"
            let bytes (o: RunOutcome) = File.ReadAllBytes(Path.Combine(o.RunDir, "tasks", "task-0", "model.safetensors"))
            Expect.equal (bytes ewc) (bytes plain) "the weights after task 0, byte for byte"
            Expect.equal ewc.Record.Loss[0] plain.Record.Loss[0] "row 0 of the loss matrix, exactly"
            Expect.notEqual ewc.Record.Loss[1] plain.Record.Loss[1] "EWC acts from task 1 on"
        }
        test "[[metrics]] with only = true chooses a study's metrics, with options: only they run and are stored, and a loaded metric not chosen does not run" {
            let r, runDir =
                studyProcess "study-metrics" "[study]\ntasks = 3\n[[metrics]]\nname = \"average-accuracy\"\nafter_task = 1\nonly = true\n[[metrics]]\nname = \"bwt\"\n" [ fixtureDir "Plugin.Faulty" ]
            Expect.equal r.ExitCode 0 (sprintf "the loaded 'throws' metric was not chosen, so it did not run: %s" r.Err)
            let stored = Research.Tests.TrainingTests.storeRows runDir "SELECT name, value FROM study_values WHERE kind = 'metric' ORDER BY name"
            Expect.equal (stored |> List.map (fun m -> string m[0])) [ "average-accuracy"; "bwt" ] "exactly the chosen metrics"
            let cells = Research.Tests.TrainingTests.storeRows runDir "SELECT accuracy FROM study_matrix WHERE split = 'test' AND after_task = 1 AND on_task <= 1 ORDER BY on_task"
            let a1 = cells |> List.averageBy (fun c -> c[0] :?> float)
            Expect.floatClose Accuracy.veryHigh (stored[0][1] :?> float) a1 "average-accuracy with after_task = 1 is the mean of R[1][0..1]"
        }
        test "research metrics recomputes a stored study's metrics from its store alone: the study's own values exactly, other metrics and options with --set, stored with --save" {
            let o = study (tempDir "study-recompute") "[study]\nbenchmark = \"permuted\"\ntasks = 3\n"
            let dir = Path.GetDirectoryName o.RunDir
            let r = research dir [ "metrics"; o.RunDir ]
            Expect.equal r.ExitCode 0 r.Err
            for struct (name, value) in o.Metrics do
                let line = r.Out.Split('\n') |> Array.find (fun l -> l.StartsWith(name + " "))
                Expect.stringContains line (value.Value.ToString("F4", System.Globalization.CultureInfo.InvariantCulture)) (sprintf "%s as the study computed it" name)
            let withOptions = research dir [ "metrics"; o.RunDir; "--set"; "metrics=[{name=\"average-accuracy\", after_task=0}, {name=\"max-forgetting\"}]"; "--save" ]
            Expect.equal withOptions.ExitCode 0 withOptions.Err
            let stored =
                Research.Tests.TrainingTests.storeRows o.RunDir "SELECT name, value FROM study_values WHERE kind = 'metric'"
                |> List.map (fun m -> string m[0], m[1] :?> float) |> Map
            Expect.floatClose Accuracy.veryHigh (stored["average-accuracy"]) (o.Record.Accuracy[0][0]) "A_0 = R[0][0], saved in place of the study's ACC"
            Expect.isTrue (stored.ContainsKey "max-forgetting") "the other chosen metric is saved"
            Expect.isTrue (stored.ContainsKey "bwt") "metrics not recomputed keep their stored values"
            let none = research dir [ "metrics"; dir + "/nothing-here" ]
            Expect.equal none.ExitCode 2 "a folder without studies is a usage error"
        }
        test "a plugin that keeps tensors across steps in plain fields, with no dispose-scope call, works: Σ_t Δθ_t it keeps equals θ_T − θ_0 (1e-4 relative)" {
            let r, runDir =
                studyProcess "study-owned" "[train]\nepochs = 2\n[study]\ntasks = 2\n[[methods]]\nname = \"fs-delta-sum\"\n" [ fixtureDir "Plugin.FSharp" ]
            Expect.equal r.ExitCode 0 (sprintf "the state outlived each step's dispose scope: %s" r.Err)
            let load (file: string) = TorchSharp.PyBridge.Safetensors.LoadStateDict file
            let sums = load (Path.Combine(runDir, "checkpoints", "final", "methods.safetensors"))
            let last, first = load (Path.Combine(runDir, "tasks", "task-1", "model.safetensors")), load (Path.Combine(runDir, "tasks", "initial", "model.safetensors"))
            Expect.equal (sums.Count) (last.Count) "a sum per parameter"
            for KeyValue(name, theta) in last do
                let change = theta - first[name]
                let gap = (sums["0/sum/" + name] - change).norm().item<float32>() |> float
                Expect.isLessThanOrEqual (gap / (change.norm().item<float32>() |> float)) 1e-4 (sprintf "Σ Δθ = θ_T − θ_0 for %s" name)
        }
        test "study --dry-run prints the resolved config with the plugins' defaults, the identity and each plugin's DLL, and trains nothing" {
            let dir = tempDir "study-dry"
            let path = Path.Combine(dir, "study.toml")
            File.WriteAllText(path, "[run]\nname = \"s\"\n[data]\ndataset = \"synthetic\"\n[study]\ntasks = 2\n[[methods]]\nname = \"ewc\"\nlambda = 5.0\n")
            let r = research dir [ "study"; path; "--dry-run" ]
            Expect.equal r.ExitCode 0 r.Err
            let config = ConfigLoader.Load(path, [])
            let identity = ResolvedConfig.Identity(ResolvedConfig.Canonical(config, host.Value, "study"), host.Value)
            Expect.stringContains r.Out identity "the identity"
            for option in [ "mode = \"separate\""; "fisher = \"exact\""; "gamma = " ] do
                Expect.stringContains r.Out option (sprintf "EWC's default %s is shown" option)
            Expect.stringContains r.Out "Research.Plugins.Methods.dll" "the regularizer's DLL"
            Expect.stringContains r.Out "SHA-256" "with its hash"
            Expect.stringContains r.Out "task 1 (permutation 1)" "each task's sizes"
            Expect.isFalse (Directory.Exists(Path.Combine(dir, "runs"))) "no run was started"
        }
        test "a forgetting metric that throws is reported (exit 1, naming the plugin, its DLL and that it failed after training) after the matrices are printed and stored; the run is recorded as failed with that reason (runs list, runs show); the other metrics are computed and read as stored" {
            let r, runDir = studyProcess "study-metric-throws" "[study]\ntasks = 2\n[[metrics]]\nname = \"bwt\"\n[[metrics]]\nname = \"throws\"\n" [ fixtureDir "Plugin.Faulty" ]
            Expect.equal r.ExitCode 1 (sprintf "a failed metric, not a crash (134): %s" r.Err)
            Expect.stringContains r.Out "Test accuracy R" "the matrices are printed"
            Expect.stringContains r.Err "forgetting metric 'throws'" "the metric is named"
            Expect.stringContains r.Err "Plugin.Faulty.dll" "with its DLL"
            Expect.stringContains r.Err "IndexOutOfRangeException" "and what it threw"
            Expect.stringContains r.Err "in Compute (the metric's computation from the study's record, after training)" "what failed"
            Expect.isFalse (r.Err.Contains "step -1") "no step that means nothing for a metric"
            Expect.isFalse (r.Err.Contains "   at ") "no stack trace"
            let metrics = Research.Tests.TrainingTests.storeRows runDir "SELECT name, value FROM study_values WHERE kind = 'metric'"
            Expect.isTrue (metrics |> List.exists (fun m -> string m[0] = "bwt" && not (isNull m[1]))) "bwt was computed and stored"
            Expect.isTrue (metrics |> List.exists (fun m -> string m[0] = "throws" && isNull m[1])) "the failed metric is stored without a value"
            let cells = Research.Tests.TrainingTests.storeRows runDir "SELECT COUNT(*) FROM study_matrix WHERE split = 'test'" |> List.exactlyOne
            Expect.equal cells[0] (box 4L) "the 2 × 2 matrix is stored"
            let run, completed, stored =
                use store = RunReader.Open(Path.Combine(runDir, RunStore.FileName))
                let run = store.Runs() |> Seq.exactlyOne
                run, store.Completed run.Id, store.StudyMetrics run.Id |> Seq.map (fun m -> m.Name, m) |> Map.ofSeq
            Expect.equal run.Status "failed" "recorded as failed"
            for part in [ "forgetting metric 'throws'"; "Plugin.Faulty.dll"; "after training"; "IndexOutOfRangeException" ] do
                Expect.stringContains (nonNull run.Error) part "the recorded reason"
            Expect.isTrue completed "yet completed: it trained to its end and stored its record, so sweeps summarise its other metrics"
            Expect.isTrue stored["bwt"].Value.HasValue "bwt read back as stored"
            Expect.stringContains (nonNull stored["throws"].Error) "IndexOutOfRangeException" "the failed metric read back with its reason"
            let list = research (Path.GetDirectoryName runDir) [ "runs"; "list"; Path.GetDirectoryName runDir ]
            let row = list.Out.Split('\n') |> Array.find (fun l -> l.StartsWith(Path.GetFileName runDir))
            Expect.equal (row.Split(" ", System.StringSplitOptions.RemoveEmptyEntries)[1]) "failed" "runs list: failed"
            Expect.stringContains row "forgetting metric 'throws'" "runs list: why"
            let show = research (Path.GetDirectoryName runDir) [ "runs"; "show"; runDir ]
            Expect.equal show.ExitCode 0 show.Err
            Expect.stringContains show.Out "status         failed" "runs show: failed"
            let errorLine = show.Out.Split('\n') |> Array.find (fun l -> l.StartsWith "error ")
            Expect.stringContains errorLine "forgetting metric 'throws'" "runs show: the reason"
            let throwsLine = show.Out.Split('\n') |> Array.find (fun l -> l.StartsWith "throws ")
            Expect.stringContains throwsLine "IndexOutOfRangeException" "runs show: the failed metric with its reason"
            // A sweep merging the run counts it and summarises the metrics that were computed.
            let spec : Research.Sweeps.TrialSpec =
                { Arm = "a"; Labels = [||]; Numbers = [||]; Seed = 1; Config = ""; Overrides = [||]; Command = "study"; From = null; FromKey = null }
            let trial : Research.Sweeps.SweepStore.Trial =
                { Id = "0123456789abcdef"; Spec = spec; Name = "a-s1"; Dir = Path.GetDirectoryName runDir; State = "running"; Attempts = 1
                  ExitCode = System.Nullable 1; Log = null; Executor = null; Job = null; Pid = System.Nullable() }
            use sweep = new Research.Sweeps.SweepStore.Store(Path.Combine(tempDir "study-metric-throws-sweep", RunStore.FileName))
            Expect.equal (sweep.Merge trial |> List.map (fun r -> r.Status, r.Completed)) [ "failed", true ] "merged: failed, and completed"
            let completed = sweep.CompletedRun trial
            Expect.equal completed (Some run.Id) "the trial's completed run"
            Expect.equal (Research.Sweeps.Summary.metricOf sweep "study" run.Id "bwt") (Option.ofNullable stored["bwt"].Value) "bwt summarised as stored"
            Expect.isNone (Research.Sweeps.Summary.metricOf sweep "study" run.Id "throws") "the failed metric has no value"
        }
        test "a split study fills the T × T matrices, stores them, and computes every forgetting metric plugin" {
            let dir = tempDir "study"
            let outcome = study dir "[study]\nbenchmark = \"split-task\"\n"
            let r = outcome.Record
            Expect.equal r.Tasks.Count 5 "5 tasks of 2 classes"
            Expect.equal (r.Accuracy |> Array.map Array.length) [| 5; 5; 5; 5; 5 |] "5 × 5"
            for i in 0 .. 4 do Expect.isGreaterThan (r.Accuracy[i][i]) 0.8 (sprintf "task %d learned (chance: 0.5)" i)
            let names = outcome.Metrics |> Seq.map (fun struct (n, _) -> n) |> Set
            Expect.containsAll names [ "average-forgetting"; "bwt"; "fwt"; "accuracy-drop"; "loss-increase"; "average-accuracy" ] "metrics"
            use store = new RunStore(Path.Combine(outcome.RunDir, RunStore.FileName))
            let cells = store.Query("SELECT COUNT(*) FROM study_matrix WHERE split = 'test'") |> Seq.exactlyOne
            Expect.equal cells[0] (box 25L) "25 test cells stored"
            let snapshots = Directory.GetDirectories(Path.Combine(outcome.RunDir, "tasks")) |> Array.map Path.GetFileName |> Array.sort
            Expect.equal snapshots [| "initial"; "task-0"; "task-1"; "task-2"; "task-3"; "task-4" |] "the initial weights and a snapshot per task end"
            let resolved = store.Query("SELECT resolved_json FROM runs") |> Seq.exactlyOne
            Expect.stringContains (string resolved[0]) "\"reset_optimizer\":true" "whether moments reset per task is in the record"
            Expect.stringContains (string resolved[0]) "\"reset_schedule\":true" "and whether the schedule restarts"
        }
        test "split-class with classes_per_task = 5 on 10 classes makes two tasks, classes 0-4 and 5-9, each learning its five (chance 0.2); the key on a permuted study is refused, naming it" {
            let o = study (tempDir "study-halves") "[study]\nbenchmark = \"split-class\"\nclasses_per_task = 5\n"
            Expect.equal (List.ofSeq o.Record.Tasks) [ "classes 0-4"; "classes 5-9" ] "two tasks of five classes"
            for i in 0 .. 1 do Expect.isGreaterThan (o.Record.Accuracy[i][i]) 0.6 (sprintf "task %d learned (chance: 0.2)" i)
            let message =
                try
                    study (tempDir "study-halves-bad") "[study]\nbenchmark = \"permuted\"\nclasses_per_task = 5\n" |> ignore
                    "accepted"
                with :? ConfigException as e -> e.Message
            Expect.stringContains message "classes_per_task" "refused, naming the key"
        }
        test "task-incremental heads: each task only uses its own two logits, so chance is 0.5 and forgetting is far smaller than class-incremental" {
            let dir = tempDir "study-til"
            let til = study dir "[study]\nbenchmark = \"split-task\"\n"
            let cil = study (tempDir "study-cil") "[study]\nbenchmark = \"split-class\"\n"
            let forgetting (o: RunOutcome) = o.Metrics |> Seq.pick (fun struct (n, v) -> if n = "average-forgetting" then Some v.Value else None)
            Expect.isGreaterThan (forgetting cil) 0.05 "class-incremental plain fine-tuning forgets"
            Expect.isLessThan (forgetting til) (forgetting cil) "task-IL forgets less"
            let chance = til.Record.Probes[ProbeNames.RandomInitAccuracy][0]
            for c in chance do Expect.isGreaterThan c 0.2 "a random 2-way head scores near 0.5, not near 0.1"
        }
        test "joint training on all tasks seen so far keeps earlier tasks (the upper bound)" {
            let joint = study (tempDir "study-joint") "[study]\nbenchmark = \"split-class\"\njoint = true\n"
            Expect.isGreaterThan (joint.Record.Accuracy[4][0]) 0.8 "task 0 kept under joint training"
        }
        test "the study figures: each task's accuracy as tasks are added, and average accuracy per arm, as PNG" {
            let o = study (tempDir "study-plot") "[study]\nbenchmark = \"permuted\"\ntasks = 2\n"
            let dir = tempDir "figures"
            let perTask, average = Path.Combine(dir, "tasks.png"), Path.Combine(dir, "average.png")
            Research.Reporting.StudyPlot.WriteTaskAccuracy(perTask, "fine-tuning", o.Record)
            Research.Reporting.StudyPlot.WriteAverageAccuracy(average, "arms", [ struct ("fine-tuning", o.Record); struct ("again", o.Record) ])
            for png in [ perTask; average ] do
                let bytes = File.ReadAllBytes png
                Expect.equal bytes[1..3] "PNG"B (sprintf "%s is a PNG" png)
                Expect.isGreaterThan bytes.Length 5000 "with something drawn"
        }
        test "research plot matrix draws a study's accuracy matrix, research plot curves its loss curve, as PNG" {
            let o = study (tempDir "study-heat") "log_every = 1\n[study]\nbenchmark = \"permuted\"\ntasks = 2\n"
            let dir = tempDir "plots"
            let matrix = research dir [ "plot"; "matrix"; o.RunDir; "-o"; "m.png" ]
            Expect.equal matrix.ExitCode 0 matrix.Err
            let curves = research dir [ "plot"; "curves"; o.RunDir; "--key"; "train_loss"; "-o"; "c.png" ]
            Expect.equal curves.ExitCode 0 curves.Err
            for png in [ "m.png"; "c.png" ] do
                Expect.equal (File.ReadAllBytes(Path.Combine(dir, png))[1..3]) "PNG"B png
            let notAStudy = research dir [ "plot"; "matrix"; dir ]
            Expect.equal notAStudy.ExitCode 2 "a folder without a run store is a usage error"
        }
        test "permuted tasks: the random-init and parameter-change probes are in the record" {
            let o = study (tempDir "study-perm") "[study]\nbenchmark = \"permuted\"\ntasks = 3\n"
            Expect.equal o.Record.Tasks.Count 3 "3 permutations"
            Expect.equal (o.Record.Probes.[ProbeNames.RandomInitAccuracy].[0].Length) 3 "1 × T"
            Expect.equal (o.Record.Probes[ProbeNames.ParameterChangeNorm] |> Array.map (fun r -> r.Length)) [| 1; 1; 1 |] "T × 1"
            for row in o.Record.Probes[ProbeNames.ParameterChangeNorm] do Expect.isGreaterThan (row[0]) 0.0 "the parameters moved"
        }
    ]
