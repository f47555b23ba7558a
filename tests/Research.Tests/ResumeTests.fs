/// Checkpoints and exact resume: a run killed with SIGKILL anywhere and resumed ends bitwise equal.
module Research.Tests.ResumeTests

open System
open System.IO
open Expecto
open TorchSharp
open Research.Core.Checkpoints
open Research.Core.Tracking
open Research.Tests.TestSupport

/// 540 training items in micro-batches of 32 → 17 micro-batches per epoch, windows of 3 → 6 steps per epoch
/// (the last window short), 3 epochs: 51 micro-batches, 18 steps; a checkpoint every 2 steps and at epoch ends.
let private config (dir: string) =
    let path = Path.Combine(dir, "run.toml")
    File.WriteAllText(path, sprintf """
[run]
name = "resume"
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
[schedule]
name = "cosine"
warmup_steps = 3
[checkpoint]
every = 2
[train]
epochs = 3
grad_accum = 3
log_every = 1
""" (Path.Combine(dir, "runs").Replace("\\", "/")))
    path

let private finalWeights (runDir: string) =
    let d = TorchSharp.PyBridge.Safetensors.LoadStateDict(Path.Combine(runDir, "checkpoints", "final", Checkpoint.Model))
    d |> Seq.sortBy (fun kv -> kv.Key) |> Seq.map (fun kv -> kv.Key, kv.Value.data<float32>().ToArray()) |> List.ofSeq

let private runDirs (dir: string) = Directory.GetDirectories(Path.Combine(dir, "runs")) |> Array.sort

/// The run finished, with one grad_norm row per step 1…steps: none lost, none twice.
let private expectStepsOnce (runDir: string) (steps: int64) =
    use store = new RunStore(Path.Combine(runDir, RunStore.FileName))
    let status = store.Query("SELECT status FROM runs") |> Seq.exactlyOne
    Expect.equal status[0] (box "finished") "finished"
    let norms = store.Query("SELECT step, COUNT(*) FROM metrics WHERE key = 'grad_norm' GROUP BY step ORDER BY step") |> List.ofSeq
    Expect.equal (norms |> List.map (fun r -> r[0] :?> int64)) [ 1L .. steps ] "one grad_norm row per step, none lost"
    Expect.isTrue (norms |> List.forall (fun r -> r[1] :?> int64 = 1L)) "and none twice"

/// Every (key, step) metric row exactly once, the run finished, one validation per epoch.
let private expectCleanStore (runDir: string) (steps: int64) =
    expectStepsOnce runDir steps
    use store = new RunStore(Path.Combine(runDir, RunStore.FileName))
    let evals = store.Query("SELECT epoch, COUNT(*) FROM evaluations WHERE split = 'val' GROUP BY epoch") |> List.ofSeq
    Expect.equal (evals |> List.map (fun r -> r[1] :?> int64)) [ 1L; 1L; 1L ] "one validation per epoch"

let private reference = lazy (
    let dir = tempDir "resume-ref"
    let r = research dir [ "train"; config dir ]
    if r.ExitCode <> 0 then failtestf "reference run failed: %s" r.Err
    finalWeights (Array.exactlyOne (runDirs dir)))

/// Kills a run after n micro-batches (SIGKILL, from inside), resumes it, returns the run directory.
let private killAndResume (n: int) (beforeResume: string -> unit) =
    let dir = tempDir "resume"
    let path = config dir
    let killed = researchKilledAfter n dir [ "train"; path ]
    Expect.equal killed.ExitCode 137 (sprintf "killed by SIGKILL after micro-batch %d" n)
    let runDir = Array.exactlyOne (runDirs dir)
    beforeResume runDir
    let r = research dir [ "train"; path; "--resume"; runDir ]
    Expect.equal r.ExitCode 0 (sprintf "resume after micro-batch %d: %s" n r.Err)
    runDir, r

/// A 3-task permuted EWC study (exact Fisher) on the synthetic clusters: 540 training items per task in micro-batches
/// of 32 → 17 micro-batches, windows of 2 → 9 steps per epoch, 2 epochs: 18 steps and 34 micro-batches per task, 102 in
/// all; a checkpoint every 4 steps and at phase ends. Each consolidation reads 11 batches of 50 (tasks 0 and 1; nothing
/// consolidates after the last task).
let private studyConfigWith (methods: string) (dir: string) =
    let path = Path.Combine(dir, "study.toml")
    File.WriteAllText(path, sprintf """
[run]
name = "study-resume"
seed = 11
threads = 1
output_dir = "%s"
[data]
dataset = "synthetic"
synthetic_samples = 600
synthetic_features = 8
synthetic_classes = 3
batch_size = 32
eval_batch_size = 50
[model]
hidden = [16]
[schedule]
name = "cosine"
warmup_steps = 3
[checkpoint]
every = 4
at_epoch_end = false
[train]
epochs = 2
grad_accum = 2
log_every = 1
[study]
benchmark = "permuted"
tasks = 3
%s
""" (Path.Combine(dir, "runs").Replace("\\", "/")) methods)
    path

let private ewc = "[[methods]]\nname = \"ewc\"\nlambda = 10.0\nfisher = \"exact\"\n"
let private studyConfig = studyConfigWith ewc

/// Every kind of method state at once: SI (path integral, importances), LwF (a teacher through the shadow model), replay
/// (a memory mixed into batches, drawn per step) and A-GEM (reference draws from replay's memory).
let private everyRole =
    "[[methods]]\nname = \"si\"\nc = 1.0\n[[methods]]\nname = \"lwf\"\n[[methods]]\nname = \"replay\"\nbudget = 60\nmix_ratio = 0.5\nselection = \"reservoir\"\n" +
    "[[methods]]\nname = \"a-gem\"\nreference_items = 16\n"

/// What a study leaves that must not depend on interruptions: final weights, both matrices, probes and metrics.
let private studyResult (runDir: string) =
    use store = new RunStore(Path.Combine(runDir, RunStore.FileName))
    let rows sql = store.Query(sql) |> Seq.map (fun r -> r |> Array.map string |> String.concat " ") |> List.ofSeq
    finalWeights runDir,
    rows "SELECT after_task, on_task, split, loss, accuracy FROM study_matrix ORDER BY after_task, on_task, split",
    rows "SELECT kind, name, value, json FROM study_values ORDER BY kind, name"

let private referenceOf (methods: string) =
    let dir = tempDir "study-resume-ref"
    let r = research dir [ "study"; studyConfigWith methods dir ]
    if r.ExitCode <> 0 then failtestf "reference study failed: %s" r.Err
    studyResult (Array.exactlyOne (runDirs dir))

let private studyReference = lazy (referenceOf ewc)

let tests =
    testList "resume" [
        test "a 3-task EWC study killed with SIGKILL at 6 random points (mid-task, after a consolidation, inside a consolidation) resumes to final weights, matrices and metrics bitwise equal to an uninterrupted study" {
            let rng = Random(20261201)
            // After the first checkpoint (step 4 = micro-batch 8); task 1's first steps resume from task 0's consolidated
            // checkpoint; a consolidation batch kill resumes from the task's "trained" checkpoint.
            let points =
                [ for _ in 1 .. 4 -> "RESEARCH_KILL_AFTER_MICROBATCHES", rng.Next(9, 103) ]
                @ [ "RESEARCH_KILL_AFTER_MICROBATCHES", rng.Next(35, 41)
                    "RESEARCH_KILL_AFTER_CONSOLIDATION_BATCHES", rng.Next(1, 23) ]
            for variable, n in points do
                let dir = tempDir "study-resume"
                let path = studyConfig dir
                let killed = runProcessWith [ variable, string n ] dir "dotnet" [ Path.Combine(binDir, "research.dll"); "study"; path ]
                Expect.equal killed.ExitCode 137 (sprintf "killed by SIGKILL at %s=%d" variable n)
                let runDir = Array.exactlyOne (runDirs dir)
                let r = research dir [ "study"; path; "--resume"; runDir ]
                Expect.equal r.ExitCode 0 (sprintf "resume after %s=%d: %s" variable n r.Err)
                let weights, matrix, values = studyResult runDir
                let w0, m0, v0 = studyReference.Value
                Expect.equal weights w0 (sprintf "final weights bitwise equal after %s=%d" variable n)
                Expect.equal matrix m0 (sprintf "the matrices, every digit, after %s=%d" variable n)
                Expect.equal values v0 (sprintf "probes and metrics after %s=%d" variable n)
                expectStepsOnce runDir 54L
        }
        test "a study with SI, LwF, reservoir replay and A-GEM killed with SIGKILL at 3 random micro-batches resumes to weights, matrices, probes and metrics bitwise equal to an uninterrupted one" {
            let rng = Random(20261202)
            let reference = referenceOf everyRole
            for n in [ rng.Next(9, 35); rng.Next(41, 70); rng.Next(75, 103) ] do
                let dir = tempDir "study-resume-methods"
                let path = studyConfigWith everyRole dir
                let killed = runProcessWith [ "RESEARCH_KILL_AFTER_MICROBATCHES", string n ] dir "dotnet" [ Path.Combine(binDir, "research.dll"); "study"; path ]
                Expect.equal killed.ExitCode 137 (sprintf "killed by SIGKILL after micro-batch %d" n)
                let runDir = Array.exactlyOne (runDirs dir)
                let r = research dir [ "study"; path; "--resume"; runDir ]
                Expect.equal r.ExitCode 0 (sprintf "resume after micro-batch %d: %s" n r.Err)
                let weights, matrix, values = studyResult runDir
                let w0, m0, v0 = reference
                Expect.equal weights w0 (sprintf "final weights bitwise equal after micro-batch %d" n)
                Expect.equal matrix m0 (sprintf "the matrices after micro-batch %d" n)
                Expect.equal values v0 (sprintf "probes (the methods' too) and metrics after micro-batch %d" n)
        }
        test "a study resumes from its consolidated checkpoint when killed early in the next task, and refuses a changed config or a finished run" {
            let dir = tempDir "study-resume-refuse"
            let path = studyConfig dir
            let killed = runProcessWith [ "RESEARCH_KILL_AFTER_MICROBATCHES", "36" ] dir "dotnet" [ Path.Combine(binDir, "research.dll"); "study"; path ]
            Expect.equal killed.ExitCode 137 "killed in task 1's first step"
            let runDir = Array.exactlyOne (runDirs dir)
            let changed = research dir [ "study"; path; "--set"; "methods.0.lambda=20.0"; "--resume"; runDir ]
            Expect.equal changed.ExitCode 2 changed.Err
            Expect.stringContains changed.Err "differs from the config of the run being resumed" "refused, naming the config"
            let r = research dir [ "study"; path; "--resume"; runDir ]
            Expect.equal r.ExitCode 0 r.Err
            Expect.stringContains r.Out "task 0, after its consolidation" "from the consolidated checkpoint of task 0"
            let again = research dir [ "study"; path; "--resume"; runDir ]
            Expect.equal again.ExitCode 2 again.Err
            Expect.stringContains again.Err "already finished" "a finished study is not resumed"
        }
        test "killed with SIGKILL at 10 random micro-batches (mid-epoch, mid-window) and resumed, the run ends bitwise equal to an uninterrupted one" {
            // Kill points after the first checkpoint (step 2 = micro-batch 6), drawn with a fixed seed.
            let rng = Random(20261128)
            let points = List.init 10 (fun _ -> rng.Next(7, 51))
            for n in points do
                let runDir, _ = killAndResume n ignore
                Expect.equal (finalWeights runDir) reference.Value (sprintf "bitwise equal after a kill at micro-batch %d" n)
                expectCleanStore runDir 18L
        }
        test "SIGTERM and SIGINT finish the step, write a checkpoint, record the run as interrupted and exit 143 / 130; the resumed run ends bitwise equal" {
            for signal, code, n in [ "TERM", 143, 14; "INT", 130, 23 ] do
                let dir = tempDir "resume-signal"
                let path = config dir
                let env = [ "RESEARCH_SIGNAL_AFTER_MICROBATCHES", string n; "RESEARCH_SIGNAL", signal ]
                let stopped = runProcessWith env dir "dotnet" [ Path.Combine(binDir, "research.dll"); "train"; path ]
                Expect.equal stopped.ExitCode code (sprintf "SIG%s: exit %d; %s" signal code stopped.Err)
                Expect.stringContains stopped.Err (sprintf "stopped: interrupted by SIG%s at step" signal) "one line naming the signal"
                Expect.stringContains stopped.Err "resume with --resume" "and how to go on"
                Expect.isFalse (stopped.Err.Contains "   at ") "no stack trace"
                let runDir = Array.exactlyOne (runDirs dir)
                do
                    use store = RunStore.OpenReadOnly(Path.Combine(runDir, RunStore.FileName))
                    let row = store.Query("SELECT status, error FROM runs") |> Seq.exactlyOne
                    Expect.equal row[0] (box "interrupted") "recorded as interrupted"
                    // The checkpoint written on the signal is the newest, at the step where the run stopped.
                    let stepOf (text: string) = Text.RegularExpressions.Regex.Match(text, @"at step (\d+)").Groups[1].Value |> int64
                    let newest = Checkpoint.Periodic(Path.Combine(runDir, "checkpoints")) |> Seq.head
                    Expect.equal (Path.GetFileName newest) (Checkpoint.PeriodicName(stepOf stopped.Err)) "a checkpoint at the step it stopped"
                let r = research dir [ "train"; path; "--resume"; runDir ]
                Expect.equal r.ExitCode 0 r.Err
                Expect.equal (finalWeights runDir) reference.Value (sprintf "bitwise equal after SIG%s" signal)
                expectCleanStore runDir 18L
        }
        test "a corrupt newest checkpoint is refused, naming the file, and the previous good one is used — the result is still bitwise equal" {
            let runDir, r =
                killAndResume 40 (fun runDir ->
                    let newest = Checkpoint.Periodic(Path.Combine(runDir, "checkpoints")) |> Seq.head
                    let model = Path.Combine(newest, Checkpoint.Model)
                    let bytes = File.ReadAllBytes model
                    File.WriteAllBytes(model, bytes[.. bytes.Length / 2]))   // truncated, as a crash mid-copy would
            Expect.stringContains r.Out "model.safetensors does not match its SHA-256 in the manifest" "names the file and the reason"
            Expect.stringContains r.Out "trying the previous one" "falls back"
            Expect.equal (finalWeights runDir) reference.Value "bitwise equal"
        }
        test "a resume with a different config is refused, naming the file" {
            let runDir, _ = killAndResume 30 ignore
            let dir = Path.GetDirectoryName(Path.GetDirectoryName runDir)
            let r = research dir [ "train"; Path.Combine(dir, "run.toml"); "--set"; "optimizer.lr=0.5"; "--resume"; runDir ]
            Expect.equal r.ExitCode 2 r.Err
            Expect.stringContains r.Err "differs from the config of the run being resumed" "refused"
        }
        test "the demo's pre-training killed after its second checkpoint and resumed ends with the uninterrupted run's accuracy, digit for digit" {
            let demo = Path.Combine(repoRoot, "experiments", "configs", "demo-pretrain.toml")
            let args dir = [ "train"; demo; "--set"; "train.epochs=3"; "--set"; "checkpoint.keep_last=3"; "--set"; sprintf "run.output_dir=\"%s\"" dir ]
            let finalLine (text: string) = text.Split('\n') |> Array.filter (fun l -> l.TrimStart().StartsWith "test ") |> Array.last
            let whole = tempDir "demo-whole"
            let uninterrupted = research whole (args whole)
            Expect.equal uninterrupted.ExitCode 0 uninterrupted.Err
            // 27,000 items in batches of 128: 211 steps per epoch; checkpoints at 211 and 422; killed 50 steps later.
            let dir = tempDir "demo-killed"
            Expect.equal (researchKilledAfter 472 dir (args dir)).ExitCode 137 "killed"
            let runDir = Array.exactlyOne (Directory.GetDirectories dir)
            let newest = Checkpoint.Periodic(Path.Combine(runDir, "checkpoints")) |> Seq.head
            Expect.equal (Path.GetFileName newest) "step-000000422" "the second checkpoint is the newest"
            let resumed = research dir (args dir @ [ "--resume"; runDir ])
            Expect.equal resumed.ExitCode 0 resumed.Err
            Expect.stringContains resumed.Out "at step 422" "resumed from the second checkpoint"
            Expect.equal (finalLine resumed.Out) (finalLine uninterrupted.Out) "final test loss and accuracy, digit for digit"
        }
        test "a checkpoint is a directory of safetensors, state and a SHA-256 manifest; the last K periodic ones are kept beside best and final" {
            let dir = tempDir "ckpt"
            let r = research dir [ "train"; config dir; "--set"; "checkpoint.keep_last=2" ]
            Expect.equal r.ExitCode 0 r.Err
            let checkpoints = Path.Combine(Array.exactlyOne (runDirs dir), "checkpoints")
            let names = Directory.GetDirectories checkpoints |> Array.map Path.GetFileName |> Array.sort
            Expect.equal names [| "best"; "final"; "step-000000016"; "step-000000018" |] "kept"
            for d in Directory.GetDirectories checkpoints do
                Expect.isNone (Option.ofObj (Checkpoint.Verify d)) (sprintf "%s verifies" d)
                Expect.equal (Directory.GetFiles d |> Array.map Path.GetFileName |> Array.sort)
                    [| Checkpoint.Manifest; Checkpoint.Methods; Checkpoint.Model; Checkpoint.Optimizer; Checkpoint.State |] "files"
            let state = Checkpoint.ReadState(Path.Combine(checkpoints, "step-000000018"))
            Expect.equal (state.Step, state.Epoch, state.WindowInEpoch) (18L, 3, 0L) "after the last epoch's evaluation"
        }
    ]
