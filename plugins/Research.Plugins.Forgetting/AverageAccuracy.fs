namespace Research.Plugins.Forgetting

open Research.Abstractions

/// <summary>
/// Average accuracy at the end of the sequence (ACC of Lopez-Paz &amp; Ranzato 2017, "Gradient Episodic
/// Memory for Continual Learning", eq. 2): ACC = (1/T) Σ_{j=0}^{T−1} R[T−1][j], every task evaluated after
/// the last one was trained. PerTask: R[T−1][j], the last row.
/// </summary>
[<Plugin("average-accuracy", Summary = "ACC = (1/T) Σ_j R[T−1][j], mean final accuracy over all tasks (GEM)")>]
type AverageAccuracy() =
    interface IForgettingMetric with
        member _.Compute record =
            let t = EvaluationMatrix.taskCount record
            let last = Array.copy record.Accuracy[t - 1]
            MetricValue(Array.average last, last)
