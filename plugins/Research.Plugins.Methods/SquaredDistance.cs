using Research.Abstractions;
using static TorchSharp.torch;

namespace Research.Plugins.Methods;

/// <summary>Σ over parameters of Σᵢ wᵢ(θᵢ − aᵢ)², the shape every quadratic penalty here shares.</summary>
static class SquaredDistance
{
    /// <param name="parameters">θ by name.</param>
    /// <param name="anchor">aᵢ by parameter name, or null for zero.</param>
    /// <param name="weights">wᵢ by parameter name (EWC's Fisher), or null for 1.</param>
    public static Tensor Sum(IReadOnlyList<NamedParameter> parameters, IReadOnlyDictionary<string, Tensor>? anchor,
        IReadOnlyDictionary<string, Tensor>? weights = null)
    {
        Tensor? total = null;
        foreach (var p in parameters)
        {
            if (anchor != null && !anchor.ContainsKey(p.Name)) continue;
            var d = anchor is null ? p.Value : p.Value - anchor[p.Name];
            var term = weights is null ? d.square().sum() : (weights[p.Name] * d.square()).sum();
            total = total is null ? term : total + term;
        }
        return total ?? zeros(1).sum();
    }

    /// <summary>Detached fp32 copies of the parameters, by name (an anchor θ*).</summary>
    public static Dictionary<string, Tensor> Snapshot(IReadOnlyList<NamedParameter> parameters)
    {
        using var _ = no_grad();
        return parameters.ToDictionary(p => p.Name, p => p.Value.detach().to(ScalarType.Float32).clone());
    }
}
