namespace Research.Plugins.Forgetting

open Research.Abstractions

/// Accuracy drop of each earlier task j from right after it was trained to the end: R[j][j] − R[T−1][j].
/// Avalanche's functional forgetting (evaluation/functional.py) at the last row.
module internal AccuracyDrops =
    let perEarlierTask (t: int) (accuracy: double[][]) =
        EvaluationMatrix.earlierTasks t (fun j -> accuracy[j][j] - accuracy[t - 1][j])

/// <summary>
/// Accuracy drop: d_j = R[j][j] − R[T−1][j], the accuracy task j lost between the end of its own training
/// and the end of the sequence (Avalanche, evaluation/functional.py, <c>forgetting</c>).
/// Value: (1/(T−1)) Σ_{j ≤ T−2} d_j, which is −BWT. Positive means forgetting.
/// PerTask: d_j for j ≤ T−2, and NaN for the last task, which no training followed.
/// </summary>
[<Plugin("accuracy-drop", Summary = "mean over earlier tasks j of R[j][j] − R[T−1][j] (accuracy lost since j was trained)")>]
type AccuracyDrop() =
    interface IForgettingMetric with
        member _.Compute record =
            let t = EvaluationMatrix.taskCount record
            AccuracyDrops.perEarlierTask t record.Accuracy |> EvaluationMatrix.meanOverEarlierTasks
