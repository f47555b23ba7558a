namespace Research.Plugins.Forgetting

open Research.Abstractions

/// Options of average-accuracy (a class, not a [<CLIMutable>] record: its default −1 must survive binding).
type AverageAccuracyOptions() =
    /// k, the task after which the accuracy is averaged over the tasks seen so far; −1: after the last task.
    [<Option(Min = -1.0)>]
    member val AfterTask = -1 with get, set

/// <summary>
/// Average accuracy after task k over the tasks seen so far, A_k = (1/(k+1)) Σ_{j≤k} R[k][j] (Chaudhry et al. 2018,
/// "Riemannian Walk for Incremental Learning", eq. 1). After the last task (k = T−1, the default) it is the ACC of
/// Lopez-Paz &amp; Ranzato 2017 ("Gradient Episodic Memory for Continual Learning", eq. 2), every task evaluated after
/// the last one was trained. PerTask: R[k][j] for j ≤ k.
/// </summary>
[<Plugin("average-accuracy", Summary = "A_k = (1/(k+1)) Σ_{j≤k} R[k][j]; after the last task, ACC (GEM)")>]
type AverageAccuracy(options: AverageAccuracyOptions) =
    new() = AverageAccuracy(AverageAccuracyOptions())
    interface IForgettingMetric with
        member _.Compute record =
            let t = EvaluationMatrix.taskCount record
            let k = if options.AfterTask < 0 then t - 1 else options.AfterTask
            if k >= t then invalidArg "record" $"after_task = {k}, but the study has {t} tasks (0 to {t - 1})"
            let seen = Array.sub record.Accuracy[k] 0 (k + 1)
            MetricValue(Array.average seen, seen)
