/// The forgetting metrics are pure functions of the evaluation record. Each is checked on hand-written
/// 3×3 matrices whose values are worked out in the comments (as Avalanche's functional tests do), and by
/// properties over random records drawn inside each property from plain integers.
module Research.Tests.ForgettingMetricTests

open System
open System.Collections.Generic
open Expecto
open FsCheck
open Research.Abstractions
open Research.Plugins.Forgetting
open Research.Tests.TestSupport

/// The metrics add or subtract at most a few tens of numbers in [0, 1]: rounding stays below 1e-14.
let private tolerance = 1e-12

let private near (expected: float) (actual: float) (what: string) =
    if not (abs (actual - expected) <= tolerance) then failtestf "%s: expected %.17g, got %.17g" what expected actual

/// Per-task values agree entry by entry; NaN (a task the metric does not define) must be NaN.
let private nearAll (expected: float list) (actual: IReadOnlyList<float>) (what: string) =
    if isNull actual then failtestf "%s: no per-task values" what
    if actual.Count <> expected.Length then failtestf "%s: %d per-task values, expected %d" what actual.Count expected.Length
    expected |> List.iteri (fun j e ->
        if Double.IsNaN e then
            if not (Double.IsNaN actual[j]) then failtestf "%s: task %d should be NaN (undefined), got %.17g" what j actual[j]
        else near e actual[j] $"{what}, task {j}")

let private record (accuracy: float[][]) (loss: float[][]) (probes: (string * float[][]) list) =
    EvaluationRecord(Array.init accuracy.Length (sprintf "task-%d"), accuracy, loss, readOnlyDict probes)

let private compute (metric: IForgettingMetric) (r: EvaluationRecord) = metric.Compute r

/// The message of the ArgumentException the metric throws on the record.
let private refusal (metric: IForgettingMetric) (r: EvaluationRecord) =
    let e = Expect.throwsC (fun () -> compute metric r |> ignore) id
    match e with
    | :? ArgumentException -> e.Message
    | _ -> failtestf "expected an ArgumentException, got %s: %s" (e.GetType().Name) e.Message

let private contains (fragment: string) (message: string) =
    Expect.stringContains message fragment $"the message names {fragment}"

/// The hand-written accuracy matrix: R[i][j] after training task i, evaluated on task j.
///            task 0  task 1  task 2
///   after 0   0.8     0.1     0.2
///   after 1   0.9     0.7     0.3      training task 1 raised task 0 from 0.8 to 0.9
///   after 2   0.5     0.6     0.9
let private handAccuracy = [| [| 0.8; 0.1; 0.2 |]; [| 0.9; 0.7; 0.3 |]; [| 0.5; 0.6; 0.9 |] |]

/// The hand-written loss matrix, L[i][j].
///            task 0  task 1  task 2
///   after 0   0.3     2.3     2.2
///   after 1   0.9     0.4     2.1
///   after 2   1.5     0.6     0.2
let private handLoss = [| [| 0.3; 2.3; 2.2 |]; [| 0.9; 0.4; 2.1 |]; [| 1.5; 0.6; 0.2 |] |]

/// Random-init baseline b = (0.1, 0.05, 0.1), as the 1 × T probe.
let private handBaseline = ProbeNames.RandomInitAccuracy, [| [| 0.1; 0.05; 0.1 |] |]

let private hand = record handAccuracy handLoss [ handBaseline ]

/// n mapped into [lo, hi].
let private within (lo: int) (hi: int) (n: int) = lo + abs (n % (hi - lo + 1))

/// A T × T matrix of accuracies with three decimals in [0, 1], from a seed.
let private randomMatrix (rng: Random) (t: int) =
    Array.init t (fun _ -> Array.init t (fun _ -> float (rng.Next 1001) / 1000.0))

/// A T × T accuracy matrix whose rows only lose accuracy on a task once it is trained: down each column j,
/// from row j on, every entry is at most the one above it.
let private onlyLosing (rng: Random) (t: int) =
    let r = randomMatrix rng t
    for j in 0 .. t - 1 do
        for i in j + 1 .. t - 1 do
            let above, here = r[i - 1][j], r[i][j]
            r[i][j] <- min above here
    r

let private randomRecord (tasks': int) (seed: int) =
    let rng = Random seed
    let t = within 2 8 tasks'
    let r = record (randomMatrix rng t) (Array.init t (fun _ -> Array.init t (fun _ -> 3.0 * rng.NextDouble()))) []
    t, r

/// The mean of R[j][j] − R[T−1][j] over j ≤ T−2, written out directly from the definition.
let private meanDrop (r: EvaluationRecord) =
    let t = r.Tasks.Count
    List.averageBy (fun j -> r.Accuracy[j][j] - r.Accuracy[t - 1][j]) [ 0 .. t - 2 ]

let tests =
    testList "forgetting metrics" [
        testCase "loss increase on a hand-written 3×3 matrix is 0.7" <| fun () ->
            // ΔL_0 = L[2][0] − L[0][0] = 1.5 − 0.3 = 1.2; ΔL_1 = L[2][1] − L[1][1] = 0.6 − 0.4 = 0.2;
            // mean over j ≤ 1 = (1.2 + 0.2) / 2 = 0.7; the last task, which no training followed, is NaN.
            let v = compute (LossIncrease()) hand
            near 0.7 v.Value "loss increase"
            nearAll [ 1.2; 0.2; nan ] v.PerTask "ΔL_j"

        testCase "loss learned on a hand-written 3×3 matrix is 1.9" <| fun () ->
            // G_1 = L[0][1] − L[1][1] = 2.3 − 0.4 = 1.9; G_2 = L[1][2] − L[2][2] = 2.1 − 0.2 = 1.9; task 0 had no model before it.
            let v = compute (LossLearned()) hand
            near 1.9 v.Value "loss learned"
            nearAll [ nan; 1.9; 1.9 ] v.PerTask "G_j"

        testCase "accuracy drop on a hand-written 3×3 matrix is 0.2" <| fun () ->
            // d_0 = R[0][0] − R[2][0] = 0.8 − 0.5 = 0.3; d_1 = R[1][1] − R[2][1] = 0.7 − 0.6 = 0.1; mean = 0.2.
            let v = compute (AccuracyDrop()) hand
            near 0.2 v.Value "accuracy drop"
            nearAll [ 0.3; 0.1; nan ] v.PerTask "d_j"

        testCase "average forgetting on a hand-written 3×3 matrix is 0.25" <| fun () ->
            // f_0 = max(R[0][0], R[1][0]) − R[2][0] = max(0.8, 0.9) − 0.5 = 0.4 (the peak is after task 1,
            // not the diagonal); f_1 = max(R[1][1]) − R[2][1] = 0.7 − 0.6 = 0.1; mean = (0.4 + 0.1) / 2 = 0.25.
            let v = compute (AverageForgetting()) hand
            near 0.25 v.Value "average forgetting"
            nearAll [ 0.4; 0.1; nan ] v.PerTask "f_j"

        testCase "max forgetting on a hand-written 3×3 matrix is 0.4, the worst-hit task" <| fun () ->
            // max(f_0, f_1) = max(0.4, 0.1) = 0.4.
            let v = compute (MaxForgetting()) hand
            near 0.4 v.Value "max forgetting"
            nearAll [ 0.4; 0.1; nan ] v.PerTask "f_j"

        testCase "BWT = −(accuracy drop) averaged: −0.2 on the hand-written 3×3 matrix" <| fun () ->
            // BWT = ½ [(R[2][0] − R[0][0]) + (R[2][1] − R[1][1])] = ½ [(0.5 − 0.8) + (0.6 − 0.7)] = ½ (−0.4) = −0.2.
            let v = compute (BackwardTransfer()) hand
            near -0.2 v.Value "BWT"
            nearAll [ -0.3; -0.1; nan ] v.PerTask "R[T−1][j] − R[j][j]"
            near (-(compute (AccuracyDrop()) hand).Value) v.Value "BWT against −(accuracy drop)"

        testCase "FWT against the random-init baseline is 0.125 on the hand-written 3×3 matrix" <| fun () ->
            // FWT = ½ [(R[0][1] − b_1) + (R[1][2] − b_2)] = ½ [(0.1 − 0.05) + (0.3 − 0.1)] = ½ (0.25) = 0.125;
            // the first task, which no training preceded, is NaN.
            let v = compute (ForwardTransfer()) hand
            near 0.125 v.Value "FWT"
            nearAll [ nan; 0.05; 0.2 ] v.PerTask "R[j−1][j] − b_j"

        testCase "average accuracy on the hand-written 3×3 matrix is the mean of the last row, 2/3" <| fun () ->
            // ACC = (0.5 + 0.6 + 0.9) / 3 = 2/3.
            let v = compute (AverageAccuracy()) hand
            near (2.0 / 3.0) v.Value "ACC"
            nearAll [ 0.5; 0.6; 0.9 ] v.PerTask "R[T−1][j]"

        testCase "average accuracy after task k (after_task = k) is the mean of R[k][0..k] over the tasks seen so far: 0.8 after task 1" <| fun () ->
            // A_1 = (R[1][0] + R[1][1]) / 2 = (0.9 + 0.7) / 2 = 0.8; A_0 = R[0][0] = 0.8; after_task = −1 is the last row.
            let after k = compute (AverageAccuracy(AverageAccuracyOptions(AfterTask = k))) hand
            near 0.8 (after 1).Value "A_1"
            nearAll [ 0.9; 0.7 ] (after 1).PerTask "R[1][0..1]"
            near 0.8 (after 0).Value "A_0"
            near (2.0 / 3.0) (after -1).Value "A_{T−1} = ACC"
            Expect.throws (fun () -> after 3 |> ignore) "after_task beyond the last task is refused"

        testCase "with two tasks BWT is R[1][0] − R[0][0] and FWT is R[0][1] − b_1" <| fun () ->
            // R = [[0.9, 0.3], [0.6, 0.8]], b = (0.5, 0.2): BWT = 0.6 − 0.9 = −0.3; FWT = 0.3 − 0.2 = 0.1;
            // loss increase = L[1][0] − L[0][0] = 1.1 − 0.25 = 0.85.
            let r = record [| [| 0.9; 0.3 |]; [| 0.6; 0.8 |] |] [| [| 0.25; 1.9 |]; [| 1.1; 0.2 |] |]
                           [ ProbeNames.RandomInitAccuracy, [| [| 0.5; 0.2 |] |] ]
            near -0.3 (compute (BackwardTransfer()) r).Value "BWT"
            near 0.1 (compute (ForwardTransfer()) r).Value "FWT"
            near 0.85 (compute (LossIncrease()) r).Value "loss increase"

        testCase "forgetting is zero when the matrix is constant down each column" <| fun () ->
            // Every task keeps the accuracy (and loss) it had after task 0: nothing is gained or lost later.
            let constant (row: float[]) = Array.replicate 3 row
            let r = record (constant [| 0.7; 0.4; 0.9 |]) (constant [| 0.5; 1.2; 0.3 |]) []
            for name, metric in [ "accuracy drop", AccuracyDrop() :> IForgettingMetric
                                  "average forgetting", AverageForgetting()
                                  "max forgetting", MaxForgetting()
                                  "bwt", BackwardTransfer()
                                  "loss increase", LossIncrease() ] do
                near 0.0 (compute metric r).Value name

        testCase "forgetting is negative and BWT positive when later tasks only improve earlier ones" <| fun () ->
            // R = [[0.5, 0, 0], [0.6, 0.7, 0], [0.8, 0.9, 1]]: f_0 = max(0.5, 0.6) − 0.8 = −0.2,
            // f_1 = 0.7 − 0.9 = −0.2, so average and max forgetting are −0.2;
            // BWT = ½ [(0.8 − 0.5) + (0.9 − 0.7)] = 0.25.
            let r = record [| [| 0.5; 0.0; 0.0 |]; [| 0.6; 0.7; 0.0 |]; [| 0.8; 0.9; 1.0 |] |] handLoss []
            near -0.2 (compute (AverageForgetting()) r).Value "average forgetting"
            near -0.2 (compute (MaxForgetting()) r).Value "max forgetting"
            near 0.25 (compute (BackwardTransfer()) r).Value "BWT"

        testCase "a missing probe is named" <| fun () ->
            let without = record handAccuracy handLoss [ ProbeNames.ParameterChangeNorm, [| [| 1.0 |]; [| 2.0 |]; [| 3.0 |] |] ]
            let message = refusal (ForwardTransfer()) without
            contains "'random_init_accuracy'" message
            contains "parameter_change_norm" message
            refusal (ForwardTransfer()) (record handAccuracy handLoss []) |> contains "no probes"

        testCase "a baseline probe that is not 1 × T is refused with its shape" <| fun () ->
            let wrong = record handAccuracy handLoss [ ProbeNames.RandomInitAccuracy, [| [| 0.1; 0.1 |] |] ]
            let message = refusal (ForwardTransfer()) wrong
            contains "1 × 3" message
            contains "1 × 2" message

        testCase "a record with one task is refused: T ≥ 2" <| fun () ->
            let one = record [| [| 0.9 |] |] [| [| 0.1 |] |] []
            for metric in [ LossIncrease() :> IForgettingMetric; AccuracyDrop(); AverageForgetting(); MaxForgetting()
                            BackwardTransfer(); ForwardTransfer(); AverageAccuracy() ] do
                refusal metric one |> contains "T ≥ 2"

        testCase "a ragged accuracy matrix is refused, naming the matrix and the row" <| fun () ->
            let ragged = record [| [| 0.8; 0.1; 0.2 |]; [| 0.9; 0.7 |]; [| 0.5; 0.6; 0.9 |] |] handLoss []
            let message = refusal (AverageForgetting()) ragged
            contains "Accuracy" message
            contains "row 1 has 2 entries" message

        testCase "a loss matrix with too few rows is refused, naming the matrix" <| fun () ->
            let short = record handAccuracy (handLoss[0..1]) []
            let message = refusal (LossIncrease()) short
            contains "Loss must be T × T = 3 × 3" message
            contains "2 rows" message

        testPropertyWithConfig propConfig "max forgetting ≥ average forgetting ≥ 0 when rows only lose accuracy"
        <| fun (tasks': int) (seed: int) ->
            let t = within 2 8 tasks'
            let r = record (onlyLosing (Random seed) t) (Array.init t (fun _ -> Array.zeroCreate t)) []
            let average, maximum = (compute (AverageForgetting()) r).Value, (compute (MaxForgetting()) r).Value
            if not (average >= -tolerance) then failtestf "average forgetting %.17g < 0" average
            if not (maximum >= average - tolerance) then failtestf "max forgetting %.17g < average %.17g" maximum average

        testPropertyWithConfig propConfig "average forgetting equals accuracy drop when rows only lose accuracy"
        <| fun (tasks': int) (seed: int) ->
            // The peak of a column that only falls is its diagonal entry, so max_l R[l][j] = R[j][j].
            let t = within 2 8 tasks'
            let r = record (onlyLosing (Random seed) t) (Array.init t (fun _ -> Array.zeroCreate t)) []
            near (compute (AccuracyDrop()) r).Value (compute (AverageForgetting()) r).Value "average forgetting against accuracy drop"

        testPropertyWithConfig propConfig "average forgetting ≥ accuracy drop: the peak is at least the accuracy right after training"
        <| fun (tasks': int) (seed: int) ->
            let _, r = randomRecord tasks' seed
            let forgetting, drop = (compute (AverageForgetting()) r).Value, (compute (AccuracyDrop()) r).Value
            if not (forgetting >= drop - tolerance) then failtestf "average forgetting %.17g < accuracy drop %.17g" forgetting drop

        testPropertyWithConfig propConfig "BWT of a record equals −mean accuracy drop"
        <| fun (tasks': int) (seed: int) ->
            let _, r = randomRecord tasks' seed
            near (-(meanDrop r)) (compute (BackwardTransfer()) r).Value "BWT against −mean_j (R[j][j] − R[T−1][j])"

        testPropertyWithConfig propConfig "T·ACC = trace R + (T−1)·BWT"
        <| fun (tasks': int) (seed: int) ->
            // Σ_j R[T−1][j] = Σ_{j≤T−2} (R[j][j] + (R[T−1][j] − R[j][j])) + R[T−1][T−1].
            let t, r = randomRecord tasks' seed
            let trace = Seq.sum (seq { for j in 0 .. t - 1 -> r.Accuracy[j][j] })
            let acc, bwt = (compute (AverageAccuracy()) r).Value, (compute (BackwardTransfer()) r).Value
            near (trace + float (t - 1) * bwt) (float t * acc) "T·ACC"

        testPropertyWithConfig propConfig "FWT falls by c when every baseline accuracy rises by c"
        <| fun (tasks': int) (seed: int) (c': int) ->
            let t, r = randomRecord tasks' seed
            let c = float (within 0 1000 c') / 1000.0
            let b = Array.init t (fun j -> float ((seed + 7 * j) % 100 |> abs) / 200.0)
            let withBaseline (baseline: float[]) =
                record r.Accuracy r.Loss [ ProbeNames.RandomInitAccuracy, [| baseline |] ]
            let before = (compute (ForwardTransfer()) (withBaseline b)).Value
            let after = (compute (ForwardTransfer()) (withBaseline (Array.map ((+) c) b))).Value
            near (before - c) after "FWT with the raised baseline"

        testPropertyWithConfig propConfig "loss increase of L equals accuracy drop of −L"
        <| fun (tasks': int) (seed: int) ->
            // ΔL_j = L[T−1][j] − L[j][j] = (−L)[j][j] − (−L)[T−1][j].
            let _, r = randomRecord tasks' seed
            let negated = record (r.Loss |> Array.map (Array.map (~-))) r.Loss []
            near (compute (AccuracyDrop()) negated).Value (compute (LossIncrease()) r).Value "loss increase against accuracy drop of −L"

        testPropertyWithConfig propConfig "every metric is pure: the same record gives the same value and is left unchanged"
        <| fun (tasks': int) (seed: int) ->
            let t, r0 = randomRecord tasks' seed
            let r = record r0.Accuracy r0.Loss [ ProbeNames.RandomInitAccuracy, [| Array.create t 0.1 |] ]
            let copy (m: float[][]) = m |> Array.map Array.copy
            let accuracy, loss = copy r.Accuracy, copy r.Loss
            for metric in [ LossIncrease() :> IForgettingMetric; AccuracyDrop(); AverageForgetting(); MaxForgetting()
                            BackwardTransfer(); ForwardTransfer(); AverageAccuracy() ] do
                let first, second = compute metric r, compute metric r
                if BitConverter.DoubleToInt64Bits first.Value <> BitConverter.DoubleToInt64Bits second.Value then
                    failtestf "%s: %.17g then %.17g" (metric.GetType().Name) first.Value second.Value
                if r.Accuracy <> accuracy || r.Loss <> loss then failtestf "%s changed the record" (metric.GetType().Name)
    ]
