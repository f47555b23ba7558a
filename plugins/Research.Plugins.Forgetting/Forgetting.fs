namespace Research.Plugins.Forgetting

open Research.Abstractions

/// Chaudhry et al.'s per-task forgetting, shared by the average and the maximum.
module internal PeakForgetting =
    /// f_j = max_{l ∈ {j, …, T−2}} R[l][j] − R[T−1][j] for j ≤ T−2.
    let perEarlierTask (t: int) (accuracy: double[][]) =
        EvaluationMatrix.earlierTasks t (fun j ->
            let peak = seq { j .. t - 2 } |> Seq.map (fun l -> accuracy[l][j]) |> Seq.max
            peak - accuracy[t - 1][j])

/// <summary>
/// Average forgetting (Chaudhry et al. 2018, "Riemannian Walk for Incremental Learning", eq. 3 at k = T−1):
/// f_j = max_{l ∈ {j, …, T−2}} R[l][j] − R[T−1][j], the gap between the best accuracy task j ever had
/// before the last task and its final accuracy. Value: (1/(T−1)) Σ_{j ≤ T−2} f_j; f_j ≥ 0 unless the last
/// task raised task j above its peak (then f_j &lt; 0, backward transfer).
/// The paper's maximum runs over l ∈ {0, …, T−2}; it starts at l = j here, the first evaluation after task j
/// was trained, so accuracy on a task not yet learned (forward transfer) is not counted as knowledge lost.
/// PerTask: f_j for j ≤ T−2, and NaN for the last task, which no training followed.
/// </summary>
[<Plugin("average-forgetting", Summary = "mean over earlier tasks j of max_{l∈j..T−2} R[l][j] − R[T−1][j] (Chaudhry et al. 2018)")>]
type AverageForgetting() =
    interface IForgettingMetric with
        member _.Compute record =
            let t = EvaluationMatrix.taskCount record
            PeakForgetting.perEarlierTask t record.Accuracy |> EvaluationMatrix.meanOverEarlierTasks

/// <summary>
/// Maximum forgetting: max_{j ≤ T−2} f_j with f_j = max_{l ∈ {j, …, T−2}} R[l][j] − R[T−1][j], the
/// per-task forgetting of Chaudhry et al. 2018 ("Riemannian Walk for Incremental Learning"), reporting the
/// worst-hit task instead of the average. Always ≥ average forgetting.
/// PerTask: f_j for j ≤ T−2, and NaN for the last task, which no training followed.
/// </summary>
[<Plugin("max-forgetting", Summary = "max over earlier tasks j of max_{l∈j..T−2} R[l][j] − R[T−1][j] (the worst-hit task)")>]
type MaxForgetting() =
    interface IForgettingMetric with
        member _.Compute record =
            let t = EvaluationMatrix.taskCount record
            let f = PeakForgetting.perEarlierTask t record.Accuracy
            MetricValue(Array.max f, EvaluationMatrix.withLastUndefined f)
