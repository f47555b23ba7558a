using static TorchSharp.torch;

namespace Research.Core.Optim;

/// <summary>What every transform of one optimizer step may read.</summary>
/// <param name="Count">t ≥ 1: the number of this update (bias corrections use it).</param>
/// <param name="LearningRate">η·f(t): the peak learning rate times the schedule's multiplier.</param>
public readonly record struct StepInfo(long Count, double LearningRate);

/// <summary>
/// One small piece of an optimizer, applied in place to the flat update u (which starts as the gradient g,
/// laid out like the parameter buffer θ). An optimizer is a chain of them, as in optax (<c>optax.chain</c>):
/// AdamW = scale-by-Adam → add decayed weights → scale by −η; Adam with L2 = add decayed weights →
/// scale-by-Adam → scale by −η; SGD = add decayed weights → trace momentum → scale by −η.
/// </summary>
public interface IGradientTransform
{
    /// <summary>Allocates flat state (moments) laid out like <paramref name="buffer"/>, zero-initialised.</summary>
    void Init(FlatBuffer buffer) { }

    /// <summary>u ← T(u), in place; <paramref name="theta"/> is the flat fp32 parameter vector.</summary>
    void Update(Tensor u, Tensor theta, IReadOnlyList<GroupSlice> groups, in StepInfo step);

    /// <summary>Flat state tensors by slot name (<c>exp_avg</c>, <c>exp_avg_sq</c>, <c>momentum</c>).</summary>
    IEnumerable<(string Slot, Tensor Flat)> State() => [];
}

/// <summary>
/// Adam's scaling (Kingma &amp; Ba 2015): m ← β₁m + (1−β₁)u, v ← β₂v + (1−β₂)u²,
/// u ← m̂ / (√v̂ + ε) with m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ). optax: <c>scale_by_adam</c>.
/// </summary>
public sealed class ScaleByAdam(double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8) : IGradientTransform, IDisposable
{
    Tensor? _m, _v;

    public void Init(FlatBuffer buffer)
    {
        Dispose();
        _m = zeros(buffer.Count, dtype: ScalarType.Float32).DetachFromDisposeScope();
        _v = zeros(buffer.Count, dtype: ScalarType.Float32).DetachFromDisposeScope();
    }

    public void Update(Tensor u, Tensor theta, IReadOnlyList<GroupSlice> groups, in StepInfo step)
    {
        // Arranged as PyTorch's Adam arranges it: u = (m / bc1) / (√v / √bc2 + ε).
        using var denom = Moments(u, step);
        u.copy_(_m!).div_(denom).div_(1 - Math.Pow(beta1, step.Count));
    }

    /// <summary>Updates m and v from the gradient g; returns √v / √bc2 + ε.</summary>
    Tensor Moments(Tensor g, in StepInfo step)
    {
        double bc2Sqrt = Math.Sqrt(1 - Math.Pow(beta2, step.Count));
        _m!.lerp_(g, 1 - beta1);                       // m + (1−β₁)(g − m) = β₁m + (1−β₁)g, one pass
        _v!.mul_(beta2).addcmul_(g, g, value: 1 - beta2);
        var denom = _v.sqrt();
        return denom.div_(bc2Sqrt).add_(eps);
    }

    /// <summary>
    /// The whole AdamW update in place, fused as PyTorch's single-tensor AdamW fuses it:
    /// θ_g ← θ_g·(1 − η_g λ_g), then θ ← θ − (η_g / bc1)·m / (√v/√bc2 + ε) — 8 passes over the parameters instead of
    /// the 13 of the composed chain. Used by <see cref="Optimizer"/> only for the chain (scale-by-Adam → add decayed
    /// weights → scale by −η) when nobody needs Δθ; a test checks it against the chain.
    /// </summary>
    internal void FusedAdamW(Tensor g, Tensor theta, IReadOnlyList<GroupSlice> groups, in StepInfo step)
    {
        using var denom = Moments(g, step);
        double bc1 = 1 - Math.Pow(beta1, step.Count);
        foreach (var group in groups)
        {
            double lr = step.LearningRate * group.Group.LrMultiplier;
            using var t = groups.Count == 1 ? theta.alias() : theta.narrow(0, group.Offset, group.Count);
            if (group.Group.WeightDecay != 0) t.mul_(1 - lr * group.Group.WeightDecay);
            using var m = groups.Count == 1 ? _m!.alias() : _m!.narrow(0, group.Offset, group.Count);
            using var d = groups.Count == 1 ? denom.alias() : denom.narrow(0, group.Offset, group.Count);
            t.addcdiv_(m, d, value: -lr / bc1);
        }
    }

    public IEnumerable<(string Slot, Tensor Flat)> State() => [("exp_avg", _m!), ("exp_avg_sq", _v!)];

    public void Dispose() { _m?.Dispose(); _v?.Dispose(); }
}

/// <summary>
/// u ← u + λ_g·θ on each group slice with λ_g ≠ 0 (the group table is the mask). After Adam's scaling this is
/// decoupled weight decay (Loshchilov &amp; Hutter 2019); before it, it is L2 in the gradient. Either way it
/// pulls θ toward zero — pulling toward pre-trained weights is L2-SP, a regularizer. optax: <c>add_decayed_weights</c>.
/// </summary>
public sealed class AddDecayedWeights : IGradientTransform
{
    public void Update(Tensor u, Tensor theta, IReadOnlyList<GroupSlice> groups, in StepInfo step)
    {
        foreach (var g in groups)
        {
            if (g.Group.WeightDecay == 0) continue;
            using var us = u.narrow(0, g.Offset, g.Count);
            using var ts = theta.narrow(0, g.Offset, g.Count);
            us.add_(ts, alpha: g.Group.WeightDecay);
        }
    }
}

/// <summary>
/// Heavy-ball momentum (Polyak 1964; PyTorch's SGD with dampening 0): b ← μb + u, then u ← b, or with
/// Nesterov (Sutskever et al. 2013) u ← u + μb. optax: <c>trace</c>.
/// </summary>
public sealed class TraceMomentum(double momentum, bool nesterov) : IGradientTransform, IDisposable
{
    Tensor? _b;

    public void Init(FlatBuffer buffer)
    {
        Dispose();
        _b = zeros(buffer.Count, dtype: ScalarType.Float32).DetachFromDisposeScope();
    }

    public void Update(Tensor u, Tensor theta, IReadOnlyList<GroupSlice> groups, in StepInfo step)
    {
        // PyTorch starts the buffer at the first gradient: b₁ = g₁, which b ← μ·0 + g also gives.
        _b!.mul_(momentum).add_(u);
        if (nesterov) u.add_(_b, alpha: momentum);
        else u.copy_(_b);
    }

    public IEnumerable<(string Slot, Tensor Flat)> State() => [("momentum", _b!)];

    public void Dispose() => _b?.Dispose();
}

/// <summary>u ← −η·f(t)·μ_g·u on each group slice, μ_g the group's learning-rate multiplier.
/// optax: <c>scale_by_learning_rate</c>.</summary>
public sealed class ScaleByLearningRate : IGradientTransform
{
    public void Update(Tensor u, Tensor theta, IReadOnlyList<GroupSlice> groups, in StepInfo step)
    {
        if (groups.Count == 1) { u.mul_(-step.LearningRate * groups[0].Group.LrMultiplier); return; }
        foreach (var g in groups)
        {
            using var us = u.narrow(0, g.Offset, g.Count);
            us.mul_(-step.LearningRate * g.Group.LrMultiplier);
        }
    }
}
