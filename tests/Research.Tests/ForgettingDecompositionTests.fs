/// The forgetting decomposition of a study ([study] hessian and `research analyze hessian`): the measured increase of an
/// earlier task's loss against ∇L·Δθ + ½ΔθᵀHΔθ, the Fishers' diagonal view, the top-k eigenspace's share.
module Research.Tests.ForgettingDecompositionTests

open System
open System.IO
open Expecto
open Research.Abstractions
open Research.Core.Checkpoints
open Research.Core.Config
open Research.Core.Plugins
open Research.Core.Studies
open Research.Core.Training
open Research.Core.Tracking
open Research.Tests.TestSupport
open TorchSharp

let private host = lazy (PluginHost.Load([]))

/// A permuted 2-task study on 4 synthetic clusters in 16 features with a hidden layer of 8 (172 parameters: small enough
/// for k = n), 3 epochs of 45 steps per task, and the extra TOML after [study].
let private decompositionStudy (dir: string) (lr: float) (extra: string) =
    let path = Path.Combine(dir, "study.toml")
    File.WriteAllText(path, sprintf """
[run]
name = "hessian"
seed = 3
threads = 1
output_dir = "%s"
[data]
dataset = "synthetic"
synthetic_samples = 1000
synthetic_features = 16
synthetic_classes = 4
batch_size = 20
[model]
hidden = [8]
[optimizer]
lr = %g
[train]
epochs = 3
[study]
benchmark = "permuted"
tasks = 2
%s
""" (Path.Combine(dir, "runs").Replace("\\", "/")) lr extra)
    Trainer.Run(ConfigLoader.Load(path, []), host.Value, kind = RunKind.Study)

let private probe (o: RunOutcome) name =
    match o.Record.Probes.TryGetValue name with
    | true, m -> m
    | _ -> failtestf "the record has no probe %s (it has: %s)" name (String.Join(", ", o.Record.Probes.Keys))

let private finalWeights (o: RunOutcome) =
    let tensors = Research.Core.Checkpoints.Checkpoint.Load(Path.GetDirectoryName(o.WeightsPath: string), Path.GetFileName(o.WeightsPath: string))
    tensors |> Seq.map (fun kv -> kv.Key, kv.Value.reshape(-1L).to_type(torch.ScalarType.Float64).data<float>().ToArray()) |> Map.ofSeq

let tests =
    testSequenced <| testList "forgetting decomposition" [
        test "T × T probes are NaN on and above the diagonal; measured_test_loss_increase[1][0] equals the record's L[1][0] − L[0][0] within 1e-6; the groups' quadratic terms sum to the quadratic term within 1e-9 relative" {
            let o = decompositionStudy (tempDir "hessian-probes") 0.01 "hessian = { samples = 400, top_k = 8, trace_probes = 10 }"
            for name in [ ProbeNames.QuadraticLossIncrease; ProbeNames.MeasuredLossIncrease; ProbeNames.PredictedLossIncrease; ProbeNames.FirstOrderLossIncrease ] do
                let m = probe o name
                Expect.equal m.Length 2 $"{name}: 2 rows"
                Expect.isTrue (Double.IsNaN(m[0][0]) && Double.IsNaN(m[0][1]) && Double.IsNaN(m[1][1])) $"{name}: NaN where j ≥ i"
                Expect.isTrue (Double.IsFinite(m[1][0])) $"{name}[1][0] is a number"
            let test = (probe o ProbeNames.MeasuredTestLossIncrease).[1].[0]
            let fromMatrix = o.Record.Loss[1][0] - o.Record.Loss[0][0]
            Expect.floatClose { absolute = 1e-6; relative = 1e-6 } test fromMatrix "the test split's increase is the matrix L's"
            Expect.isGreaterThan ((probe o ProbeNames.MeasuredLossIncrease).[1].[0]) 0.0 "task 0's loss rose (permuted task 1 forgets it)"
            let quadratic = (probe o ProbeNames.QuadraticLossIncrease).[1].[0]
            let groups =
                o.Record.Probes |> Seq.filter (fun kv -> kv.Key.StartsWith(ProbeNames.QuadraticLossIncrease + "/")) |> Seq.map (fun kv -> kv.Value[1][0]) |> List.ofSeq
            Expect.equal groups.Length 2 "two parameter groups: hidden.0 and head"
            Expect.floatClose { absolute = 1e-12; relative = 1e-9 } (List.sum groups) quadratic "Σ_g ½Δθ_gᵀ(HΔθ)_g = ½ΔθᵀHΔθ"
            for v in [ "exact"; "sampled"; "empirical"; "batched" ] do
                let f = (probe o (ProbeNames.FisherQuadraticLossIncrease + "/" + v)).[1].[0]
                Expect.isGreaterThanOrEqual f 0.0 $"½Σ F Δθ² ≥ 0 for the {v} Fisher"
            let share = (probe o ProbeNames.TopKNormShare).[1].[0]
            Expect.isTrue (share >= 0.0 && share <= 1.0 + 1e-9) "a share of ‖Δθ‖² lies in [0, 1]"
            let eigen = (probe o ProbeNames.HessianEigenvalues)
            Expect.equal eigen[0].Length 8 "k eigenvalues per task"
            Expect.isTrue (eigen[0] |> Array.pairwise |> Array.forall (fun (a, b) -> a >= b)) "largest first"
            Expect.isTrue (Double.IsFinite((probe o ProbeNames.HessianTrace).[1].[0])) "a trace estimate per task"
        }

        test "with k = n (172 parameters) the top-k eigenspace holds all of Δθ: both shares equal 1 within 1e-6 (fp64)" {
            let o = decompositionStudy (tempDir "hessian-full") 0.01 "hessian = { samples = 300, top_k = 172, precision = \"fp64\", trace_probes = 0, fisher = [\"empirical\"] }"
            Expect.floatClose { absolute = 1e-6; relative = 1e-6 } ((probe o ProbeNames.TopKNormShare).[1].[0]) 1.0 "‖P_nΔθ‖² = ‖Δθ‖²"
            Expect.floatClose { absolute = 1e-6; relative = 1e-6 } ((probe o ProbeNames.TopKQuadraticShare).[1].[0]) 1.0 "Σλ(vᵀΔθ)² = ΔθᵀHΔθ"
        }

        test "for small steps the quadratic model predicts the measured increase: |predicted − measured| ≤ 0.1·|measured| at lr 1e-4, and the error is larger at lr 1e-2 (fp64)" {
            let settings = "hessian = { samples = 400, top_k = 4, precision = \"fp64\", trace_probes = 0, fisher = [\"empirical\"] }"
            let small = decompositionStudy (tempDir "hessian-small") 1e-4 settings
            let large = decompositionStudy (tempDir "hessian-large") 1e-2 settings
            let error (o: RunOutcome) =
                let measured = (probe o ProbeNames.MeasuredLossIncrease).[1].[0]
                abs ((probe o ProbeNames.PredictedLossIncrease).[1].[0] - measured) / abs measured
            Expect.isLessThan (error small) 0.1 "within 10% for small steps"
            Expect.isGreaterThan (error large) (error small) "the remainder grows with the step"
        }

        test "snapshots_along = 4: three points inside task 1 at steps 34, 68 and 101 of its 135, then its end; the last equals the T × T probe" {
            let o = decompositionStudy (tempDir "hessian-along") 0.01 "hessian = { samples = 300, top_k = 4, trace_probes = 0, fisher = [\"empirical\"], snapshots_along = 4 }"
            let fractions = (probe o (ProbeNames.HessianAlong + "/fraction")).[1].[0..3]
            // Task 1 plans 3 epochs × 45 steps = 135; the points are its steps round(k·135/4) = 34, 68, 101, then its end.
            let expected = [| 34.0 / 135.0; 68.0 / 135.0; 101.0 / 135.0; 1.0 |]
            for (a, e) in Array.zip fractions expected do Expect.floatClose { absolute = 1e-12; relative = 0.0 } a e "the point's fraction of task 1"
            let measured = (probe o (ProbeNames.HessianAlong + "/measured"))[1]
            Expect.equal measured[3] ((probe o ProbeNames.MeasuredLossIncrease).[1].[0]) "the last point is the task's end"
            Expect.isTrue (measured[0..2] |> Array.forall Double.IsFinite) "each point measured"
        }

        test "a sweep reads the probes: probe:A is the pair's cell, probe:A / B the ratio of cells (1e-12), along:A / B the m points with their fractions; a missing probe is no value" {
            let o = decompositionStudy (tempDir "hessian-summary") 0.01 "hessian = { samples = 300, top_k = 4, trace_probes = 0, fisher = [\"empirical\"], snapshots_along = 4 }"
            let runId = (TrainingTests.storeRows o.RunDir "SELECT id FROM runs" |> List.exactlyOne)[0] :?> string
            use store = Research.Sweeps.SweepStore.Store.OpenReadOnly(Path.Combine(o.RunDir, RunStore.FileName))
            let cell name = (probe o name).[1].[0]
            Expect.equal (Research.Sweeps.Summary.metricOf store "study" runId "probe:measured_loss_increase") (Some(cell ProbeNames.MeasuredLossIncrease)) "the one pair's cell, through the summaries' metric"
            let ratio = Research.Sweeps.Summary.probeMetric store runId "predicted_loss_increase / measured_loss_increase" |> Option.get
            Expect.floatClose { absolute = 0.0; relative = 1e-12 } ratio (cell ProbeNames.PredictedLossIncrease / cell ProbeNames.MeasuredLossIncrease) "the ratio of the cells"
            let fisher = Research.Sweeps.Summary.probeMetric store runId "fisher_quadratic_loss_increase/empirical / quadratic_loss_increase" |> Option.get
            Expect.floatClose { absolute = 0.0; relative = 1e-12 } fisher (cell (ProbeNames.FisherQuadraticLossIncrease + "/empirical") / cell ProbeNames.QuadraticLossIncrease) "names with a slash"
            Expect.equal (Research.Sweeps.Summary.probeMetric store runId "no_such_probe") None "a missing probe is no value"
            let points = Research.Sweeps.Summary.alongOf store runId "predicted / measured" |> Option.get
            Expect.equal points.Length 4 "the four points"
            let along name = (probe o (ProbeNames.HessianAlong + "/" + name))[1]
            for p in 0 .. 3 do
                let fraction, ratio = points[p]
                Expect.equal fraction ((along "fraction")[p]) "the point's fraction of the task"
                Expect.floatClose { absolute = 0.0; relative = 1e-12 } ratio ((along "predicted")[p] / (along "measured")[p]) "the point's ratio"
        }

        test "the analysis changes neither the training (final weights bitwise equal) nor the run's identity; `research analyze hessian` afterwards stores the same probes within 1e-9 and draws three figures" {
            let settings = "samples = 300, top_k = 6, trace_probes = 4, fisher = [\"exact\", \"batched\"]"
            let withHessian = decompositionStudy (tempDir "hessian-with") 0.01 ("hessian = { " + settings + " }")
            let dir = tempDir "hessian-without"
            let without = decompositionStudy dir 0.01 ""
            Expect.equal (finalWeights withHessian) (finalWeights without) "bitwise the same training"
            let identity (o: RunOutcome) = TrainingTests.storeRows o.RunDir "SELECT identity FROM runs" |> List.exactlyOne |> fun r -> string r[0]
            Expect.equal (identity withHessian) (identity without) "the same identity"
            let sets = [ "samples=300"; "top_k=6"; "trace_probes=4"; "fisher=[\"exact\",\"batched\"]" ] |> List.collect (fun s -> [ "--set"; "study.hessian." + s ])
            let r = research dir ([ "analyze"; "hessian"; without.RunDir ] @ sets)
            Expect.equal r.ExitCode 0 $"analyze exits 0: {r.Err}"
            use store = RunReader.Open(Path.Combine(without.RunDir, RunStore.FileName))
            let record = StudyRecord.Load(store, (Seq.exactlyOne (store.Runs())).Id)
            for name in [ ProbeNames.QuadraticLossIncrease; ProbeNames.MeasuredLossIncrease; ProbeNames.FirstOrderLossIncrease; ProbeNames.TopKQuadraticShare; ProbeNames.FisherQuadraticLossIncrease + "/exact" ] do
                Expect.floatClose { absolute = 1e-12; relative = 1e-9 } (record.Probes[name].[1].[0]) ((probe withHessian name).[1].[0]) $"{name} after the fact = at the task end"
            for figure in [ "predicted-vs-measured.png"; "spectrum.png"; "overlap.png" ] do
                Expect.isTrue (File.Exists(Path.Combine(without.RunDir, "hessian", figure))) $"{figure} drawn"
        }

        test "analyze hessian refuses a run that is not a finished study, naming it, with exit code 2" {
            let dir = tempDir "hessian-refuse"
            let r = research dir [ "analyze"; "hessian"; dir ]
            Expect.equal r.ExitCode 2 "a usage error"
            Expect.stringContains r.Err "is not a run directory" "names what is wrong"
        }
    ]
