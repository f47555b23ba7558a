namespace Research.Plugins.Forgetting

open System.Collections.Generic
open Research.Abstractions

/// <summary>
/// Backward transfer (Lopez-Paz &amp; Ranzato 2017, "Gradient Episodic Memory for Continual Learning", eq. 3):
/// BWT = (1/(T−1)) Σ_{j ≤ T−2} (R[T−1][j] − R[j][j]), the influence of the later tasks on each earlier
/// one. Negative means forgetting; BWT = −(accuracy drop).
/// PerTask: R[T−1][j] − R[j][j] for j ≤ T−2, and NaN for the last task, which no training followed.
/// </summary>
[<Plugin("bwt", Summary = "backward transfer (1/(T−1)) Σ_{j≤T−2} R[T−1][j] − R[j][j] (GEM, Lopez-Paz & Ranzato 2017)")>]
type BackwardTransfer() =
    interface IForgettingMetric with
        member _.Compute record =
            let t = EvaluationMatrix.taskCount record
            AccuracyDrops.perEarlierTask t record.Accuracy |> Array.map (~-) |> EvaluationMatrix.meanOverEarlierTasks

/// <summary>
/// Forward transfer (Lopez-Paz &amp; Ranzato 2017, "Gradient Episodic Memory for Continual Learning", eq. 4):
/// FWT = (1/(T−1)) Σ_{j=1}^{T−1} (R[j−1][j] − b_j), the accuracy on task j before training it, above the
/// accuracy b_j of a randomly initialised model. b comes from the probe <c>random_init_accuracy</c>
/// (<see cref="ProbeNames.RandomInitAccuracy"/>, 1 × T); a record without it is an error that names it.
/// PerTask: NaN for the first task, which no training preceded, then R[j−1][j] − b_j.
/// </summary>
[<Plugin("fwt", Summary = "forward transfer (1/(T−1)) Σ_{j≥1} R[j−1][j] − b_j, b from random_init_accuracy (GEM)")>]
type ForwardTransfer() =
    static let probe = ProbeNames.RandomInitAccuracy

    static let baseline (t: int) (record: EvaluationRecord) : double[] =
        let probes = record.Probes
        let mutable b = Unchecked.defaultof<double[][]>
        if isNull (box probes) || not (probes.TryGetValue(probe, &b)) then
            let present =
                if isNull (box probes) || probes.Count = 0 then "it has no probes"
                else "it has " + (probes.Keys |> Seq.sort |> String.concat ", ")
            invalidArg "record"
                $"fwt needs the probe '{probe}' (1 × T: the accuracy of a randomly initialised model on each task, the baseline b_j); {present}"
        if isNull (box b) || b.Length <> 1 || isNull (box b[0]) || b[0].Length <> t then
            let shape = if isNull (box b) then "null" elif b.Length <> 1 || isNull (box b[0]) then $"{b.Length} rows" else $"1 × {b[0].Length}"
            invalidArg "record" $"the probe '{probe}' must be 1 × T = 1 × {t} (one baseline accuracy per task); it is {shape}"
        b[0]

    interface IForgettingMetric with
        member _.Compute record =
            let t = EvaluationMatrix.taskCount record
            let b = baseline t record
            let transfer = Array.init (t - 1) (fun i -> let j = i + 1 in record.Accuracy[j - 1][j] - b[j])
            MetricValue(Array.average transfer, Array.append [| nan |] transfer :> IReadOnlyList<float>)
