using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Optim;

/// <summary>
/// An optimizer is a chain of gradient transforms applied to the gradients, then added to the parameters:
/// θ ← θ + T_k(…T_1(g)). The returned updates are Δθ, the change the step made (SI reads it).
/// </summary>
public sealed class Optimizer
{
    readonly IReadOnlyList<IGradientTransform> _chain;

    public IReadOnlyList<OptimParameter> Parameters { get; }
    /// <summary>Updates taken so far (t after the last update).</summary>
    public long StepCount { get; private set; }
    public string Name { get; }

    public Optimizer(string name, IReadOnlyList<OptimParameter> parameters, params IGradientTransform[] chain)
    {
        Name = name;
        Parameters = parameters;
        _chain = chain;
        foreach (var t in _chain) t.Init(parameters);
    }

    /// <summary>
    /// AdamW: θ ← θ − η(m̂/(√v̂+ε) + λθ) = (1−ηλ)θ − η·m̂/(√v̂+ε) (Loshchilov &amp; Hutter 2019, Algorithm 2 with
    /// schedule multiplier folded into η). optax: <c>chain(scale_by_adam, add_decayed_weights, scale_by_learning_rate)</c>.
    /// </summary>
    public static Optimizer AdamW(IReadOnlyList<OptimParameter> ps, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8) =>
        new("adamw", ps, new ScaleByAdam(beta1, beta2, eps), new AddDecayedWeights(), new ScaleByLearningRate());

    /// <summary>
    /// Adam with coupled L2: g ← g + λθ before the moments, so the decay is rescaled by 1/(√v̂+ε) — weights with
    /// large gradients decay less (the reason AdamW exists). PyTorch: <c>Adam(weight_decay=λ)</c>.
    /// </summary>
    public static Optimizer AdamL2(IReadOnlyList<OptimParameter> ps, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8) =>
        new("adam", ps, new AddDecayedWeights(), new ScaleByAdam(beta1, beta2, eps), new ScaleByLearningRate());

    /// <summary>
    /// One update with learning rate η·f(t). Parameters without a gradient are left alone (their update is 0).
    /// Returns Δθ per parameter (owned by the caller's dispose scope).
    /// </summary>
    public IReadOnlyList<Tensor> Step(double learningRate)
    {
        StepCount++;
        var info = new StepInfo(StepCount, learningRate);
        var updates = Parameters.Select(p => p.Value.grad is { } g ? g.detach().clone() : zeros_like(p.Value)).ToList();
        foreach (var t in _chain) t.Update(Parameters, updates, info);
        using (no_grad())
            for (int i = 0; i < updates.Count; i++) Parameters[i].Value.add_(updates[i]);
        return updates;
    }

    /// <summary>Sets every gradient to zero in place (keeps the gradient tensors).</summary>
    public void ZeroGrad()
    {
        foreach (var p in Parameters) p.Value.grad?.zero_();
    }

    /// <summary>State tensors of every transform by "parameter/slot".</summary>
    public IEnumerable<(string Key, Tensor Value)> State() => _chain.SelectMany(t => t.State());
}
