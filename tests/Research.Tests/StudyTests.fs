/// Studies: a sequence of tasks through the same trainer, the evaluation matrices, probes and metrics.
module Research.Tests.StudyTests

open System.IO
open Expecto
open Research.Abstractions
open Research.Core.Config
open Research.Core.Plugins
open Research.Core.Studies
open Research.Core.Tracking
open Research.Tests.TestSupport

let private host = lazy (PluginHost.Load([]))

/// A small study on synthetic clusters: 16 features, 10 classes, 5 epochs (45 steps) per task.
let private study (dir: string) (extra: string) =
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
    StudyRunner.Run(ConfigLoader.Load(path, []), host.Value)

// Training results depend (slightly) on the intra-op thread count, which is process-global: run sequenced.
let tests =
    testSequenced <| testList "studies" [
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
            let snapshots = Directory.GetDirectories(Path.Combine(outcome.RunDir, "tasks")) |> Array.length
            Expect.equal snapshots 5 "a parameter snapshot per task end"
            let resolved = store.Query("SELECT resolved_json FROM runs") |> Seq.exactlyOne
            Expect.stringContains (string resolved[0]) "\"ResetOptimizer\":true" "whether moments reset per task is in the record"
            Expect.stringContains (string resolved[0]) "\"ResetSchedule\":true" "and whether the schedule restarts"
        }
        test "task-incremental heads: each task only uses its own two logits, so chance is 0.5 and forgetting is far smaller than class-incremental" {
            let dir = tempDir "study-til"
            let til = study dir "[study]\nbenchmark = \"split-task\"\n"
            let cil = study (tempDir "study-cil") "[study]\nbenchmark = \"split-class\"\n"
            let forgetting (o: StudyOutcome) = o.Metrics |> Seq.pick (fun struct (n, v) -> if n = "average-forgetting" then Some v.Value else None)
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
            Research.Core.Plotting.StudyPlot.WriteTaskAccuracy(perTask, "fine-tuning", o.Record)
            Research.Core.Plotting.StudyPlot.WriteAverageAccuracy(average, "arms", [ struct ("fine-tuning", o.Record); struct ("again", o.Record) ])
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
