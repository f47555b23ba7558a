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

    // The forgetting decomposition of [study] hessian (and `research analyze hessian`). T × T probes: row i, column j is
    // task j at the end of task i (NaN for j ≥ i); L_j is the mean loss over the seeded draw of task j's training items
    // the Hessian is computed on; "/<group>" and "/<variant>" suffixes name a parameter group or a Fisher variant.

    /// <summary>T × T: ∇L_j(θ_j)·Δθ, the first-order term of the prediction.</summary>
    public const string FirstOrderLossIncrease = "first_order_loss_increase";

    /// <summary>T × T: ∇L_j·Δθ + ½ΔθᵀH_jΔθ, the quadratic model's prediction of the loss increase.</summary>
    public const string PredictedLossIncrease = "predicted_loss_increase";

    /// <summary>T × T: L_j(θ_i) − L_j(θ_j), measured on the items the Hessian uses.</summary>
    public const string MeasuredLossIncrease = "measured_loss_increase";

    /// <summary>T × T: the same increase on task j's test split (the matrix L's L[i][j] − L[j][j]).</summary>
    public const string MeasuredTestLossIncrease = "measured_test_loss_increase";

    /// <summary>T × T per variant (<c>fisher_quadratic_loss_increase/exact</c>, …): ½ Σ_k F_k Δθ_k², the diagonal
    /// Fisher in place of H_j — EWC's view of the quadratic term.</summary>
    public const string FisherQuadraticLossIncrease = "fisher_quadratic_loss_increase";

    /// <summary>T × T: ‖P_kΔθ‖² / ‖Δθ‖², the share of the change inside H_j's top-k eigenspace.</summary>
    public const string TopKNormShare = "top_k_norm_share";

    /// <summary>T × T: Σ_{m≤k} λ_m (v_mᵀΔθ)² / ΔθᵀH_jΔθ, the share of the quadratic term the top-k directions carry.</summary>
    public const string TopKQuadraticShare = "top_k_quadratic_share";

    /// <summary>T × T: ‖Δθ‖² = ‖θ_i − θ_j‖².</summary>
    public const string DeltaNormSquared = "delta_norm_squared";

    /// <summary>T × k: the top-k eigenvalues of H_j (row j), largest first.</summary>
    public const string HessianEigenvalues = "hessian_eigenvalues";

    /// <summary>T × 2: Hutchinson's estimate of tr H_j and its standard error.</summary>
    public const string HessianTrace = "hessian_trace";

    /// <summary>T × 1: L_j(θ_j) on the Hessian's items.</summary>
    public const string HessianLoss = "hessian_loss";

    /// <summary>Prefix of the points inside each task (<c>hessian_along/measured</c>, <c>/predicted</c>, <c>/fraction</c>,
    /// …): row i, column j·m + p for the p-th of the m points of task i (the last its end).</summary>
    public const string HessianAlong = "hessian_along";
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
/// <param name="Value">A finite number: a NaN or infinite value fails the study, naming the metric (the host cannot tell
/// it from a fault, and a store would keep it as no value).</param>
/// <param name="PerTask">One entry per task; NaN where the metric is undefined for that task (forgetting of the last task,
/// which no training followed).</param>
public sealed record MetricValue(double Value, IReadOnlyList<double>? PerTask = null);

/// <summary>
/// A forgetting metric: a pure function of the evaluation record (Avalanche's functional metrics;
/// Chaudhry et al. 2018; Lopez-Paz &amp; Ranzato 2017). A metric that needs the model or data (calibration, drift) also
/// implements <see cref="ITaskHooks"/> (and may implement <see cref="IStepObserver"/> and <see cref="IStateful"/>): a
/// study calls its task end at every task end, where it measures and writes a probe row
/// (<see cref="TaskEndContext.AddProbe"/>), and <see cref="Compute"/> reads its own probe from the record. The record
/// stays the one thing a metric reads, so <c>research metrics</c> computes it again from the store without the model.
/// </summary>
public interface IForgettingMetric
{
    /// <summary>The metric of the record.</summary>
    MetricValue Compute(EvaluationRecord record);
}
