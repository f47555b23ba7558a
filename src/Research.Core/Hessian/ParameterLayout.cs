using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Hessian;

/// <summary>
/// The trainable parameters of a model laid end to end: a direction in parameter space (a Lanczos vector, a Hessian-vector
/// product, the change Δθ = θ_i − θ_j between two task ends) is one flat 1-D tensor whose entries follow
/// <c>named_parameters()</c> order, each parameter flattened row-major, frozen parameters (<c>requires_grad</c> false)
/// left out. The layout is keyed by name, so it applies to any model with the same trainable names and shapes — the
/// float64 replica of <see cref="CurvatureOperator"/>, the model of another task end.
/// </summary>
/// <remarks>
/// Why flat: Lanczos and Hutchinson are written for a symmetric operator on ℝⁿ and need only dot products, norms and
/// axpys, which are single kernels on one tensor rather than loops over parameter tensors. A per-group split of a
/// quadratic form (Δθ_gᵀ H Δθ_g for the layers of group g) multiplies by <see cref="Mask"/>.
/// </remarks>
public sealed class ParameterLayout
{
    readonly Dictionary<string, int> _index;
    readonly long[] _offsets;

    ParameterLayout(IReadOnlyList<string> names, IReadOnlyList<long[]> shapes)
    {
        Names = names;
        Shapes = shapes;
        _index = names.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => p.i, StringComparer.Ordinal);
        _offsets = new long[names.Count + 1];
        for (var i = 0; i < names.Count; i++) _offsets[i + 1] = _offsets[i] + shapes[i].Aggregate(1L, (a, b) => a * b);
    }

    /// <summary>The layout of <paramref name="model"/>'s trainable parameters, in <c>named_parameters()</c> order.</summary>
    public static ParameterLayout Of(nn.Module model)
    {
        var trainable = model.named_parameters().Where(p => p.parameter.requires_grad).ToList();
        if (trainable.Count == 0) throw new ArgumentException("the model has no trainable parameter (every requires_grad is false)", nameof(model));
        return new ParameterLayout(trainable.Select(p => p.name).ToList(), trainable.Select(p => p.parameter.shape).ToList());
    }

    /// <summary>The trainable parameters' names, in layout order.</summary>
    public IReadOnlyList<string> Names { get; }

    /// <summary>Each parameter's shape, in layout order.</summary>
    public IReadOnlyList<long[]> Shapes { get; }

    /// <summary>n, the length of a flat vector: the number of trainable numbers.</summary>
    public long Size => _offsets[^1];

    /// <summary>Where parameter <paramref name="name"/> sits in a flat vector.</summary>
    public (long Offset, long Length) RangeOf(string name) =>
        _index.TryGetValue(name, out var i) ? (_offsets[i], _offsets[i + 1] - _offsets[i])
            : throw new KeyNotFoundException($"'{name}' is not a trainable parameter of this layout (it has: {string.Join(", ", Names)})");

    /// <summary>The parts (one per parameter, in layout order, shaped as the parameters) as one flat tensor of
    /// <paramref name="dtype"/> (the first part's when null).</summary>
    public Tensor Flatten(IReadOnlyList<Tensor> parts, ScalarType? dtype = null)
    {
        if (parts.Count != Names.Count) throw new ArgumentException($"{parts.Count} parts for {Names.Count} parameters", nameof(parts));
        var type = dtype ?? parts[0].dtype;
        using var scope = NewDisposeScope();
        for (var i = 0; i < parts.Count; i++)
            if (!parts[i].shape.SequenceEqual(Shapes[i]))
                throw new ArgumentException($"part {i} has shape [{string.Join(", ", parts[i].shape)}], parameter '{Names[i]}' [{string.Join(", ", Shapes[i])}]", nameof(parts));
        return cat(parts.Select(p => p.detach().reshape(-1).to(type)).ToList(), 0).MoveToOuterDisposeScope();
    }

    /// <summary>The tensors named as the trainable parameters (extra names are ignored, a missing one is an error) as
    /// one flat tensor.</summary>
    public Tensor Flatten(IReadOnlyDictionary<string, Tensor> byName, ScalarType? dtype = null) =>
        Flatten(Names.Select(n => byName.TryGetValue(n, out var t) ? t
            : throw new KeyNotFoundException($"no tensor for parameter '{n}'")).ToList(), dtype);

    /// <summary>θ of <paramref name="model"/> read by name (a copy, detached): the point, or with another model's θ the
    /// difference Δθ = θ_i − θ_j of a forgetting decomposition.</summary>
    public Tensor Parameters(nn.Module model, ScalarType? dtype = null)
    {
        var byName = model.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter, StringComparer.Ordinal);
        return Flatten(byName, dtype);
    }

    /// <summary>Views of <paramref name="flat"/>, one per parameter in layout order, shaped as the parameters.</summary>
    public Tensor[] Split(Tensor flat)
    {
        CheckFlat(flat);
        return Names.Select((_, i) => flat.narrow(0, _offsets[i], _offsets[i + 1] - _offsets[i]).view(Shapes[i])).ToArray();
    }

    /// <summary><see cref="Split"/> keyed by parameter name.</summary>
    public IReadOnlyDictionary<string, Tensor> ToDictionary(Tensor flat)
    {
        var parts = Split(flat);
        return Names.Select((n, i) => (n, parts[i])).ToDictionary(p => p.n, p => p.Item2, StringComparer.Ordinal);
    }

    /// <summary>A flat 0/1 vector that is 1 on the parameters <paramref name="selects"/> names: v ⊙ mask is v restricted to
    /// that group, so (Δθ ⊙ m)ᵀ H (Δθ ⊙ m) is the group's own quadratic term.</summary>
    public Tensor Mask(Func<string, bool> selects, ScalarType dtype = ScalarType.Float64)
    {
        var mask = zeros(Size, dtype: dtype);
        for (var i = 0; i < Names.Count; i++)
            if (selects(Names[i])) mask.narrow(0, _offsets[i], _offsets[i + 1] - _offsets[i]).fill_(1);
        return mask;
    }

    void CheckFlat(Tensor flat)
    {
        if (flat.dim() != 1 || flat.shape[0] != Size)
            throw new ArgumentException($"a flat vector of this layout has shape [{Size}], not [{string.Join(", ", flat.shape)}]", nameof(flat));
    }
}
