using static TorchSharp.torch;

namespace Research.Core.Optim;

/// <summary>What every transform of one optimizer step may read.</summary>
/// <param name="Count">t ≥ 1: the number of this update (bias corrections use it).</param>
/// <param name="LearningRate">η·f(t): the peak learning rate times the schedule's multiplier.</param>
public readonly record struct StepInfo(long Count, double LearningRate);

/// <summary>
/// One small piece of an optimizer, applied in place to the update tensors uᵢ (which start as the
/// gradients gᵢ). An optimizer is a chain of them, as in optax (<c>optax.chain</c>): AdamW =
/// scale-by-Adam → add decayed weights → scale by −η; Adam with L2 = add decayed weights → scale-by-Adam → scale by −η.
/// </summary>
public interface IGradientTransform
{
    /// <summary>Allocates per-parameter state (moments), zero-initialised.</summary>
    void Init(IReadOnlyList<OptimParameter> parameters) { }

    /// <summary>uᵢ ← T(uᵢ) for every parameter i, in place.</summary>
    void Update(IReadOnlyList<OptimParameter> parameters, IReadOnlyList<Tensor> updates, in StepInfo step);

    /// <summary>State tensors by "parameter-name/slot", for checkpoints and inspection.</summary>
    IEnumerable<(string Key, Tensor Value)> State() => [];
}

/// <summary>
/// Adam's scaling (Kingma &amp; Ba 2015): m ← β₁m + (1−β₁)u, v ← β₂v + (1−β₂)u²,
/// u ← m̂ / (√v̂ + ε) with m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ). optax: <c>scale_by_adam</c>.
/// </summary>
public sealed class ScaleByAdam(double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8) : IGradientTransform
{
    readonly List<(string Name, Tensor M, Tensor V)> _moments = [];

    public void Init(IReadOnlyList<OptimParameter> parameters)
    {
        foreach (var (m, v) in _moments.Select(x => (x.M, x.V))) { m.Dispose(); v.Dispose(); }
        _moments.Clear();
        foreach (var p in parameters)
            _moments.Add((p.Name, zeros_like(p.Value).DetachFromDisposeScope(), zeros_like(p.Value).DetachFromDisposeScope()));
    }

    public void Update(IReadOnlyList<OptimParameter> parameters, IReadOnlyList<Tensor> updates, in StepInfo step)
    {
        // PyTorch's Adam arranges the same arithmetic as u = (m / bc1) / (√v / √bc2 + ε).
        double bc1 = 1 - Math.Pow(beta1, step.Count), bc2Sqrt = Math.Sqrt(1 - Math.Pow(beta2, step.Count));
        using var _ = NewDisposeScope();
        for (int i = 0; i < updates.Count; i++)
        {
            var (_, m, v) = _moments[i];
            var u = updates[i];
            m.mul_(beta1).add_(u, alpha: 1 - beta1);
            v.mul_(beta2).addcmul_(u, u, value: 1 - beta2);
            var denom = v.sqrt().div_(bc2Sqrt).add_(eps);
            u.copy_(m).div_(denom).div_(bc1);
        }
    }

    public IEnumerable<(string Key, Tensor Value)> State() =>
        _moments.SelectMany(x => new[] { ($"{x.Name}/exp_avg", x.M), ($"{x.Name}/exp_avg_sq", x.V) });
}

/// <summary>
/// u ← u + λ_g·θ for parameters whose group has λ_g &gt; 0 (the mask is the group table). After Adam's
/// scaling this is decoupled weight decay (Loshchilov &amp; Hutter 2019); before it, it is L2 in the gradient.
/// optax: <c>add_decayed_weights</c>.
/// </summary>
public sealed class AddDecayedWeights : IGradientTransform
{
    public void Update(IReadOnlyList<OptimParameter> parameters, IReadOnlyList<Tensor> updates, in StepInfo step)
    {
        for (int i = 0; i < updates.Count; i++)
        {
            var wd = parameters[i].Group.WeightDecay;
            if (wd != 0) updates[i].add_(parameters[i].Value.detach(), alpha: wd);
        }
    }
}

/// <summary>u ← −η·f(t)·μ_g·u, with μ_g the group's learning-rate multiplier. optax: <c>scale_by_learning_rate</c>.</summary>
public sealed class ScaleByLearningRate : IGradientTransform
{
    public void Update(IReadOnlyList<OptimParameter> parameters, IReadOnlyList<Tensor> updates, in StepInfo step)
    {
        for (int i = 0; i < updates.Count; i++)
            updates[i].mul_(-step.LearningRate * parameters[i].Group.LrMultiplier);
    }
}
