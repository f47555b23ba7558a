using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Optim;

/// <summary>Where one parameter lives in a flat buffer: elements [Offset, Offset + Count).</summary>
public sealed record Slot(string Name, Tensor Parameter, long[] Shape, long Offset, long Count, ParameterGroup Group);

/// <summary>A contiguous run of one group's parameters in a flat buffer.</summary>
public sealed record GroupSlice(ParameterGroup Group, long Offset, long Count);

/// <summary>
/// The parameters of one dtype as views into two flat buffers, one for values and one for gradients.
/// An optimizer step is then a handful of large operations however many tensors the model has
/// (TorchSharp has no <c>_foreach</c> kernels), and clipping is one norm. Parameters are ordered by group,
/// so each group is one contiguous slice. Autograd accumulates into an existing gradient in place, so the
/// gradient views stay views — unless something replaces them: <c>Module.zero_grad()</c> (sets gradients
/// to none), <c>.to(dtype)</c> or <c>load_state_dict</c> with new tensors. <see cref="CheckViews"/> detects it.
/// </summary>
public sealed class FlatBuffer : IDisposable
{
    public ScalarType DType { get; }
    public Tensor Values { get; }
    public Tensor Grads { get; }
    public IReadOnlyList<Slot> Slots { get; }
    public IReadOnlyList<GroupSlice> Groups { get; }
    public long Count => Values.shape[0];

    FlatBuffer(ScalarType dtype, Tensor values, Tensor grads, IReadOnlyList<Slot> slots, IReadOnlyList<GroupSlice> groups)
    {
        DType = dtype; Values = values; Grads = grads; Slots = slots; Groups = groups;
    }

    /// <summary>
    /// Moves the parameters (all of one dtype, leaves with <c>requires_grad</c>) into a new flat buffer: their
    /// values are copied, then each parameter's storage is set to its slice, and its gradient to the matching
    /// slice of a zeroed gradient buffer.
    /// </summary>
    public static FlatBuffer Adopt(IReadOnlyList<OptimParameter> parameters)
    {
        if (parameters.Count == 0) throw new ArgumentException("no parameters to adopt", nameof(parameters));
        var dtype = parameters[0].Value.dtype;
        if (parameters.FirstOrDefault(p => p.Value.dtype != dtype) is { } other)
            throw new ArgumentException($"parameter '{other.Name}' is {other.Value.dtype}, not {dtype}: one buffer per dtype");
        var ordered = parameters.Select((p, i) => (p, i)).OrderBy(x => GroupOrder(parameters, x.p.Group)).ThenBy(x => x.i).Select(x => x.p).ToList();
        long total = ordered.Sum(p => p.Value.numel());
        var values = empty(total, dtype: dtype).DetachFromDisposeScope();
        var grads = zeros(total, dtype: dtype).DetachFromDisposeScope();
        var slots = new List<Slot>();
        long offset = 0;
        using (no_grad())
        {
            foreach (var p in ordered)
            {
                using var temporaries = NewDisposeScope(); // the narrow/detach/reshape/view wrappers of this parameter
                var n = p.Value.numel();
                var shape = p.Value.shape;
                values.narrow(0, offset, n).copy_(p.Value.detach().reshape(n));
                using var view = values.narrow(0, offset, n).view(shape);
                p.Value.set_(view);
                p.Value.grad = grads.narrow(0, offset, n).view(shape);
                slots.Add(new Slot(p.Name, p.Value, shape, offset, n, p.Group));
                offset += n;
            }
        }
        var groups = slots.GroupBy(s => s.Group).Select(g => new GroupSlice(g.Key, g.First().Offset, g.Sum(s => s.Count))).ToList();
        return new FlatBuffer(dtype, values, grads, slots, groups);
    }

    static int GroupOrder(IReadOnlyList<OptimParameter> ps, ParameterGroup g)
    {
        for (int i = 0; i < ps.Count; i++) if (ReferenceEquals(ps[i].Group, g) || ps[i].Group == g) return i;
        return int.MaxValue;
    }

    /// <summary>Sets every gradient to zero in place: the views stay.</summary>
    public void ZeroGrad() => Grads.zero_();

    /// <summary>A view of <paramref name="flat"/> (a tensor laid out like this buffer) for one slot, in the parameter's shape.</summary>
    public static Tensor ViewOf(Tensor flat, Slot slot)
    {
        using var part = flat.narrow(0, slot.Offset, slot.Count);
        return part.view(slot.Shape);
    }

    /// <summary>
    /// Throws, naming the parameter, when a parameter's values or gradient no longer lie in this buffer
    /// (its storage was replaced): the optimizer would silently stop seeing its gradient.
    /// Costs two native calls per tensor.
    /// </summary>
    public void CheckViews()
    {
        long size = Values.element_size();
        IntPtr values = DataPointer(Values), grads = DataPointer(Grads);
        foreach (var s in Slots)
        {
            if (s.Parameter.IsInvalid)
                throw new InvalidOperationException($"parameter '{s.Name}' was replaced and disposed (e.g. by Module.to(dtype) or load_state_dict): it no longer lies in its flat buffer");
            if (DataPointer(s.Parameter) != values + (nint)(s.Offset * size))
                throw new InvalidOperationException($"parameter '{s.Name}' no longer lies in its flat buffer (its storage was replaced, e.g. by .to(dtype) or load_state_dict)");
            using var g = s.Parameter.grad;
            if (g is null || DataPointer(g) != grads + (nint)(s.Offset * size))
                throw new InvalidOperationException($"the gradient of '{s.Name}' no longer lies in its flat buffer (set to none by Module.zero_grad() or replaced); zero gradients through the optimizer");
        }
    }

    // TorchSharp 0.107 exposes no data pointer for every dtype (Storage<T> converts bf16/fp16);
    // the native library's accessor gives the address of the first element of any tensor.
    [System.Runtime.InteropServices.DllImport("LibTorchSharp")]
    static extern IntPtr THSTensor_data(IntPtr handle);

    internal static IntPtr DataPointer(Tensor t) => THSTensor_data(t.Handle);

    public void Dispose() { Values.Dispose(); Grads.Dispose(); }
}
