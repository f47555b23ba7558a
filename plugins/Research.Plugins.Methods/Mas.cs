using Research.Abstractions;
using static TorchSharp.torch;

namespace Research.Plugins.Methods;

public sealed record MasOptions
{
    /// <summary>λ in R = λ Σₖ Ωₖ(θₖ − θ*ₖ)² (no ½), Aljundi et al.'s λ; Avalanche's <c>lambda_reg</c> multiplies the same sum
    /// (factor 1 while one task has ended, but its Ω is another estimate: docs/methods.md).</summary>
    [Option(Min = 0)]
    public double Lambda { get; init; } = 1;
    /// <summary>Items of the task's training data the importance is averaged over (the first ones); 0: every item.</summary>
    [Option(Min = 0)]
    public int MaxItems { get; init; } = 1000;
}

/// <summary>
/// Memory Aware Synapses (Aljundi, Babiloni, Elhoseiny, Rohrbach &amp; Tuytelaars 2018, "Memory aware synapses: learning
/// what (not) to forget"). The importance of θₖ is how much the learned function moves when θₖ does, measured without
/// labels: Ωₖ = (1/N) Σᵢ |∂‖f(xᵢ)‖²₂ / ∂θₖ| over N items of the task (one gradient per item, of the squared ℓ2 norm of
/// the logits), accumulated over tasks Ω ← Ω + Ω_new. Later tasks pay R(θ) = λ Σₖ Ωₖ(θₖ − θ*ₖ)², gradient 2λΩ(θ − θ*),
/// anchored at the latest θ*. Strength convention: λ is the paper's λ, in the paper's form (no ½). Avalanche's MASPlugin
/// adds lambda_reg·Σ Ω(θ − θ*)² (factor 1) but estimates Ω per mini-batch, |∇ of the batch's mean ‖f(x)‖²| (ours with
/// batches of one item), and accumulates Ω ← αΩ + (1 − α)Ω_new: after two tasks at its α = ½, lambda_reg = 2λ.
/// </summary>
[Plugin("mas", Summary = "memory aware synapses: λ Σ Ω(θ − θ*)², Ω = mean |∇θ‖f(x)‖²| per item")]
public sealed class Mas(MasOptions options) : IPenalty, ITaskHooks, IStateful
{
    Dictionary<string, Tensor>? _importance;
    Dictionary<string, Tensor>? _anchor;

    public Tensor? Penalty(PenaltyContext context)
    {
        if (_anchor is null || options.Lambda == 0) return null;
        return SquaredDistance.Sum(context.Parameters, _anchor, _importance).mul(options.Lambda);
    }

    public void TaskEnd(TaskEndContext context)
    {
        if (context.IsLastTask) return;
        var sum = context.Parameters.ToDictionary(p => p.Name, p => zeros_like(p.Value, dtype: ScalarType.Float32));
        long items = 0;
        foreach (var batch in context.Data)
        {
            for (long i = 0; i < batch.Size && !Enough(items); i++)
            {
                // One item at a time: |·| of a batch's summed gradient is not the sum of the items' |·|.
                var item = batch.Narrow(i, 1);
                var gradients = context.GradientOf(item, logits => logits.square().sum());   // ∇θ‖f(xᵢ)‖²₂
                for (var k = 0; k < gradients.Count; k++)
                {
                    sum[context.Parameters[k].Name].add_(gradients[k].abs_());
                    gradients[k].Dispose();   // freed now, not at the end of the call: the items' gradients would pile up
                }
                items++;
            }
            if (Enough(items)) break;
        }
        if (items > 0)
            foreach (var s in sum.Values) s.div_(items);   // Ω_new = (1/N) Σᵢ |gᵢ|
        if (_importance is null) _importance = sum;
        else foreach (var (name, s) in sum) _importance[name].add_(s);   // Ω ← Ω + Ω_new
        _anchor = SquaredDistance.Snapshot(context.Parameters);
    }

    bool Enough(long items) => options.MaxItems > 0 && items >= options.MaxItems;

    public IReadOnlyDictionary<string, Tensor> StateDict() => StateEntries.Of(
        StateEntries.Prefixed("importance", _importance), StateEntries.Prefixed("anchor", _anchor));

    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state)
    {
        _importance = StateEntries.Part(state, "importance");
        _anchor = StateEntries.Part(state, "anchor");
    }
}
