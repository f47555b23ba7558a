using Research.Abstractions;
using Research.Core.Plugins;
using Research.Core.Training;
using TorchSharp;
using static TorchSharp.torch;

using Research.Core;
namespace Research.Cli.Bench;

/// <summary>
/// The step benchmark with elastic weight consolidation on: the hand-written loop adds λ/2 Σᵢ Fᵢ(θᵢ − θ*ᵢ)² (Kirkpatrick et
/// al. 2017) to its mean loss in plain TorchSharp, the trainer's step runs the built-in <c>ewc</c> plugin, loaded from the
/// built-in plugins folder as a run loads it, with the same θ* and F in its state — as if one task had ended. θ* is the
/// initial weights moved by N(0, 0.01²) and F is U(0, 1), both drawn from the workload's seed, so the penalty and its
/// gradient are neither zero nor negligible.
/// </summary>
public static class EwcWorkload
{
    /// <summary>λ of the benchmark's penalty: large enough that the penalty's gradient matters beside the loss's.</summary>
    public const double Lambda = 100;

    /// <summary>Suffix of a step workload's name that turns EWC on (<c>mlp+ewc</c>).</summary>
    public const string Suffix = "+ewc";

    /// <summary>θ* and F by parameter name, new tensors owned by the caller.</summary>
    public static (Dictionary<string, Tensor> Anchor, Dictionary<string, Tensor> Fisher) State(nn.Module<Tensor, Tensor> model, long seed)
    {
        var g = Seeds.Generator(seed, "bench.ewc");
        using var _ = no_grad();
        var anchor = new Dictionary<string, Tensor>();
        var fisher = new Dictionary<string, Tensor>();
        foreach (var (name, p) in model.named_parameters())
        {
            anchor[name] = p.detach().clone().add_(randn(p.shape, generator: g).mul_(0.01));
            fisher[name] = rand(p.shape, generator: g);
        }
        return (anchor, fisher);
    }

    /// <summary>The workload's mean loss plus λ/2 Σ F(θ − θ*)², for the hand-written loop.</summary>
    public static Func<nn.Module<Tensor, Tensor>, Batch, Tensor> PenalisedLoss(
        Func<nn.Module<Tensor, Tensor>, Batch, Tensor> meanLoss, IReadOnlyDictionary<string, Tensor> anchor,
        IReadOnlyDictionary<string, Tensor> fisher) => (model, batch) =>
    {
        var loss = meanLoss(model, batch);
        foreach (var (name, p) in model.named_parameters())
            loss = loss + (fisher[name] * (p - anchor[name]).square()).sum().mul(Lambda / 2);
        return loss;
    };

    /// <summary>The built-in <c>ewc</c> plugin with λ = <see cref="Lambda"/> and one finished task's θ* and F (copies).</summary>
    public static MethodSet Methods(IReadOnlyDictionary<string, Tensor> anchor, IReadOnlyDictionary<string, Tensor> fisher)
    {
        var host = PluginHost.Load([]);
        var descriptor = host.Find(PluginRole.Method, "ewc");
        var options = new Tomlyn.Model.TomlTable { ["lambda"] = Lambda };
        var ewc = PluginHost.Instantiate(descriptor, options, "bench", "methods[0]");
        var state = anchor.Select(kv => ($"0/theta/{kv.Key}", kv.Value.clone()))
            .Concat(fisher.Select(kv => ($"0/fisher/{kv.Key}", kv.Value.clone())))
            .ToDictionary(x => x.Item1, x => x.Item2);
        ((IStateful)ewc).LoadStateDict(state);
        return new MethodSet([new GuardedMethod(ewc, descriptor)]);
    }
}
