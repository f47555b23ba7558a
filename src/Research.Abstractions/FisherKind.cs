namespace Research.Abstractions;

/// <summary>
/// Which diagonal Fisher information of a classifier p_θ(y|x) to compute over N samples, as named by van de Ven
/// (2025), "On the computation of the Fisher Information in continual learning", arXiv 2502.11756. On Split CIFAR-10
/// he measures EWC at 84.91 (Exact), 83.77 (Sampled), 83.28 (Empirical), 83.38 (Batched) — the variants differ, so
/// every EWC run should say which one it used. For a sequence model (logits [B, T, V]) the sample is a sequence, its
/// log-likelihood the sum over its counted positions, teacher-forced on the real prefix, and N becomes the number of
/// counted tokens: F = Σ_b (∇θ Σₜ log p_θ(y_bt|x_b,&lt;t))² / Σ_b n_b (the core's Fisher says why).
/// </summary>
public enum FisherKind
{
    /// <summary>
    /// F = (1/N) Σᵢ Σ_c p_θ(c|xᵢ) (∇θ log p_θ(c|xᵢ))²: the Fisher of the model, the expectation over the classes
    /// under the model's own predictive distribution. C backward passes per batch. Refused for sequence outputs, where
    /// the expectation runs over V^T label sequences: use <see cref="Sampled"/>.
    /// </summary>
    Exact,

    /// <summary>
    /// F = (1/N) Σᵢ (∇θ log p_θ(ŷᵢ|xᵢ))² with one label ŷᵢ ~ p_θ(·|xᵢ) drawn per sample from an explicit generator:
    /// an unbiased one-draw Monte Carlo estimate of <see cref="Exact"/>. For sequences, one draw per counted position
    /// (the prefix stays the real text): an unbiased estimate of the mean per-token Fisher, since the cross-position
    /// terms vanish in expectation.
    /// </summary>
    Sampled,

    /// <summary>
    /// F = (1/N) Σᵢ (∇θ log p_θ(yᵢ|xᵢ))² with the true label yᵢ: the "empirical Fisher". It is the Fisher of the
    /// model only where the model's predictive distribution matches the labels. For sequences it also keeps the products
    /// of different positions' gradients, which vanish in expectation only there.
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
