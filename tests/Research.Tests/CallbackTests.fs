/// Callbacks, control and the log sink (contract 3.0): every hook point called where and as often as the run says, the
/// plugins' requests acted on at the next step boundary and kept across a SIGKILL, their logged values in the store,
/// `runs show`, sweeps and TensorBoard, and their faults named.
module Research.Tests.CallbackTests

open System
open System.IO
open Expecto
open Research.Core.Checkpoints
open Research.Core.Tracking
open Research.Tests.TestSupport

let private fixture = fixtureDir "Plugin.Callbacks"

/// 600 synthetic items, 540 of them trained on in micro-batches of 32 → 17 micro-batches per epoch; windows of 3 → 6
/// steps per epoch, the last window of 2 micro-batches. `checkpoint` and `extra` are the [checkpoint] keys and the tables
/// after [train].
let private config (dir: string) (epochs: int) (checkpoint: string) (extra: string) =
    let path = Path.Combine(dir, "run.toml")
    File.WriteAllText(path, sprintf """
[run]
name = "callbacks"
seed = 3
threads = 1
output_dir = "%s"
[data]
dataset = "synthetic"
synthetic_samples = 600
synthetic_features = 8
synthetic_classes = 3
batch_size = 32
[model]
hidden = [16]
[checkpoint]
%s
[train]
epochs = %d
grad_accum = 3
log_every = 1
%s
""" (Path.Combine(dir, "runs").Replace("\\", "/")) checkpoint epochs extra)
    path

/// Micro-batches per window of an epoch (17 micro-batches in windows of 3).
let private windows = [ 3; 3; 3; 3; 3; 2 ]

let private tracer (options: string) = sprintf "[[callbacks]]\nname = \"tracer\"\n%s\n" options

let private train (dir: string) (path: string) = research dir [ "train"; path; "--plugins"; fixture ]

/// Each traced call as "Member step task first-detail" (the batch sizes the forward hooks add are left out).
let private traced (file: string) =
    File.ReadAllLines file |> Array.map (fun l -> l.Split(' ') |> Array.truncate 4 |> String.concat " ") |> List.ofArray

let private rows (runDir: string) sql = Research.Tests.TrainingTests.storeRows runDir sql

/// A plugin's logged values of one name: (step, value) in the order of the steps.
let private logged (runDir: string) (key: string) =
    rows runDir (sprintf "SELECT step, value FROM metrics WHERE key = '%s' ORDER BY step, rowid" key)
    |> List.map (fun r -> r[0] :?> int64, r[1] :?> float)

let private finalWeights (runDir: string) =
    let d = TorchSharp.PyBridge.Safetensors.LoadStateDict(Path.Combine(runDir, "checkpoints", "final", Checkpoint.Model))
    d |> Seq.sortBy (fun kv -> kv.Key) |> Seq.map (fun kv -> kv.Key, kv.Value.data<float32>().ToArray()) |> List.ofSeq

/// What a run leaves that must not depend on an interruption: final weights, every value the plugins logged, every
/// evaluation, how it ended.
let private result (runDir: string) =
    let text sql = rows runDir sql |> List.map (fun r -> r |> Array.map string |> String.concat " ")
    finalWeights runDir,
    text "SELECT step, key, value FROM metrics WHERE key LIKE 'plugin/%' ORDER BY step, key, rowid",
    text "SELECT step, epoch, split, loss, accuracy FROM evaluations ORDER BY step, split, rowid",
    text "SELECT status, stop_reason FROM runs"

let tests =
    testList "callbacks" [
        test "the host calls the members a class implements: every ICallback member of the tracer, only EpochEnd of the epoch counter" {
            let host = Research.Core.Plugins.PluginHost.Load([ fixture ], includeBuiltIn = false)
            let members name = (host.Find(Research.Core.Plugins.PluginRole.Method, name).Type |> Research.Core.Training.CallbackDispatch.Implemented) |> Set.ofSeq
            let all = typeof<Research.Abstractions.ICallback>.GetMethods() |> Array.map (fun m -> m.Name) |> Set.ofArray
            Expect.equal all.Count 11 "ICallback has 11 hook points"
            Expect.equal (members "tracer") all "the tracer implements all of them"
            Expect.equal (members "epoch-counter") (set [ "EpochEnd" ]) "the counter only EpochEnd"
        }

        test "every hook point is called in order and as often as the run says: per micro-batch forward then backward (2 epochs × 17 of each), per epoch start and end, the evaluations asked for and the epochs' own, the checkpoint asked for and the final one" {
            let dir = tempDir "callbacks-order"
            let trace = Path.Combine(dir, "trace.txt")
            let path =
                config dir 2 "at_epoch_end = false\nbest_metric = \"\""
                    (tracer (sprintf "trace = \"%s\"\nevaluate_at = 4\ncheckpoint_at = 9" (trace.Replace("\\", "/"))) + "[[callbacks]]\nname = \"epoch-counter\"\n")
            let r = train dir path
            Expect.equal r.ExitCode 0 r.Err
            let expected =
                [ yield "RunStart 0 0"
                  let mutable step = 0
                  for epoch in 0 .. 1 do
                      yield sprintf "EpochStart %d 0 %d" step epoch
                      for micro in windows do
                          for i in 0 .. micro - 1 do
                              for hook in [ "BeforeForward"; "AfterForward"; "BeforeBackward"; "AfterBackward" ] do
                                  yield sprintf "%s %d 0 %d" hook step i
                          step <- step + 1
                          // A request is acted on at the boundary after the step it was made in.
                          if step = 4 then yield! [ sprintf "BeforeEvaluation 4 0 %d" epoch; sprintf "AfterEvaluation 4 0 %d" epoch ]
                          if step = 9 then yield "AfterCheckpoint 9 0 step-000000009"
                      yield! [ sprintf "BeforeEvaluation %d 0 %d" step epoch; sprintf "AfterEvaluation %d 0 %d" step epoch; sprintf "EpochEnd %d 0 %d" step epoch ]
                  yield "AfterCheckpoint 12 0 final"
                  yield "RunEnd 12 0" ]
            let calls = traced trace
            let count hook = calls |> List.filter (fun l -> l.StartsWith(hook + " ")) |> List.length
            for hook in [ "BeforeForward"; "AfterForward"; "BeforeBackward"; "AfterBackward" ] do
                Expect.equal (count hook) (2 * 17) (sprintf "%s: once per micro-batch, epochs × micro-batches" hook)
            Expect.equal (count "EpochStart", count "EpochEnd", count "RunStart", count "RunEnd") (2, 2, 1, 1) "epochs × 1 each; the run once"
            Expect.equal calls expected "the whole sequence of calls"
            let runDir = onlyRunDir dir
            let steps = rows runDir "SELECT COUNT(*) FROM metrics WHERE key = 'grad_norm'" |> List.exactlyOne
            Expect.equal (steps[0] :?> int64) 12L "12 steps: 2 epochs × 6 windows, as the trace has"
            let evaluations = rows runDir "SELECT step FROM evaluations WHERE split = 'val' ORDER BY step" |> List.map (fun r -> r[0] :?> int64)
            Expect.equal evaluations [ 4L; 6L; 12L ] "the evaluation asked for at step 4 beside each epoch's"
            Expect.isTrue (Directory.Exists(Path.Combine(runDir, "checkpoints", "step-000000009"))) "the checkpoint asked for at step 9"
            Expect.equal (logged runDir "plugin/epoch-counter/epochs") [ 6L, 1.0; 12L, 2.0 ] "the one-member callback saw each epoch end, at its step"
        }

        test "logged values go into the store at their steps: a counter kept as state equals the step, an evaluation's value equals the stored evaluation (exactly), one row per step and name logged during a step, one per call outside" {
            let dir = tempDir "callbacks-log"
            let path = config dir 2 "" (tracer "evaluate_at = 4")
            let r = train dir path
            Expect.equal r.ExitCode 0 r.Err
            let runDir = onlyRunDir dir
            Expect.equal (logged runDir "plugin/tracer/steps_seen") [ for s in 1L .. 12L -> s, float s ] "steps_seen = s at step s"
            let losses = logged runDir "plugin/tracer/loss/micro0"
            Expect.equal (losses |> List.map fst) [ 1L .. 12L ] "each step's first micro-batch loss, in the step's row"
            Expect.isTrue (losses |> List.forall (fun (_, v) -> Double.IsFinite v && v > 0.0)) "a positive loss"
            let evaluated = rows runDir "SELECT step, loss FROM evaluations WHERE split = 'val' ORDER BY step" |> List.map (fun r -> r[0] :?> int64, r[1] :?> float)
            Expect.equal (logged runDir "plugin/tracer/val_loss_seen") evaluated "what AfterEvaluation saw is what the store holds, at the same steps"
            // Each micro-batch of a step logs loss/micro0..2 and the first steps_seen: one row per step and name.
            let twice = rows runDir "SELECT COUNT(*) FROM (SELECT step, key FROM metrics WHERE key LIKE 'plugin/tracer/loss/%' OR key = 'plugin/tracer/steps_seen' GROUP BY step, key HAVING COUNT(*) > 1)" |> List.exactlyOne
            Expect.equal (twice[0] :?> int64) 0L "no name logged during a step twice at that step"
            // AfterCheckpoint logs at each checkpoint, outside a step: at step 12 the epoch end's and the final one at least.
            let seen = logged runDir "plugin/tracer/checkpoints_seen"
            Expect.equal (seen |> List.map snd) [ for n in 1 .. seen.Length -> float n ] "a row per call: 1, 2, … checkpoints seen"
            Expect.isGreaterThanOrEqual (seen |> List.filter (fun (s, _) -> s = 12L) |> List.length) 2 "two calls at step 12, two rows"
        }

        test "a stop asked for ends the run at that step, after a final evaluation and checkpoint, recorded as stopped by the plugin with its reason; runs list/show, sweeps and TensorBoard read the logged values" {
            let dir = tempDir "callbacks-stop"
            let path = config dir 3 "" (tracer "stop_at = 8\nstop_reason = \"loss below target\"")
            let r = train dir path
            Expect.equal r.ExitCode 0 r.Err
            let runDir = onlyRunDir dir
            let run = rows runDir "SELECT status, stop_reason FROM runs" |> List.exactlyOne
            Expect.equal (string run[0]) "finished" "the run finished"
            Expect.equal (string run[1]) "stopped by method 'tracer' at step 8: loss below target" "stopped by the plugin, with its reason"
            let last = rows runDir "SELECT MAX(step) FROM metrics WHERE key = 'grad_norm'" |> List.exactlyOne
            Expect.equal (last[0] :?> int64) 8L "no step after step 8 (of 18)"
            Expect.equal (Checkpoint.ReadState(Path.Combine(runDir, "checkpoints", "final"))).Step 8L "the final checkpoint is at step 8"
            let splits = rows runDir "SELECT split FROM evaluations WHERE step = 8 ORDER BY split" |> List.map (fun r -> string r[0])
            Expect.equal splits [ "test"; "val" ] "the final evaluation at step 8"
            let list = research dir [ "runs"; "list"; Path.Combine(dir, "runs") ]
            Expect.equal list.ExitCode 0 list.Err
            Expect.stringContains list.Out "stopped by method 'tracer' at step 8" "runs list shows why it ended"
            let show = research dir [ "runs"; "show"; runDir ]
            Expect.equal show.ExitCode 0 show.Err
            Expect.stringContains show.Out "stop_reason    stopped by method 'tracer' at step 8: loss below target" "runs show too"
            let line = show.Out.Split('\n') |> Array.tryFind (fun l -> l.Contains "plugin/tracer/steps_seen")
            Expect.isSome line "runs show lists the logged values"
            Expect.equal (line.Value.Split(' ', StringSplitOptions.RemoveEmptyEntries) |> Array.skip 1) [| "8"; "8" |] "the last value, 8, at step 8"
            let runId = string (rows runDir "SELECT id FROM runs" |> List.exactlyOne).[0]
            use store = Research.Sweeps.SweepStore.Store.OpenReadOnly(Path.Combine(runDir, RunStore.FileName))
            Expect.equal (Research.Sweeps.Summary.metricOf store "train" runId "log:tracer/steps_seen") (Some 8.0) "a sweep reads it as log:tracer/steps_seen"
            let events = Directory.GetFiles(runDir, "events.out.tfevents.*") |> Array.exactlyOne |> File.ReadAllBytes
            Expect.isTrue (Text.Encoding.UTF8.GetString(events).Contains "plugin/tracer/steps_seen") "the TensorBoard events hold the tag"
            let png = Path.Combine(dir, "curve.png")
            let plot = research dir [ "plot"; "curves"; runDir; "--key"; "log:tracer/steps_seen"; "-o"; png ]
            Expect.equal plot.ExitCode 0 plot.Err
            Expect.isTrue (File.Exists png) "plot curves draws it"
        }

        test "a stop asked for in a study ends the whole study after its task's row: no later task, no metrics, recorded as stopped; methods and callbacks run side by side" {
            let dir = tempDir "callbacks-study-stop"
            let trace = Path.Combine(dir, "trace.txt")
            let callback = tracer (sprintf "trace = \"%s\"\nstop_at = 3" (trace.Replace("\\", "/")))
            let path = syntheticStudy dir "stop" ("[[methods]]\nname = \"ewc\"\nlambda = 10.0\n" + callback)
            let r = research dir [ "study"; path; "--plugins"; fixture ]
            Expect.equal r.ExitCode 0 r.Err
            let runDir = onlyRunDir dir
            let run = rows runDir "SELECT status, stop_reason FROM runs" |> List.exactlyOne
            Expect.equal (string run[0]) "finished" "the study finished"
            Expect.equal (string run[1]) "task 0: stopped by method 'tracer' at step 3: the tracer has seen enough" "stopped by the plugin in task 0"
            let tasks = rows runDir "SELECT DISTINCT after_task FROM study_matrix" |> List.map (fun r -> r[0] :?> int64)
            Expect.equal tasks [ 0L ] "the row of task 0 only"
            let metrics = rows runDir "SELECT COUNT(*) FROM study_values WHERE kind = 'metric'" |> List.exactlyOne
            Expect.equal (metrics[0] :?> int64) 0L "no forgetting metric of a study that did not reach its end"
            let calls = traced trace
            Expect.isFalse (calls |> List.exists (fun l -> l.StartsWith "BeforeForward" && l.Split(' ')[2] = "1")) "task 1 never trained"
            Expect.equal (List.last calls) "RunEnd 3 0" "the run ended at step 3"
        }

        test "killed with SIGKILL at 4 points and resumed, a run with requests (one pending across the epoch end's checkpoint) and a stop ends with weights bitwise equal, the same logged rows, evaluations and stop" {
            let options = "evaluate_at = 4\ncheckpoint_at = 9\nstop_at = 14\nat_first_epoch_end = \"evaluation\""
            let run (dir: string) (kill: int option) =
                let path = config dir 3 "every = 2" (tracer options)
                let args = [ Path.Combine(binDir, "research.dll"); "train"; path; "--plugins"; fixture ]
                match kill with
                | None -> Expect.equal (runProcess dir "dotnet" args).ExitCode 0 "the uninterrupted run"
                | Some n ->
                    let killed = runProcessWith [ "RESEARCH_KILL_AFTER_MICROBATCHES", string n ] dir "dotnet" args
                    Expect.equal killed.ExitCode 137 (sprintf "killed by SIGKILL after micro-batch %d" n)
                    let r = research dir [ "train"; path; "--plugins"; fixture; "--resume"; onlyRunDir dir ]
                    Expect.equal r.ExitCode 0 (sprintf "resume after micro-batch %d: %s" n r.Err)
                result (onlyRunDir dir)
            let reference = run (tempDir "callbacks-ref") None
            let _, logs, evaluations, ending = reference
            Expect.isTrue (evaluations |> List.exists (fun e -> e.StartsWith "7 1 val")) "the evaluation asked for at the first epoch's end happened after step 7"
            Expect.isTrue (evaluations |> List.exists (fun e -> e.StartsWith "4 0 val")) "the one asked for at step 4"
            Expect.equal ending [ "finished stopped by method 'tracer' at step 14: the tracer has seen enough" ] "stopped at step 14"
            Expect.isTrue (logs |> List.exists (fun l -> l.StartsWith "14 plugin/tracer/steps_seen 14")) "logged up to the stop"
            // 18: the first micro-batch of epoch 1, which resumes from the epoch end's checkpoint with the request pending.
            let rng = Random(20261207)
            for n in [ 18; rng.Next(7, 18); rng.Next(19, 30); rng.Next(30, 41) ] do
                let weights, logs', evaluations', ending' = run (tempDir "callbacks-resume") (Some n)
                let w0, _, _, _ = reference
                Expect.equal weights w0 (sprintf "final weights bitwise equal after a kill at micro-batch %d" n)
                Expect.equal logs' logs (sprintf "the same logged rows after a kill at micro-batch %d" n)
                Expect.equal evaluations' evaluations (sprintf "the same evaluations after a kill at micro-batch %d" n)
                Expect.equal ending' ending (sprintf "the same stop after a kill at micro-batch %d" n)
        }

        test "a callback that throws, in a step or at an epoch's end, or logs a value that is not finite, fails the run naming the plugin, its DLL, the member and the step" {
            for options, parts in
                [ "throw_in = \"AfterForward\"\nfault_at = 2", [ "threw InvalidOperationException in AfterForward at step 2"; "told to fail in AfterForward" ]
                  "throw_in = \"EpochEnd\"\nfault_at = 6", [ "threw InvalidOperationException in EpochEnd at step 6" ]
                  "nan_at = 3", [ "Log.Scalar (in BeforeForward) at step 2"; "not finite (NaN) for 'broken'" ] ] do
                let dir = tempDir "callbacks-fault"
                let r = train dir (config dir 2 "" (tracer options))
                Expect.equal r.ExitCode 1 (sprintf "%s: exit 1; %s" options r.Err)
                Expect.isFalse (r.Err.Contains "   at ") "no stack trace"
                let line = r.Err.Split('\n') |> Array.tryFind (fun l -> l.Contains "method 'tracer'")
                Expect.isSome line (sprintf "a line names the plugin: %s" r.Err)
                for part in "Plugin.Callbacks.dll" :: parts do Expect.stringContains line.Value part (sprintf "%s: the line names it" options)
                let run = rows (onlyRunDir dir) "SELECT status, error FROM runs" |> List.exactlyOne
                Expect.equal (string run[0]) "failed" "recorded as failed"
                Expect.stringContains (string run[1]) "method 'tracer'" "with the reason"
        }
    ]
