/// Run folders made by the previous release (tests/Fixtures/previous-release, its README says by which commit and
/// commands), interrupted after a checkpoint: today's code gives each the identity it was stored with, and resumes it
/// to the end. Any later change to the config system that moves an existing config's identity fails here.
module Research.Tests.PreviousReleaseTests

open System.IO
open System.Text.RegularExpressions
open Expecto
open Research.Core.Checkpoints
open Research.Core.Tracking
open Research.Tests.TestSupport

let private fixtures = Path.Combine(repoRoot, "tests", "Fixtures", "previous-release")

let rec private copyTree (source: string) (target: string) =
    Directory.CreateDirectory target |> ignore
    for f in Directory.GetFiles source do File.Copy(f, Path.Combine(target, Path.GetFileName f))
    for d in Directory.GetDirectories source do copyTree d (Path.Combine(target, Path.GetFileName d))

/// The one run folder of the fixture whose name starts with `prefix`, copied into a fresh temporary folder (the
/// committed one stays as it was made).
let private copyOf (prefix: string) =
    let source = Directory.GetDirectories(fixtures, prefix + "-*") |> Array.exactlyOne
    let runDir = Path.Combine(tempDir ("previous-" + prefix), Path.GetFileName source)
    copyTree source runDir
    runDir

/// (status, identity) of the run its store records.
let private stored (runDir: string) =
    use store = RunStore.OpenReadOnly(Path.Combine(runDir, RunStore.FileName))
    let row = store.Query("SELECT status, identity FROM runs") |> Seq.exactlyOne
    string row[0], string row[1]

/// The identity `research COMMAND CONFIG --dry-run` computes: the one a resume compares with the checkpoint's.
let private identityNow (command: string) (runDir: string) =
    let r = research runDir [ command; Path.Combine(runDir, "config.toml"); "--dry-run" ]
    Expect.equal r.ExitCode 0 (sprintf "dry run: %s" r.Err)
    let m = Regex.Match(r.Out, @"identity ([0-9a-f]{64})")
    Expect.isTrue m.Success (sprintf "the dry run prints the identity:\n%s" r.Out)
    m.Groups[1].Value

let private resumes (command: string) (prefix: string) (steps: int64) (checkStore: RunStore -> unit) =
    let runDir = copyOf prefix
    let status, identity = stored runDir
    Expect.equal status "running" "the fixture is an interrupted run"
    let checkpoints = Path.Combine(runDir, "checkpoints")
    for dir in Directory.GetDirectories checkpoints do
        Expect.equal (Checkpoint.ReadState dir).Identity identity (sprintf "%s holds the run's identity" (Path.GetFileName dir))
    Expect.equal (identityNow command runDir) identity "today's identity of the stored config.toml is the stored one"
    let r = research runDir [ command; Path.Combine(runDir, "config.toml"); "--resume"; runDir ]
    Expect.equal r.ExitCode 0 (sprintf "--resume: %s\n%s" r.Err r.Out)
    Expect.equal (stored runDir) ("finished", identity) "finished, under the same identity"
    Expect.equal (Checkpoint.ReadState(Path.Combine(checkpoints, "final"))).Identity identity "the final checkpoint's identity"
    use store = RunStore.OpenReadOnly(Path.Combine(runDir, RunStore.FileName))
    let norms = store.Query("SELECT step, COUNT(*) FROM metrics WHERE key = 'grad_norm' GROUP BY step ORDER BY step") |> List.ofSeq
    Expect.equal (norms |> List.map (fun row -> row[0] :?> int64)) [ 1L .. steps ] "one grad_norm row per step of the whole run, none lost"
    Expect.isTrue (norms |> List.forall (fun row -> row[1] :?> int64 = 1L)) "and none twice"
    checkStore store

let tests =
    testList "previous release" [
        test "a research train run of the previous release (cosine-restarts, cycles added in 2.2 at its default) keeps its identity and resumes to its 51st step" {
            resumes "train" "train-cosine-restarts" 51L ignore
        }
        test "a 2-task research study of the previous release (split-class, EWC, warmup-stable-decay) keeps its identity and resumes to the full 2 × 2 matrix" {
            resumes "study" "study-split-ewc" 36L (fun store ->
                let cells = store.Query("SELECT after_task, on_task FROM study_matrix WHERE split = 'test' ORDER BY after_task, on_task") |> List.ofSeq
                Expect.equal (cells |> List.map (fun row -> row[0] :?> int64, row[1] :?> int64)) [ 0L, 0L; 0L, 1L; 1L, 0L; 1L, 1L ] "every task evaluated after every task")
        }
    ]
