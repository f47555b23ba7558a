/// Evaluation, early stopping, config checks before training, the reproducibility record, research eval.
module Research.Tests.RunLifecycleTests

open System
open System.IO
open System.Collections.Generic
open Expecto
open Research.Abstractions
open Research.Core.Tracking
open Research.Core.Training
open Research.Tests.TestSupport

let private history (values: float list) =
    values |> List.mapi (fun i v -> EvaluationPoint(int64 (10 * (i + 1)), i, dict [ "val_loss", v ] |> Dictionary)) |> List.toArray

let private rows (runDir: string) sql =
    use store = new RunStore(Path.Combine(runDir, RunStore.FileName))
    store.Query(sql) |> List.ofSeq

let tests =
    testList "run lifecycle" [
        test "early stopping: stops once the last `patience` evaluations fail to improve the earlier best by more than the threshold" {
            let decide values patience threshold = EarlyStopping.Decide(history values, "val_loss", "min", patience, threshold)
            Expect.isNull (decide [ 1.0; 0.9; 0.8 ] 2 0.0) "improving: go on"
            Expect.isNull (decide [ 1.0; 0.9 ] 2 0.0) "not enough evaluations yet"
            Expect.isNotNull (decide [ 1.0; 0.9; 0.95; 0.91 ] 2 0.0) "two evaluations without beating 0.9: stop"
            Expect.isNull (decide [ 1.0; 0.9; 0.95; 0.89 ] 2 0.0) "0.89 beats 0.9"
            Expect.isNotNull (decide [ 1.0; 0.9; 0.95; 0.89 ] 2 0.05) "but not by more than the threshold 0.05"
            Expect.isNull (decide [ 1.0; 0.9; 0.95; 0.91 ] 0 0.0) "patience 0: never"
            Expect.isNotNull (EarlyStopping.Decide(history [ 0.5; 0.6; 0.55 ], "val_loss", "max", 1, 0.0)) "max mode: 0.55 < 0.6"
        }
        test "a run that stops early says why, in the console and in the run store, and still writes its final checkpoint" {
            let dir = tempDir "early"
            let path = syntheticConfig dir "early_stopping_patience = 1\nearly_stopping_threshold = 100.0\n"
            let r = research dir [ "train"; path; "--set"; "train.epochs=20" ]
            Expect.equal r.ExitCode 0 r.Err
            Expect.stringContains r.Out "early stopping at step" "console"
            let run = onlyRunDir dir
            let reason = rows run "SELECT stop_reason FROM runs" |> List.exactlyOne
            Expect.stringContains (string reason[0]) "val_loss has not improved" "store"
            let epochs = rows run "SELECT COUNT(DISTINCT epoch) FROM evaluations" |> List.exactlyOne
            Expect.equal epochs[0] (box 2L) "stopped after the second evaluation, not after 20"
            Expect.isTrue (File.Exists(Path.Combine(run, "checkpoints", "final", "model.safetensors"))) "final checkpoint"
            let newest = Research.Core.Checkpoints.Checkpoint.Periodic(Path.Combine(run, "checkpoints")) |> Seq.head
            let state = Research.Core.Checkpoints.Checkpoint.ReadState newest
            Expect.equal (state.Epoch, state.StopReasons.Count) (2, 1) "the checkpoint after the stopping evaluation knows the run stopped: a resume from it trains no further"
        }
        test "eval_every N evaluates validation and test every N steps inside epochs, and once at each epoch end" {
            let dir = tempDir "evalevery"
            // 461 training items in batches of 64: 8 steps per epoch, 2 epochs.
            let path = syntheticConfig dir "eval_every = 3\n"
            Expect.equal (research dir [ "train"; path ]).ExitCode 0 "ran"
            let steps = rows (onlyRunDir dir) "SELECT step FROM evaluations WHERE split = 'val' ORDER BY step" |> List.map (fun r -> r[0] :?> int64)
            Expect.equal steps [ 3L; 6L; 8L; 9L; 12L; 15L; 16L ] "steps 3, 6, 9, 12, 15 and the epoch ends 8, 16"
        }
        test "a warmup longer than training fails before training, naming the key, the value and the file" {
            let dir = tempDir "warm"
            let path = syntheticConfig dir "[schedule]\nname = \"cosine\"\nwarmup_steps = 500\n"
            let r = research dir [ "train"; path ]
            Expect.equal r.ExitCode 2 r.Err
            Expect.stringContains r.Err (sprintf "%s: schedule.warmup_steps: 500 is longer than training (16 optimizer steps)" path) "message"
            Expect.isFalse (Directory.Exists(Path.Combine(dir, "runs"))) "no run was started"
        }
        test "an unknown plugin fails before training, naming the key, the nearest name and what is available" {
            let dir = tempDir "unknown"
            let path = syntheticConfig dir "[schedule]\nname = \"cosinus\"\n"
            let r = research dir [ "train"; path ]
            Expect.equal r.ExitCode 2 r.Err
            Expect.stringContains r.Err (sprintf "%s: schedule.name: \"cosinus\": no schedule named 'cosinus' (did you mean 'cosine'?) (available: constant, cosine," path) "file, key, value"
            Expect.isFalse (Directory.Exists(Path.Combine(dir, "runs"))) "no run was started"
        }
        test "--dry-run prints the resolved config with every default and the parameter-group table, and trains nothing" {
            let dir = tempDir "dry"
            let r = research dir [ "train"; syntheticConfig dir ""; "--dry-run" ]
            Expect.equal r.ExitCode 0 r.Err
            for line in [ "[optimizer]"; "beta2 = 0.999"; "validation_fraction = 0.1"; "[checkpoint]"; "16 optimizer steps"; "no_decay" ] do
                Expect.stringContains r.Out line line
            Expect.isFalse (Directory.Exists(Path.Combine(dir, "runs"))) "no run directory"
        }
        test "the record holds the resolved config, the root seed and every derived seed, code version, packages, threads, device" {
            let dir = tempDir "record"
            Expect.equal (research dir [ "train"; syntheticConfig dir "" ]).ExitCode 0 "ran"
            let r = rows (onlyRunDir dir) "SELECT seed, derived_seeds, code_version, packages, threads, device, resolved_json FROM runs" |> List.exactlyOne
            Expect.equal r[0] (box 3L) "root seed"
            let seeds = Text.Json.JsonSerializer.Deserialize<Dictionary<string, int64>>(string r[1])
            Expect.equal (Set seeds.Keys) (Set [ "validation-split"; "init"; "synthetic-data"; "data-order/epoch-0"; "data-order/epoch-1" ]) "streams"
            Expect.equal seeds["init"] (Research.Core.Seeds.Derive(3L, "init")) "derived by name"
            Expect.stringContains (string r[2]) "0.1.0" "code version"
            Expect.stringContains (string r[3]) "TorchSharp" "packages"
            Expect.equal r[4] (box 1L) "threads"
            Expect.equal r[5] (box "cpu") "device"
        }
        test "research runs list, show and export read the run stores under a folder" {
            let dir = tempDir "runs-cmd"
            let train = research dir [ "train"; syntheticConfig dir "" ]
            Expect.equal train.ExitCode 0 train.Err
            let runDir = onlyRunDir dir
            let runsDir = Path.Combine(dir, "runs")
            let list = research dir [ "runs"; "list"; runsDir ]
            Expect.equal list.ExitCode 0 list.Err
            let row = list.Out.Split('\n') |> Array.find (fun l -> l.StartsWith(Path.GetFileName runDir))
            Expect.stringContains row "finished" "status"
            let testAccuracy = rows runDir "SELECT accuracy FROM evaluations WHERE split = 'test' ORDER BY step DESC LIMIT 1" |> List.exactlyOne
            Expect.stringContains row ((testAccuracy[0] :?> float).ToString("F4", Globalization.CultureInfo.InvariantCulture)) "last test accuracy"
            let show = research dir [ "runs"; "show"; runDir ]
            Expect.stringContains show.Out "seed           3" "the record"
            let identity = rows runDir "SELECT identity FROM runs" |> List.exactlyOne
            Expect.stringContains show.Out (sprintf "identity       %s" (string identity[0])) "its identity"
            Expect.stringContains show.Out "Research.Plugins.Schedules.dll" "the plugin DLLs it used"
            Expect.stringContains show.Out "checkpoints: best, final" "checkpoints"
            let csv = Path.Combine(dir, "export.csv")
            Expect.equal (research dir [ "runs"; "export"; runsDir; "-o"; csv ]).ExitCode 0 "export"
            let lines = File.ReadAllLines csv
            Expect.equal lines[0] "run,kind,step,key,value" "header"
            let metricRows = rows runDir "SELECT COUNT(*) FROM metrics" |> List.exactlyOne
            let evalRows = rows runDir "SELECT COUNT(*) FROM evaluations" |> List.exactlyOne
            Expect.equal (int64 (lines.Length - 1)) ((metricRows[0] :?> int64) + 2L * (evalRows[0] :?> int64)) "every metric, and loss and accuracy of every evaluation"
        }
        test "research runs show prints a study's matrices R and L and each of its probes as tables, cell for cell as stored" {
            let dir = tempDir "show-study"
            let study = research dir [ "study"; syntheticConfig dir "[study]\ntasks = 2\n" ]
            Expect.equal study.ExitCode 0 study.Err
            let runDir = onlyRunDir dir
            let show = research dir [ "runs"; "show"; runDir ]
            Expect.equal show.ExitCode 0 show.Err
            let lines = show.Out.Split('\n')
            /// The cells of the table under a title (after its header line), a row per line, up to the blank line.
            let table (title: string) =
                let at = lines |> Array.tryFindIndex (fun l -> l = title || l.StartsWith(title + " ("))
                Expect.isSome at (sprintf "a table titled %s in:\n%s" title show.Out)
                lines[at.Value + 2 ..] |> Array.takeWhile (fun l -> l.Trim() <> "") |> Array.map (fun l -> l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            let expectTable title (expected: float[][]) (format: string) =
                let rows = table title
                Expect.equal rows.Length expected.Length (sprintf "%s: a row per stored row" title)
                for i in 0 .. expected.Length - 1 do
                    let cells = expected[i] |> Array.map (fun v -> if Double.IsNaN v then "–" else v.ToString(format, Globalization.CultureInfo.InvariantCulture))
                    Expect.equal (rows[i][rows[i].Length - cells.Length ..]) cells (sprintf "%s, row %d" title i)
            use store = RunReader.Open(Path.Combine(runDir, RunStore.FileName))
            let id = (Seq.exactlyOne (store.Runs())).Id
            let test = store.Matrix(id, "test")
            Expect.isNotNull test "the study stored its test matrix"
            for split in [ "test"; "val" ] do
                match store.Matrix(id, split) with
                | null -> ()
                | m ->
                    expectTable (split + " accuracy R") m.Accuracy "F4"
                    expectTable (split + " loss L") m.Loss "F3"
            let probes = store.Probes id
            Expect.isGreaterThanOrEqual probes.Count 2 "the study stored its probes (random-init accuracy, parameter change)"
            for KeyValue(name, probe) in probes do expectTable ("probe " + name) probe "G6"
        }
        test "a run killed with SIGKILL shows as killed in research runs list (its process is gone), a finished one as finished" {
            let dir = tempDir "killed"
            let path = syntheticConfig dir ""
            Expect.equal (research dir [ "train"; path; "--set"; "run.name=\"done\"" ]).ExitCode 0 "a finished run"
            Expect.equal (researchKilledAfter 5 dir [ "train"; path; "--set"; "run.name=\"cut\"" ]).ExitCode 137 "killed"
            let list = research dir [ "runs"; "list"; Path.Combine(dir, "runs") ]
            let status prefix = list.Out.Split('\n') |> Array.find (fun l -> l.StartsWith(prefix + "-")) |> fun l -> l.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]
            Expect.equal (status "cut") "killed" "recorded running, its process is gone"
            Expect.equal (status "done") "finished" "finished"
        }
        test "research runs compare groups runs that differ only in seed and reports mean ± 95% interval (Student t)" {
            let dir = tempDir "compare"
            let path = syntheticConfig dir ""
            for seed in [ 1; 2; 3 ] do
                Expect.equal (research dir [ "train"; path; "--set"; sprintf "run.seed=%d" seed; "--set"; sprintf "run.name=\"base-s%d\"" seed ]).ExitCode 0 "ran"
            Expect.equal (research dir [ "train"; path; "--set"; "optimizer.lr=0.01"; "--set"; "run.name=\"fast-s1\"" ]).ExitCode 0 "ran"
            let r = research dir [ "runs"; "compare"; Path.Combine(dir, "runs") ]
            Expect.equal r.ExitCode 0 r.Err
            let line prefix = r.Out.Split('\n') |> Array.find (fun l -> l.StartsWith(prefix + " "))
            let tests =
                Directory.GetDirectories(Path.Combine(dir, "runs")) |> Array.filter (fun d -> Path.GetFileName(d).StartsWith "base")
                |> Array.map (fun d -> (rows d "SELECT accuracy FROM evaluations WHERE split = 'test' ORDER BY step DESC LIMIT 1" |> List.exactlyOne)[0] :?> float)
            let mean = Array.average tests
            let sd = sqrt ((tests |> Array.sumBy (fun x -> (x - mean) ** 2.0)) / 2.0)
            let half = 4.302652729911275 * sd / sqrt 3.0   // t(0.975, 2 degrees of freedom)
            let expected = sprintf "%s ± %s" (mean.ToString("F4", Globalization.CultureInfo.InvariantCulture)) (half.ToString("F4", Globalization.CultureInfo.InvariantCulture))
            Expect.stringContains (line "base") "    3  " "three seeds in one group"
            Expect.isTrue ((line "base").EndsWith expected) (sprintf "test accuracy %s in: %s" expected (line "base"))
            Expect.stringContains (line "fast") "    1  " "another lr is another group"
        }
        test "research eval CHECKPOINT reproduces the run's final validation and test figures" {
            let dir = tempDir "eval"
            let train = research dir [ "train"; syntheticConfig dir "" ]
            Expect.equal train.ExitCode 0 train.Err
            let r = research dir [ "eval"; Path.Combine(onlyRunDir dir, "checkpoints", "final") ]
            Expect.equal r.ExitCode 0 r.Err
            let figures (text: string) split =
                text.Split('\n') |> Array.find (fun l -> l.TrimStart().StartsWith(split + " "))
                |> fun l -> l.Split(' ', StringSplitOptions.RemoveEmptyEntries) |> fun w -> w[2], w[Array.IndexOf(w, "accuracy") + 1]
            Expect.equal (figures r.Out "val") (figures train.Out "val") "validation loss and accuracy"
            Expect.equal (figures r.Out "test") (figures train.Out "test") "test loss and accuracy"
            Expect.stringContains r.Out "perplexity" "perplexity"
        }
    ]
