using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Research.Core.Forgetting;

/// <summary>
/// Records, for every <see cref="Linear"/> layer of a model, the input X and the output Z = XWᵀ + b of each call
/// in a forward pass, through forward hooks. TorchSharp has no backward hooks, so the gradient with respect to a
/// layer's output comes from <c>autograd.grad(loss, Z)</c> on the captured Z.
/// </summary>
/// <remarks>
/// TorchSharp runs hooks only when a layer is invoked through <c>Module.call(x)</c> (PyTorch's <c>__call__</c>);
/// <c>layer.forward(x)</c> bypasses them. A layer a model invokes through <c>forward</c> therefore shows no call,
/// exactly like a layer the model does not use, and its parameters go to the caller's fallback.
/// The captured tensors belong to whatever dispose scope was open during the forward pass.
/// </remarks>
internal sealed class LinearCapture : IDisposable
{
    readonly List<Action> removers = new();
    readonly Dictionary<string, List<(Tensor X, Tensor Z)>> calls = new();

    /// <summary>Every Linear layer of the model by its name prefix ("" when the model itself is a Linear).</summary>
    public IReadOnlyDictionary<string, Linear> Layers { get; }

    public LinearCapture(nn.Module model)
    {
        var layers = new Dictionary<string, Linear>();
        if (model is Linear root) layers[""] = root;
        foreach (var (name, module) in model.named_modules())
            if (module is Linear linear && !layers.ContainsKey(name)) layers[name] = linear;
        Layers = layers;
        foreach (var (name, linear) in layers)
        {
            calls[name] = new List<(Tensor, Tensor)>();
            var list = calls[name];
            var remover = linear.register_forward_hook((_, x, z) => { list.Add((x, z)); return null!; });
            removers.Add(remover.remove);
        }
    }

    /// <summary>The (X, Z) of each call of the layer since the last <see cref="Clear"/>, in call order.</summary>
    public IReadOnlyList<(Tensor X, Tensor Z)> Calls(string prefix) => calls[prefix];

    /// <summary>Forgets the calls recorded so far (the tensors themselves belong to their dispose scope).</summary>
    public void Clear()
    {
        foreach (var list in calls.Values) list.Clear();
    }

    public void Dispose()
    {
        foreach (var remove in removers) remove();
        removers.Clear();
        Clear();
    }
}
