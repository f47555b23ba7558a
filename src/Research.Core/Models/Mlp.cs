using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Research.Core.Models;

/// <summary>
/// A multi-layer perceptron: x → [Linear → ReLU]* → head. Parameters are named <c>layers.{i}.weight</c>,
/// <c>layers.{i}.bias</c>, <c>head.weight</c>, <c>head.bias</c>.
/// </summary>
public sealed class Mlp : nn.Module<Tensor, Tensor>
{
    readonly ModuleList<Linear> layers = new();
    readonly Linear head;

    public Mlp(long inputs, IReadOnlyList<int> hidden, long outputs) : base("mlp")
    {
        var width = inputs;
        foreach (var h in hidden) { layers.Add(nn.Linear(width, h)); width = h; }
        head = nn.Linear(width, outputs);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        // call (not forward) runs forward hooks: the Fisher estimators capture each layer's input and output with them.
        foreach (var layer in layers) x = nn.functional.relu(layer.call(x));
        return head.call(x);
    }
}

public static class Init
{
    /// <summary>
    /// PyTorch's default initialisation of a Linear or Conv layer, drawn from an explicit generator (not the
    /// process-global one): W, b ~ U(−1/√fan_in, 1/√fan_in) with fan_in = in_features (Linear) or
    /// in_channels·∏kernel (Conv) — kaiming_uniform with a = √5 gives the same bound for W. A layer is a weight of rank
    /// ≥ 2 and its sibling bias. Only parameters whose name starts with one of <paramref name="prefixes"/> (all when empty).
    /// </summary>
    public static void LinearDefault(nn.Module module, Generator generator, IReadOnlyCollection<string>? prefixes = null)
    {
        using var _ = NewDisposeScope();
        using var __ = no_grad();
        var fanIn = new Dictionary<string, long>();
        foreach (var (name, p) in module.named_parameters())
            if (name.EndsWith(".weight") && p.dim() >= 2) fanIn[name[..^".weight".Length]] = p.numel() / p.shape[0];
        foreach (var (name, p) in module.named_parameters())
        {
            if (prefixes is { Count: > 0 } && !prefixes.Any(pre => name == pre || name.StartsWith(pre + "."))) continue;
            var owner = name[..name.LastIndexOf('.')];
            if (!fanIn.TryGetValue(owner, out var fan)) continue;
            var bound = 1.0 / Math.Sqrt(fan);
            p.copy_(rand(p.shape, generator: generator).mul_(2 * bound).sub_(bound));
        }
    }
}
