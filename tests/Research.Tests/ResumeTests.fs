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

/// Every (key, step) metric row exactly once, the run finished.
let private expectCleanStore (runDir: string) (steps: int64) =
    use store = new RunStore(Path.Combine(runDir, RunStore.FileName))
    let status = store.Query("SELECT status FROM runs") |> Seq.exactlyOne
    Expect.equal status[0] (box "finished") "finished"
    let norms = store.Query("SELECT step, COUNT(*) FROM metrics WHERE key = 'grad_norm' GROUP BY step ORDER BY step") |> List.ofSeq
    Expect.equal (norms |> List.map (fun r -> r[0] :?> int64)) [ 1L .. steps ] "one grad_norm row per step, none lost"
    Expect.isTrue (norms |> List.forall (fun r -> r[1] :?> int64 = 1L)) "and none twice"
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

let tests =
    testList "resume" [
        test "killed with SIGKILL at 10 random micro-batches (mid-epoch, mid-window) and resumed, the run ends bitwise equal to an uninterrupted one" {
            // Kill points after the first checkpoint (step 2 = micro-batch 6), drawn with a fixed seed.
            let rng = Random(20261128)
            let points = List.init 10 (fun _ -> rng.Next(7, 51))
            for n in points do
                let runDir, _ = killAndResume n ignore
                Expect.equal (finalWeights runDir) reference.Value (sprintf "bitwise equal after a kill at micro-batch %d" n)
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
                    [| Checkpoint.Manifest; Checkpoint.Model; Checkpoint.Optimizer; Checkpoint.Regularizers; Checkpoint.State |] "files"
            let state = Checkpoint.ReadState(Path.Combine(checkpoints, "step-000000018"))
            Expect.equal (state.Step, state.Epoch, state.WindowInEpoch) (18L, 3, 0L) "after the last epoch's evaluation"
        }
    ]
