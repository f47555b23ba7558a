/// Metrics that measure the model: a metric with task hooks writes its probe rows at each task end and computes from them
/// (ECE, a fixture's accuracy), the standard seven and the chosen metrics, and `research metrics` loading the plugin DLLs
/// a run recorded.
module Research.Tests.ModelMetricTests

open System
open System.Collections.Generic
open System.IO
open Expecto
open TorchSharp
open Research.Abstractions
open Research.Core.Config
open Research.Core.Plugins
open Research.Core.Training
open Research.Core.Tracking
open Research.Plugins.Forgetting
open Research.Tests.TestSupport

let private host = lazy (PluginHost.Load([]))

/// Classification logits [ln(p/(1−p)), 0] for each confidence p > ½: softmax gives class 0 probability p.
let private confidentBatch (items: (float * int64) list) =
    let logits = items |> List.map (fun (p, _) -> [| float32 (log (p / (1.0 - p))); 0.0f |]) |> array2D
    Batch(torch.tensor logits, torch.tensor [| for _, target in items -> target |])

/// A task end whose model is the identity (a batch's input is its logits), over the given test batches per task.
let private identityTaskEnd (index: int) (tasks: Batch list) (probes: Dictionary<string, float[]>) =
    TaskEndContext(
        index, sprintf "t%d" index, (index = tasks.Length - 1), Array.empty<NamedParameter>,
        Func<Batch, torch.Tensor>(fun b -> b[Batch.Input].alias()),
        Func<Batch, Func<torch.Tensor, torch.Tensor>, IReadOnlyList<torch.Tensor>>(fun _ _ -> failwith "ece reads no gradient"),
        Seq.empty, Func<torch.Tensor, Batch, torch.Tensor>(fun _ _ -> failwith "ece reads no loss"),
        Func<FisherKind, IReadOnlyDictionary<string, torch.Tensor>>(fun _ -> failwith "ece reads no Fisher"),
        Action<string, float[]>(fun name row -> probes[name] <- row), null,
        TaskCount = tasks.Length, TestData = Func<int, seq<Batch>>(fun j -> [ tasks[j] ]))

/// A record of two tasks (matrices the metric does not read) with the probe rows the task ends added.
let private recordOf (rows: float[] list) (name: string) =
    let t = rows.Length
    EvaluationRecord(Array.init t (sprintf "t%d"), Array.init t (fun _ -> Array.create t 0.5), Array.init t (fun _ -> Array.create t 1.0),
                     readOnlyDict [ name, Array.ofList rows ])

/// A study config under DIR (2 permuted tasks of synthetic data, one epoch) with extra TOML after [study].
let private smallStudy (dir: string) (extra: string) = syntheticStudy dir "metrics" extra

let private metricNames (c: RunConfig) = [ for m in c.Metrics -> m.Name ]

/// `research study` with the fixture metric loaded from a copy of its folder (so a test may change or move the copy):
/// the copy's folder, the run folder and the process result.
let private fixtureStudy (prefix: string) =
    let dir = tempDir prefix
    let plugins = Path.Combine(dir, "plugin-metric")
    Directory.CreateDirectory plugins |> ignore
    for f in Directory.GetFiles(fixtureDir "Plugin.Metric") do File.Copy(f, Path.Combine(plugins, Path.GetFileName f))
    let path = smallStudy dir "[[metrics]]\nname = \"fixture-accuracy\"\n"
    let r = research dir [ "study"; path; "--plugins"; plugins ]
    Expect.equal r.ExitCode 0 r.Err
    dir, plugins, onlyRunDir dir

let tests =
    testList "model metrics" [
        test "ece's bins are ((m−1)/M, m/M]: a confidence on a boundary falls in the bin it closes" {
            Expect.equal (CalibrationBins.Bin 5 0.6) 2 "0.6 closes (0.4, 0.6]"
            Expect.equal (CalibrationBins.Bin 5 0.60000001) 3 "just above 0.6 opens (0.6, 0.8]"
            Expect.equal (CalibrationBins.Bin 5 0.2) 0 "0.2 closes the first bin"
            Expect.equal (CalibrationBins.Bin 5 1.0) 4 "1 closes the last bin"
            Expect.equal (CalibrationBins.Bin 5 1e-9) 0 "a tiny confidence is in the first bin"
            Expect.equal (CalibrationBins.Bin 15 (1.0 / 15.0)) 0 "1/15 closes the first of 15"
        }

        test "ece on a hand-worked case: 6 items in 4 bins, ECE = (|2 − 1.9| + |2 − 2.75|)/6; a second task (0.7 wrong, 0.95 right, one ignored item) 0.375; the value is their mean (1e-6)" {
            // Task 0, M = 4: bin (0.5, 0.75] holds 0.6 ✓, 0.7 ✗, 0.6 ✓ → |2 − 1.9| = 0.1; bin (0.75, 1] holds 0.9 ✓, 0.9 ✓,
            // 0.95 ✗ → |2 − 2.75| = 0.75; ECE = 0.85/6. Task 1: 0.7 ✗ alone → 0.7, 0.95 ✓ alone → 0.05; ECE = 0.75/2.
            // Class 0 has the larger logit, so target 0 is a right prediction and 1 a wrong one.
            let task0 = confidentBatch [ 0.6, 0L; 0.7, 1L; 0.9, 0L; 0.9, 0L; 0.95, 1L; 0.6, 0L ]
            let task1 = confidentBatch [ 0.7, 1L; 0.95, 0L; 0.9, Batch.IgnoreIndex ]
            let metric = ExpectedCalibrationError(CalibrationOptions(Bins = 4))
            let probes = Dictionary<string, float[]>()
            let rows =
                [ for i in 0 .. 1 ->
                    (metric :> ITaskHooks).TaskEnd(identityTaskEnd i [ task0; task1 ] probes)
                    probes[metric.Probe] ]
            let expected = [| 0.85 / 6.0; 0.375 |]
            for i, row in List.indexed rows do
                Expect.equal row.Length 2 (sprintf "row %d: one ECE per task" i)
                for j in 0 .. 1 do Expect.floatClose { absolute = 1e-6; relative = 0.0 } row[j] expected[j] (sprintf "ECE[%d][%d]" i j)
            let value = (metric :> IForgettingMetric).Compute(recordOf rows metric.Probe)
            Expect.floatClose { absolute = 1e-6; relative = 0.0 } value.Value ((0.85 / 6.0 + 0.375) / 2.0) "the mean over tasks after the last"
            Expect.floatClose { absolute = 1e-6; relative = 0.0 } value.PerTask[0] (0.85 / 6.0) "per task: ECE[T−1][0]"
            Expect.floatClose { absolute = 1e-6; relative = 0.0 } value.PerTask[1] 0.375 "per task: ECE[T−1][1]"
        }

        testPropertyWithConfig propConfig "ece with one bin equals |accuracy − mean confidence|, and M bins never read less (1e-12)"
        <| fun (items: (int * bool) list) (bins': int) ->
            let items = if items.IsEmpty then [ 1, true ] else items
            let bins = 1 + abs (bins' % 40)
            let one, many = CalibrationBins(1), CalibrationBins(bins)
            let confidences = items |> List.map (fun (k, ok) -> float (abs (k % 1000) + 1) / 1000.0, ok)
            for c, ok in confidences do
                one.Add(c, ok)
                many.Add(c, ok)
            let n = float items.Length
            let accuracy = (confidences |> List.filter snd |> List.length |> float) / n
            let meanConfidence = (confidences |> List.sumBy fst) / n
            Expect.floatClose { absolute = 1e-12; relative = 0.0 } one.Error (abs (accuracy - meanConfidence)) "one bin"
            if many.Error < one.Error - 1e-12 then failtestf "%d bins read %.17g < one bin's %.17g" bins many.Error one.Error

        test "choosing metrics adds them to the standard seven (a standard one chosen takes its options in its place); only = true keeps the chosen alone; the canonical form reads back to the same set" {
            let seven = List.ofSeq RunConfig.DefaultMetrics
            let added = ConfigLoader.Parse("[[metrics]]\nname = \"ece\"\nbins = 10\n[[metrics]]\nname = \"bwt\"\n", "m.toml")
            Expect.equal (metricNames added) (seven @ [ "ece" ]) "the seven, then ece; bwt in its place"
            let only = ConfigLoader.Parse("[[metrics]]\nname = \"ece\"\nonly = true\n[[metrics]]\nname = \"bwt\"\n", "o.toml")
            Expect.equal (metricNames only) [ "ece"; "bwt" ] "only the chosen"
            Expect.isFalse (only.ChosenMetrics[0].Options.ContainsKey "only") "only is not the metric's option"
            Expect.stringContains (ConfigLoader.ToToml only.Source) "only = true" "the config as given keeps it"
            for c in [ added; only ] do
                let canonical = ResolvedConfig.Canonical(c, host.Value, "study")
                let again = ConfigLoader.Parse(ResolvedConfig.Toml canonical, c.File)
                Expect.equal (metricNames again) (metricNames c) "written out and read back, the same metrics"
            let noOnly = ConfigLoader.Parse("[study]\ntasks = 2\n", "n.toml")
            Expect.equal (ResolvedConfig.Identity(ResolvedConfig.Canonical(noOnly, host.Value, "study"), host.Value))
                         (ResolvedConfig.Identity(ResolvedConfig.Canonical(ConfigLoader.Parse("[study]\ntasks = 2\n[[metrics]]\nname = \"ece\"\nonly = true\n", "n.toml"), host.Value, "study"), host.Value))
                         "metrics, only included, are not part of the identity"
            try
                ConfigLoader.Parse("[[metrics]]\nname = \"ece\"\nonly = \"yes\"\n", "b.toml") |> ignore
                failtest "only = \"yes\" was accepted"
            with :? ConfigException as e ->
                Expect.stringContains (string e.Errors[0]) "b.toml: metrics[0].only: \"yes\" must be true or false" "names the file, the key and the value"
        }

        test "a study with ece stores its T × T probe (each entry in [0, 1]) and its value, the mean of the last row, beside the standard seven; the training and the identity are those of the study without it" {
            let dir = tempDir "ece-study"
            let plain = Trainer.Run(ConfigLoader.Load(smallStudy dir ""), host.Value, kind = RunKind.Study)
            let withEce = Trainer.Run(ConfigLoader.Load(smallStudy dir "[[metrics]]\nname = \"ece\"\nbins = 10\n"), host.Value, kind = RunKind.Study)
            Expect.equal [ for struct (name, _) in withEce.Metrics -> name ] (List.ofSeq RunConfig.DefaultMetrics @ [ "ece" ]) "the seven and ece"
            let probe = withEce.Record.Probes["expected_calibration_error/10"]
            Expect.equal (probe |> Array.map Array.length) [| 2; 2 |] "T × T"
            for row in probe do for e in row do Expect.isTrue (e >= 0.0 && e <= 1.0) (sprintf "ECE %g in [0, 1]" e)
            let struct (_, ece) = withEce.Metrics |> Seq.find (fun struct (n, _) -> n = "ece")
            Expect.floatClose Accuracy.veryHigh ece.Value (Array.average probe[1]) "the mean of the last row"
            use reader = RunReader.Open(Path.Combine(withEce.RunDir, RunStore.FileName))
            let run = reader.Runs() |> Seq.exactlyOne
            Expect.equal (reader.StudyMetric(run.Id, "ece") |> Option.ofNullable) (Some ece.Value) "stored"
            Expect.equal (reader.Probes(run.Id)["expected_calibration_error/10"]) probe "its probe rows are stored"
            Expect.equal withEce.Record.Accuracy plain.Record.Accuracy "the same accuracy matrix, exactly: measuring changed no weight"
            use plainReader = RunReader.Open(Path.Combine(plain.RunDir, RunStore.FileName))
            Expect.equal run.Identity ((plainReader.Runs() |> Seq.exactlyOne).Identity) "the same identity"
            let again = research dir [ "metrics"; withEce.RunDir ]
            Expect.equal again.ExitCode 0 again.Err
            let line = again.Out.Split('\n') |> Array.find (fun l -> l.StartsWith "ece ")
            Expect.stringContains line (ece.Value.ToString("F4", Globalization.CultureInfo.InvariantCulture)) "research metrics computes it again from the store"
        }

        test "research metrics without --plugins loads the outside metric DLL the study recorded: its value again, which equals the mean of R[T−1] the core measured (1e-12); its state is checkpointed under its name" {
            let dir, _, runDir = fixtureStudy "recorded-metric"
            use reader = RunReader.Open(Path.Combine(runDir, RunStore.FileName))
            let run = reader.Runs() |> Seq.exactlyOne
            let stored = reader.StudyMetric(run.Id, "fixture-accuracy").Value
            let matrix = reader.Matrix(run.Id, "test")
            Expect.floatClose { absolute = 1e-12; relative = 0.0 } stored (Array.average matrix.Accuracy[1]) "TestData, Logits and Rows measure what the core's R[T−1] holds"
            let r = research dir [ "metrics"; runDir ]
            Expect.equal r.ExitCode 0 r.Err
            let line = r.Out.Split('\n') |> Array.find (fun l -> l.StartsWith "fixture-accuracy ")
            Expect.stringContains line (stored.ToString("F4", Globalization.CultureInfo.InvariantCulture)) "the study's value, computed again"
            let state = TorchSharp.PyBridge.Safetensors.LoadStateDict(Path.Combine(runDir, "checkpoints", "final", "methods.safetensors"))
            Expect.equal (state["metric:fixture-accuracy/task_ends"].item<int64>()) 2L "two task ends counted, kept under the metric's name"
        }

        test "research metrics refuses a recorded metric DLL that changed or moved, in one line naming the metric and the DLL, when the metric is chosen; --plugins still chooses where to load it from" {
            let dir, plugins, runDir = fixtureStudy "changed-metric"
            let dll = Path.Combine(plugins, "Plugin.Metric.dll")
            let expectRefusal (r: ProcessResult) (reason: string) =
                Expect.equal r.ExitCode 2 r.Err
                let lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries)
                Expect.equal lines.Length 1 (sprintf "one line: %s" r.Err)
                for part in [ "forgetting metric 'fixture-accuracy'"; dll; reason ] do Expect.stringContains lines[0] part part
            File.AppendAllText(dll, "changed")
            expectRefusal (research dir [ "metrics"; runDir ]) "the DLL changed since the run"
            let others = research dir [ "metrics"; runDir; "--set"; "metrics=[{name=\"bwt\", only=true}]" ]
            Expect.equal others.ExitCode 0 (sprintf "a metric not chosen now needs no DLL: %s" others.Err)
            let moved = plugins + "-moved"
            Directory.Move(plugins, moved)
            expectRefusal (research dir [ "metrics"; runDir ]) "which is no longer there"
            let chosen = research dir [ "metrics"; runDir; "--plugins"; moved ]
            Expect.equal chosen.ExitCode 0 chosen.Err
            Expect.stringContains chosen.Out "fixture-accuracy" "computed with the DLL --plugins names"
        }
    ]
