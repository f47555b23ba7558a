using Research.Abstractions;
using Research.Core.Checkpoints;
using static TorchSharp.torch;

namespace Research.Core.Optim;


/// <summary>
/// The parameters methods added at task starts (contract 3.0, <see cref="TaskStartContext.AddParameters"/>), beside the
/// model: each call's parameters are one block with a small optimizer of its own, of the run's kind (the same chain of
/// transforms, stepped with the same learning rate at every step as the model's optimizer). That gives each block the
/// update one optimizer over model and blocks would give it — moments start at zero, the groups' λ and multipliers are
/// the run's rules applied to the names — and a bias correction counted from the block's first step, as PyTorch counts
/// each parameter's own steps; the model's flat buffer and its optimizer are left as they are, so a run that adds
/// nothing is the run it was. The global gradient norm is √(‖g_model‖² + Σ‖g_block‖²), each a norm of its own buffer.
/// </summary>
public sealed class AddedParameterSet(
    Func<IReadOnlyList<OptimParameter>, Optimizer> optimizer,
    Func<string, Tensor, ParameterGroup> group,
    Func<string, bool> taken,
    Device device) : IDisposable
{
    /// <summary>Where added parameters' values and moments are kept in a checkpoint (<c>added/NAME</c> among the methods'
    /// tensors, <c>added/SLOT/NAME</c> among the optimizer's), apart from the model's weights, which stay loadable as a model.</summary>
    public const string Prefix = "added/";

    sealed record Block(string Owner, Optimizer Optimizer, IReadOnlyList<NamedParameter> Parameters);

    readonly List<Block> _blocks = [];
    Dictionary<string, Tensor> _byName = new(StringComparer.Ordinal);

    /// <summary>Whether any method added parameters (a run that adds none takes none of the paths below).</summary>
    public bool Any => _blocks.Count > 0;

    /// <summary>Every added parameter by name, in the order added: the live tensors (fp32 leaves with requires_grad).</summary>
    public IReadOnlyDictionary<string, Tensor> Parameters => _byName;

    /// <summary>The parameters in order, as the gradient hook's and autograd's lists take them.</summary>
    public IEnumerable<NamedParameter> All => _blocks.SelectMany(b => b.Parameters);

    /// <summary>
    /// Adds one block: fp32 copies of <paramref name="initial"/> on the run's device, grouped by the run's rules, with an
    /// optimizer whose moments are zero. A mistake (no parameters, a name taken, a non-floating value, a frozen component)
    /// throws <see cref="ArgumentException"/>, which the guard reports naming the plugin.
    /// </summary>
    public IReadOnlyList<NamedParameter> Add(string owner, IReadOnlyList<NamedParameter> initial)
    {
        if (initial is null || initial.Count == 0) throw new ArgumentException("AddParameters was given no parameters");
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var p in initial)
        {
            if (p is null || string.IsNullOrWhiteSpace(p.Name)) throw new ArgumentException("an added parameter needs a name");
            if (p.Value is null || p.Value.IsInvalid) throw new ArgumentException($"added parameter '{p.Name}' has no live value");
            if (!p.Value.is_floating_point()) throw new ArgumentException($"added parameter '{p.Name}' is {p.Value.dtype}; parameters are floating point (kept in fp32)");
            if (p.Value.numel() == 0) throw new ArgumentException($"added parameter '{p.Name}' has no elements");
            if (!names.Add(p.Name) || _byName.ContainsKey(p.Name) || taken(p.Name))
                throw new ArgumentException($"the name '{p.Name}' is taken (by the model, or by a parameter added before): added parameters need names of their own");
        }
        var made = new List<OptimParameter>();
        try
        {
            using (no_grad())
                foreach (var p in initial)
                {
                    var value = p.Value.detach().to(ScalarType.Float32, device).clone().DetachFromDisposeScope();
                    value.requires_grad_(true);
                    made.Add(new OptimParameter(p.Name, value, group(p.Name, value)));
                }
            var block = new Block(owner, optimizer(made), made.Select(p => new NamedParameter(p.Name, p.Value)).ToList());
            _blocks.Add(block);
            foreach (var p in block.Parameters) _byName[p.Name] = p.Value;
            return block.Parameters;
        }
        catch
        {
            foreach (var p in made) p.Value.Dispose();
            throw;
        }
    }

    /// <summary>Each added parameter's gradient (a view of its block's buffer, in the caller's scope), by name.</summary>
    public IReadOnlyDictionary<string, Tensor> Gradients() =>
        _blocks.SelectMany(b => b.Parameters.Zip(b.Optimizer.Views(b.Optimizer.MasterGrad), (p, g) => (p.Name, g)))
            .ToDictionary(x => x.Name, x => x.g, StringComparer.Ordinal);

    /// <summary>Adds per-parameter gradients (autograd's, in <see cref="All"/>'s order; undefined for unused) to the blocks'.</summary>
    public void Accumulate(IList<Tensor> grads, int from)
    {
        int i = from;
        foreach (var b in _blocks)
            foreach (var g in b.Optimizer.Views(b.Optimizer.MasterGrad))
            {
                if (grads[i] is { IsInvalid: false } gi) g.add_(gi.to(ScalarType.Float32));
                i++;
            }
    }

    /// <summary>Σ‖g_block‖² in double (each block's norm in fp32, as the model's).</summary>
    public double SquaredNorm()
    {
        double sum = 0;
        foreach (var b in _blocks)
        {
            using var n = b.Optimizer.MasterGrad.norm();
            double v = n.item<float>();
            sum += v * v;
        }
        return sum;
    }

    /// <summary>g ← g·factor in every block (the loss scale's 1/s, the clip's c/‖g‖).</summary>
    public void Scale(double factor)
    {
        foreach (var b in _blocks) b.Optimizer.MasterGrad.mul_(factor);
    }

    /// <summary>g ← g/s in every block (unscaling as the model's gradient is unscaled: a division, bit for bit the same).</summary>
    public void Unscale(double scale)
    {
        foreach (var b in _blocks) b.Optimizer.MasterGrad.div_(scale);
    }

    /// <summary>One update of every block at the step's learning rate; <paramref name="unfused"/> as the model's optimizer
    /// takes it (the fused AdamW path when nobody reads Δθ), so a block's update is computed as the model's is.</summary>
    public void Step(double learningRate, bool unfused)
    {
        foreach (var b in _blocks) b.Optimizer.Step(learningRate, unfused)?.Dispose();
    }

    public void ZeroGrad()
    {
        foreach (var b in _blocks) b.Optimizer.ZeroGrad();
    }

    /// <summary>The first added parameter whose values are not all finite after an update, with how many are not; null when all are.</summary>
    public (string Name, long Bad, long Count)? NonFinite()
    {
        foreach (var p in All)
        {
            using var scope = NewDisposeScope();
            long bad = p.Value.numel() - p.Value.detach().isfinite().sum().item<long>();
            if (bad > 0) return (p.Name, bad, p.Value.numel());
        }
        return null;
    }

    /// <summary>Moments to zero and t to 0 in every block (a study that resets its optimizer at a task's start).</summary>
    public void ResetState()
    {
        foreach (var b in _blocks) b.Optimizer.ResetState();
    }

    /// <summary>A copy of an added parameter's state in a slot (<see cref="Optimizer.StateCopy"/>).</summary>
    public Tensor? StateCopy(string parameter, string slot, out bool found)
    {
        found = false;
        foreach (var b in _blocks)
        {
            var copy = b.Optimizer.StateCopy(parameter, slot, out found);
            if (found) return copy;
        }
        return null;
    }

    /// <summary>Values for a checkpoint's methods file, <c>added/NAME</c>.</summary>
    public IEnumerable<(string Name, Tensor Value)> Values() => All.Select(p => (Prefix + p.Name, p.Value));

    /// <summary>Moments for a checkpoint's optimizer file, <c>added/SLOT/NAME</c>.</summary>
    public IEnumerable<(string Name, Tensor Value)> Moments() =>
        _blocks.SelectMany(b => b.Optimizer.NamedState()).Select(x => (Prefix + x.Name, x.Value));

    /// <summary>The blocks as a checkpoint's state records them; null when there are none (the state file is then as before).</summary>
    public List<AddedBlockState>? Describe() =>
        _blocks.Count == 0 ? null : _blocks.Select(b => new AddedBlockState(b.Owner, b.Optimizer.StepCount, b.Parameters.Select(p => p.Name).ToList())).ToList();

    /// <summary>
    /// Rebuilds the blocks a checkpoint recorded, in order, from its tensors (<see cref="Values"/>, <see cref="Moments"/>):
    /// values, moments and each block's step count, so the next update is the one the uninterrupted run took.
    /// </summary>
    public void Restore(IReadOnlyList<AddedBlockState>? blocks, IReadOnlyDictionary<string, Tensor> values, IReadOnlyDictionary<string, Tensor> moments)
    {
        if (Any) throw new InvalidOperationException("added parameters are restored into a run that has added none");
        foreach (var state in blocks ?? [])
        {
            var initial = state.Names.Select(n => new NamedParameter(n, values.TryGetValue(Prefix + n, out var v) ? v
                : throw new InvalidDataException($"the checkpoint has no tensor '{Prefix}{n}' (a parameter '{state.Owner}' added)"))).ToList();
            Add(state.Owner, initial);
            var block = _blocks[^1];
            var stripped = moments.Where(kv => kv.Key.StartsWith(Prefix, StringComparison.Ordinal)).ToDictionary(kv => kv.Key[Prefix.Length..], kv => kv.Value);
            block.Optimizer.Restore(initial.ToDictionary(p => p.Name, p => p.Value), stripped, state.StepCount);
        }
    }

    public void Dispose()
    {
        foreach (var b in _blocks)
        {
            b.Optimizer.Dispose();
            foreach (var p in b.Parameters) p.Value.Dispose();
        }
        _blocks.Clear();
        _byName = new(StringComparer.Ordinal);
    }
}

/// <summary>The optimizer state a context's <c>OptimizerState</c> reads: a model parameter's from the run's optimizer, an
/// added one's from its block.</summary>
public static class OptimizerStates
{
    /// <summary>A copy of (parameter, slot) in the caller's scope; null when the optimizer keeps no such slot; an
    /// <see cref="ArgumentException"/> for a name nothing trains (the guard reports it naming the plugin).</summary>
    public static Tensor? Read(Optimizer optimizer, AddedParameterSet? added, string parameter, string slot)
    {
        var copy = optimizer.StateCopy(parameter, slot, out var found);
        if (found) return copy;
        if (added is not null)
        {
            copy = added.StateCopy(parameter, slot, out found);
            if (found) return copy;
        }
        throw new ArgumentException($"OptimizerState: the run trains no parameter '{parameter}' (frozen parameters and buffers have no optimizer state)");
    }
}
