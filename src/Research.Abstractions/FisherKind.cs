namespace Research.Abstractions;

/// <summary>
/// Which diagonal Fisher information of a classifier p_θ(y|x) to compute over N samples, as named by van de Ven
/// (2025), "On the computation of the Fisher Information in continual learning", arXiv 2502.11756. On Split CIFAR-10
/// he measures EWC at 84.91 (Exact), 83.77 (Sampled), 83.28 (Empirical), 83.38 (Batched) — the variants differ, so
/// every EWC run should say which one it used.
/// </summary>
public enum FisherKind
{
    /// <summary>
    /// F = (1/N) Σᵢ Σ_c p_θ(c|xᵢ) (∇θ log p_θ(c|xᵢ))²: the Fisher of the model, the expectation over the classes
    /// under the model's own predictive distribution. C backward passes per batch.
    /// </summary>
    Exact,

    /// <summary>
    /// F = (1/N) Σᵢ (∇θ log p_θ(ŷᵢ|xᵢ))² with one label ŷᵢ ~ p_θ(·|xᵢ) drawn per sample from an explicit generator:
    /// an unbiased one-draw Monte Carlo estimate of <see cref="Exact"/>.
    /// </summary>
    Sampled,

    /// <summary>
    /// F = (1/N) Σᵢ (∇θ log p_θ(yᵢ|xᵢ))² with the true label yᵢ: the "empirical Fisher". It is the Fisher of the
    /// model only where the model's predictive distribution matches the labels.
    /// </summary>
    Empirical,

    /// <summary>
    /// F = (1/M) Σ_batches (∇θ (1/B) Σᵢ log p_θ(yᵢ|xᵢ))², the square of each mini-batch's MEAN gradient (true labels),
    /// averaged over the M batches — what Avalanche's EWC computes. Not a per-sample Fisher: the cross terms
    /// gᵢ·gⱼ (i ≠ j) largely cancel, so it is roughly 1/B of <see cref="Empirical"/> and an EWC λ tuned for the
    /// per-sample variants must be orders of magnitude larger for it.
    /// </summary>
    Batched,
}
