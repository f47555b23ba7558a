namespace Research.Plugins.Forgetting

open Research.Abstractions

/// <summary>
/// Loss increase on earlier tasks: ΔL_j = L[T−1][j] − L[j][j], the loss on task j after the last task
/// minus the loss right after task j was trained. For two tasks A then B this is L_A(θ_B) − L_A(θ_A),
/// the quantity the quadratic model ½ Δθᵀ H_A Δθ predicts (Kirkpatrick et al. 2017, EWC, §2;
/// Mirzadeh et al. 2020, "Understanding the Role of Training Regimes in Continual Learning").
/// Value: (1/(T−1)) Σ_{j ≤ T−2} ΔL_j, in the loss's units (nats per item for cross-entropy).
/// PerTask: ΔL_j for j ≤ T−2, and NaN for the last task, which no training followed.
/// </summary>
[<Plugin("loss-increase", Summary = "mean over earlier tasks j of L[T−1][j] − L[j][j] (loss gained on j by later training)")>]
type LossIncrease() =
    interface IForgettingMetric with
        member _.Compute record =
            let t = EvaluationMatrix.taskCount record
            let loss = record.Loss
            EvaluationMatrix.earlierTasks t (fun j -> loss[t - 1][j] - loss[j][j])
            |> EvaluationMatrix.meanOverEarlierTasks

/// <summary>
/// What training each later task learned of it, in loss: G_j = L[j−1][j] − L[j][j], task j's loss before its own training
/// (the model after task j − 1) minus its loss right after. For English then German this is the German loss (nats per
/// token) fine-tuning removed — the gain that <see cref="LossIncrease"/>'s forgetting buys. Value: (1/(T−1)) Σ_{j ≥ 1} G_j.
/// PerTask: NaN for task 0, which no model before it was evaluated against, then G_j.
/// </summary>
[<Plugin("loss-learned", Summary = "mean over later tasks j of L[j−1][j] − L[j][j] (loss removed on j by training it)")>]
type LossLearned() =
    interface IForgettingMetric with
        member _.Compute record =
            let t = EvaluationMatrix.taskCount record
            let loss = record.Loss
            let gains = Array.init (t - 1) (fun i -> let j = i + 1 in loss[j - 1][j] - loss[j][j])
            MetricValue(Array.average gains, Array.append [| nan |] gains)
