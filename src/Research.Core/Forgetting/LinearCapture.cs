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
/// <para>
/// TorchSharp runs hooks only when a layer is invoked through <c>Module.call(x)</c> (PyTorch's <c>__call__</c>);
/// <c>layer.forward(x)</c> bypasses them. A layer a model invokes through <c>forward</c> therefore shows no call,
/// exactly like a layer the model does not use, and its parameters go to the caller's fallback.
/// </para>
/// <para>
/// The hook does not keep the X and Z it is handed: it keeps <c>alias()</c>es of them, new managed handles to the same
/// native tensors. The tensors a hook sees belong to the model, which may dispose them as soon as the forward pass no
/// longer needs them: TorchSharp's <c>nn.Sequential.forward</c> disposes each intermediate output once the next
/// module has consumed it, so a layer's Z (and the next layer's X) would be an empty handle by the time the Fisher
/// differentiates with respect to it ("Tensor invalid -- empty handle"). Disposing a handle only drops one reference;
/// the alias keeps the native tensor, with its autograd history, alive, and since it is the same tensor
/// <c>autograd.grad(loss, alias)</c> is the gradient with respect to the layer's output.
/// </para>
/// <para>
/// The aliases are registered on the dispose scope open during the forward pass (the caller's per-batch scope), which
/// frees them with the rest of the batch; <see cref="Clear"/> only forgets them. Outside a dispose scope they would be
/// left to the finalizer, so callers run the forward pass inside one.
/// </para>
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
            var remover = linear.register_forward_hook((_, x, z) => { list.Add((x.alias(), z.alias())); return null!; });
            removers.Add(remover.remove);
        }
    }

    /// <summary>The (X, Z) of each call of the layer since the last <see cref="Clear"/>, in call order.</summary>
    public IReadOnlyList<(Tensor X, Tensor Z)> Calls(string prefix) => calls[prefix];

    /// <summary>Forgets the calls recorded so far (the aliases themselves belong to the dispose scope of their forward pass).</summary>
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
