using static TorchSharp.torch;

namespace Research.Core.Hessian;

/// <summary>
/// Hessian-vector products Hv = ∇_θ(∇_θL · v) by double backward (Pearlmutter 1994), without forming H.
/// </summary>
/// <remarks>
/// libtorch aborts the whole process (exit 134, no .NET exception to catch) when a graph built with
/// <c>create_graph: true</c> is backpropagated a second time without <c>retain_graph: true</c> — and TorchSharp, unlike
/// PyTorch, does not retain it by default, so the textbook two-line product aborts (measured: "Trying to backward through
/// the graph a second time", then <c>terminate</c>). This API makes that impossible by construction: it takes the loss as a function and builds a fresh graph on every call; the first-order
/// graph is consumed exactly once, by the second <c>autograd.grad</c>, inside the call, and only detached tensors leave it.
/// A caller never holds a tensor that carries the double-backward graph.
/// </remarks>
public static class HessianVector
{
    /// <summary>H v for the loss <paramref name="loss"/> builds (over the caller's batch), one tensor per parameter, detached,
    /// owned by the caller's dispose scope. <paramref name="v"/> has the parameters' shapes.</summary>
    public static Tensor[] Product(Func<Tensor> loss, IReadOnlyList<Tensor> parameters, IReadOnlyList<Tensor> v)
    {
        if (parameters.Count != v.Count) throw new ArgumentException($"{parameters.Count} parameters but {v.Count} vector parts", nameof(v));
        using var scope = NewDisposeScope();
        var l = loss();
        if (l.numel() != 1) throw new ArgumentException($"the loss must be a scalar, not of shape [{string.Join(", ", l.shape)}]", nameof(loss));
        var inputs = parameters.ToList();
        // TorchSharp's retain_graph defaults to false even with create_graph (PyTorch's defaults to create_graph): without
        // it this first pass frees the saved tensors the second pass needs, and libtorch aborts the process.
        var g = autograd.grad([l], inputs, retain_graph: true, create_graph: true, allow_unused: true);
        // g · v, a scalar that still depends on θ through g's graph. A parameter the loss does not use has no gradient
        // (∂L/∂θᵢ ≡ 0, so its row and column of H are zero) and drops out.
        var terms = g.Zip(v, (gi, vi) => gi is null || gi.IsInvalid ? null : (gi * vi).sum()).OfType<Tensor>().ToList();
        if (terms.Count == 0) return parameters.Select(p => zeros_like(p).MoveToOuterDisposeScope()).ToArray();
        var hv = autograd.grad([terms.Aggregate((a, b) => a + b)], inputs, retain_graph: false, allow_unused: true);
        return hv.Select((h, i) => (h is null || h.IsInvalid ? zeros_like(parameters[i]) : h.detach()).MoveToOuterDisposeScope()).ToArray();
    }
}
