namespace Research.Abstractions;

/// <summary>Names of the probes the core computes at each task end and stores in the record.</summary>
public static class ProbeNames
{
    /// <summary>1 × T: accuracy of a randomly initialised model on each task (test split); the
    /// baseline b̄ⱼ of forward transfer (Lopez-Paz &amp; Ranzato 2017).</summary>
    public const string RandomInitAccuracy = "random_init_accuracy";

    /// <summary>T × 1: ‖θ_i − θ_{i−1}‖₂ at the end of task i (θ_{−1} is the initial model).</summary>
    public const string ParameterChangeNorm = "parameter_change_norm";

    /// <summary>T × T: ½ Δθᵀ H_j Δθ, the quadratic prediction of the loss increase on task j after
    /// training task i (Δθ = θ_i − θ_j, H_j the Hessian of task j's loss at θ_j).</summary>
    public const string QuadraticLossIncrease = "quadratic_loss_increase";
}

/// <summary>
/// The evaluation record of a sequence of tasks. Row i is "after training task i", column j is
/// "evaluated on task j": R[i][j]. Lower-triangular entries measure forgetting, upper ones transfer.
/// </summary>
/// <param name="Tasks">Task names, in training order.</param>
/// <param name="Accuracy">R[i][j], accuracy on task j's test split after training task i, in [0, 1].</param>
/// <param name="Loss">L[i][j], mean per-item loss on task j's test split after training task i.</param>
/// <param name="Probes">Further matrices the core computed, by the names in <see cref="ProbeNames"/>.</param>
public sealed record EvaluationRecord(
    IReadOnlyList<string> Tasks,
    double[][] Accuracy,
    double[][] Loss,
    IReadOnlyDictionary<string, double[][]> Probes);

/// <summary>A metric's value, with per-task values where the metric has them.</summary>
public sealed record MetricValue(double Value, IReadOnlyList<double>? PerTask = null);

/// <summary>
/// A forgetting metric: a pure function of the evaluation record (Avalanche's functional metrics;
/// Chaudhry et al. 2018; Lopez-Paz &amp; Ranzato 2017). Anything that needs the model or data is a
/// probe computed by the core; a metric only reads.
/// </summary>
public interface IForgettingMetric
{
    /// <summary>The metric of the record.</summary>
    MetricValue Compute(EvaluationRecord record);
}
