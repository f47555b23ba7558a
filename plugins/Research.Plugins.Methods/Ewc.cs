using Research.Abstractions;
using static TorchSharp.torch;

namespace Research.Plugins.Methods;

public enum EwcMode
{
    /// <summary>One quadratic penalty per finished task: R = λ/2 Σ_t Σᵢ F_t,i (θᵢ − θ*_t,i)² (Kirkpatrick et al. 2017).</summary>
    Separate,
    /// <summary>One penalty anchored at the latest θ*, with F ← γF + F_new (online EWC, Schwarz et al. 2018).</summary>
    Online,
}

public sealed record EwcOptions : IValidatable
{
    /// <summary>λ in R = λ/2 Σ F(θ − θ*)², Kirkpatrick et al.'s λ (Avalanche's <c>ewc_lambda</c> = λ/2); choose it on
    /// validation data (it depends on the Fisher variant).</summary>
    [Option(Min = 0)]
    public double Lambda { get; init; } = 100;
    /// <summary><c>separate</c>: one penalty per finished task; <c>online</c>: one, with the Fisher decayed by γ.</summary>
    public EwcMode Mode { get; init; } = EwcMode.Separate;
    /// <summary>Online mode: the decay γ of the accumulated Fisher, F ← γF + F_new (1: plain sum).</summary>
    [Option(Min = 0, Max = 1)]
    public double Gamma { get; init; } = 1.0;
    /// <summary>The Fisher variant: <c>exact</c>, <c>sampled</c>, <c>empirical</c> or <c>batched</c>
    /// (van de Ven 2025; batched needs a λ orders of magnitude larger).</summary>
    public FisherKind Fisher { get; init; } = FisherKind.Exact;

    public IEnumerable<OptionError> Validate()
    {
        if (Mode == EwcMode.Separate && Gamma != 1.0) yield return new("gamma", "applies to mode = \"online\" only");
    }
}

/// <summary>
/// Elastic weight consolidation (Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in neural networks"; online
/// mode: Schwarz et al. 2018, "Progress &amp; compress"). After task t the core estimates the diagonal Fisher F_t at θ*_t.
/// Separate mode: R(θ) = λ/2 Σ_t Σᵢ F_t,i (θᵢ − θ*_t,i)², one term per finished task. Online mode: R(θ) = λ/2 Σᵢ F*ᵢ
/// (θᵢ − θ*ᵢ)² at the latest θ*, with F* ← γF* + F_t. The gradient λF(θ − θ*) is that of the quadratic model ½ΔθᵀHΔθ of
/// the loss increase with the Hessian replaced by the Fisher. Strength convention: λ is the paper's λ, the ½ inside
/// the penalty as Kirkpatrick et al. write it. Avalanche's EWCPlugin adds ewc_lambda·Σ F(θ − θ*)² (no ½), same modes and
/// decay_factor = γ, with the Fisher of fisher = "batched": ewc_lambda = λ/2. Van de Ven's online EWC weighs the penalty by
/// γF*: its λ = λ/γ.
/// </summary>
[Plugin("ewc", Summary = "elastic weight consolidation: λ/2 Σ F(θ − θ*)², separate or online, Fisher variant named")]
public sealed class Ewc(EwcOptions options) : IPenalty, ITaskHooks, IStateful
{
    /// <summary>(θ*, F) per finished task in separate mode; one pair in online mode.</summary>
    readonly List<(Dictionary<string, Tensor> Anchor, Dictionary<string, Tensor> Fisher)> _tasks = [];

    public Tensor? Penalty(PenaltyContext context)
    {
        if (_tasks.Count == 0 || options.Lambda == 0) return null;
        Tensor? total = null;
        foreach (var (anchor, fisher) in _tasks)
        {
            var term = SquaredDistance.Sum(context.Parameters, anchor, fisher);
            total = total is null ? term : total + term;
        }
        return total!.mul(options.Lambda / 2);
    }

    public void TaskEnd(TaskEndContext context)
    {
        if (context.IsLastTask) return;
        var anchor = SquaredDistance.Snapshot(context.Parameters);
        // Kept as they are: the host keeps what StateDict returns and frees what the plugin lets go of (the online
        // mode's previous anchor and Fisher).
        var fisher = context.Fisher(options.Fisher).ToDictionary(kv => kv.Key, kv => kv.Value);
        if (options.Mode == EwcMode.Separate || _tasks.Count == 0) { _tasks.Add((anchor, fisher)); return; }
        var (_, oldFisher) = _tasks[0];
        using (no_grad())
            foreach (var (name, f) in fisher) f.add_(oldFisher[name], alpha: options.Gamma);
        _tasks[0] = (anchor, fisher);
    }

    public IReadOnlyDictionary<string, Tensor> StateDict() =>
        _tasks.SelectMany((t, i) => t.Anchor.Select(kv => ($"{i}/theta/{kv.Key}", kv.Value))
                .Concat(t.Fisher.Select(kv => ($"{i}/fisher/{kv.Key}", kv.Value))))
            .ToDictionary(x => x.Item1, x => x.Item2);

    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state)
    {
        _tasks.Clear();
        foreach (var group in state.GroupBy(kv => int.Parse(kv.Key[..kv.Key.IndexOf('/')])).OrderBy(g => g.Key))
        {
            Dictionary<string, Tensor> Part(string kind) => group.Where(kv => kv.Key.StartsWith($"{group.Key}/{kind}/"))
                .ToDictionary(kv => kv.Key[$"{group.Key}/{kind}/".Length..], kv => kv.Value);
            _tasks.Add((Part("theta"), Part("fisher")));
        }
    }
}
