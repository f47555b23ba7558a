using Research.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Optim;

/// <summary>
/// An optimizer is a chain of gradient transforms applied to the flat fp32 gradient, then added to the flat
/// fp32 parameters: θ ← θ + T_k(…T_1(g)). The model's parameters are views into one flat buffer
/// (<see cref="FlatBuffer"/>). With a master copy (mixed precision) the model's buffer is bf16/fp16,
/// micro-batch gradients accumulate into an fp32 master gradient, the update is applied to the fp32 master
/// weights, and the model's buffer is refreshed from them.
/// </summary>
public sealed class Optimizer : IDisposable
{
    readonly IReadOnlyList<IGradientTransform> _chain;

    public string Name { get; }
    /// <summary>The parameters in the order given (the buffer orders them by group).</summary>
    public IReadOnlyList<OptimParameter> Parameters { get; }
    public FlatBuffer Buffer { get; }
    /// <summary>θ in fp32, laid out like <see cref="Buffer"/>: the buffer itself in fp32, else a master copy.</summary>
    public Tensor Master { get; }
    /// <summary>The fp32 gradient the step uses: the buffer's gradient in fp32, else the master gradient.</summary>
    public Tensor MasterGrad { get; }
    public bool HasMasterCopy { get; }
    /// <summary>Updates taken so far (t after the last update); a skipped step does not count.</summary>
    public long StepCount { get; private set; }

    public Optimizer(string name, IReadOnlyList<OptimParameter> parameters, params IGradientTransform[] chain)
    {
        Name = name;
        Parameters = parameters;
        _chain = chain;
        Buffer = FlatBuffer.Adopt(parameters);
        HasMasterCopy = Buffer.DType != ScalarType.Float32;
        if (HasMasterCopy)
        {
            using (var values = Buffer.Values.detach())
                Master = values.to(ScalarType.Float32).requires_grad_(true).DetachFromDisposeScope();
            MasterGrad = zeros(Buffer.Count, dtype: ScalarType.Float32).DetachFromDisposeScope();
            Master.grad = MasterGrad;
        }
        else
        {
            Master = Buffer.Values;
            MasterGrad = Buffer.Grads;
        }
        foreach (var t in _chain) t.Init(Buffer);
    }

    /// <summary>
    /// AdamW (Loshchilov &amp; Hutter 2019): θ ← θ − η(m̂/(√v̂+ε) + λθ) = (1−ηλ)θ − η·m̂/(√v̂+ε), with the schedule's
    /// multiplier folded into η. optax: <c>chain(scale_by_adam, add_decayed_weights, scale_by_learning_rate)</c>.
    /// </summary>
    public static Optimizer AdamW(IReadOnlyList<OptimParameter> ps, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8) =>
        new("adamw", ps, new ScaleByAdam(beta1, beta2, eps), new AddDecayedWeights(), new ScaleByLearningRate());

    /// <summary>
    /// Adam with coupled L2: g ← g + λθ before the moments, so the decay is rescaled by 1/(√v̂+ε) — weights with
    /// large gradients decay less (the reason AdamW exists). PyTorch: <c>Adam(weight_decay=λ)</c>.
    /// </summary>
    public static Optimizer AdamL2(IReadOnlyList<OptimParameter> ps, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8) =>
        new("adam", ps, new AddDecayedWeights(), new ScaleByAdam(beta1, beta2, eps), new ScaleByLearningRate());

    /// <summary>SGD with coupled L2 and (Nesterov) momentum, as PyTorch's <c>SGD(momentum=μ, nesterov, weight_decay=λ)</c>
    /// with dampening 0: g ← g + λθ; b ← μb + g; θ ← θ − η·(nesterov ? g + μb : b).</summary>
    public static Optimizer Sgd(IReadOnlyList<OptimParameter> ps, double momentum = 0.0, bool nesterov = false) =>
        momentum == 0
            ? new("sgd", ps, new AddDecayedWeights(), new ScaleByLearningRate())
            : new("sgd", ps, new AddDecayedWeights(), new TraceMomentum(momentum, nesterov), new ScaleByLearningRate());

    /// <summary>
    /// After each micro-batch's backward with a master copy: the fp32 master gradient accumulates the
    /// half-precision gradient, which is zeroed (so it never sums many micro-batches in 8 bits of mantissa).
    /// Without a master copy the buffer's gradient already is the accumulator.
    /// </summary>
    public void AccumulateMicroBatch()
    {
        if (!HasMasterCopy) return;
        MasterGrad.add_(Buffer.Grads);
        Buffer.ZeroGrad();
    }

    /// <summary>
    /// One update with learning rate η·f(t) from <see cref="MasterGrad"/>. Returns Δθ, the flat update the step
    /// added (owned by the caller's dispose scope). With a master copy the model's buffer is refreshed.
    /// </summary>
    public Tensor Step(double learningRate) => Step(learningRate, returnDelta: true)!;

    /// <summary>
    /// As <see cref="Step(double)"/>; when <paramref name="returnDelta"/> is false nobody needs Δθ nor the gradient
    /// afterwards (the gradient buffer is left undefined until zeroed), so AdamW takes its fused in-place path.
    /// </summary>
    public Tensor? Step(double learningRate, bool returnDelta)
    {
        StepCount++;
        var info = new StepInfo(StepCount, learningRate);
        using (no_grad())
        {
            Tensor? u = null;
            if (!returnDelta && _chain is [ScaleByAdam adam, AddDecayedWeights, ScaleByLearningRate])
                adam.FusedAdamW(MasterGrad, Master, Buffer.Groups, info);
            else
            {
                // Without a caller for Δθ the gradient buffer itself becomes the update: no copy.
                u = returnDelta ? MasterGrad.clone() : MasterGrad;
                foreach (var t in _chain) t.Update(u, Master, Buffer.Groups, info);
                Master.add_(u);
            }
            if (HasMasterCopy) Buffer.Values.copy_(Master);
            return returnDelta ? u : null;
        }
    }

    /// <summary>Zeroes the gradients in place (the views stay; never set them to none).</summary>
    public void ZeroGrad()
    {
        Buffer.ZeroGrad();
        if (HasMasterCopy) MasterGrad.zero_();
    }

    /// <summary>The parameters a regularizer's penalty is built from: fp32, receiving gradients into
    /// <see cref="MasterGrad"/>. Views, owned by the caller's dispose scope.</summary>
    public IReadOnlyList<NamedParameter> PenaltyParameters() =>
        HasMasterCopy
            ? Buffer.Slots.Select(s => new NamedParameter(s.Name, FlatBuffer.ViewOf(Master, s))).ToList()
            : Buffer.Slots.Select(s => new NamedParameter(s.Name, s.Parameter)).ToList();

    /// <summary>Per-parameter views of a flat tensor laid out like the buffer (gradients, updates), in slot order.</summary>
    public IReadOnlyList<Tensor> Views(Tensor flat) => Buffer.Slots.Select(s => FlatBuffer.ViewOf(flat, s)).ToList();

    /// <summary>Optimizer state of one parameter by name and slot (<c>exp_avg</c>, <c>exp_avg_sq</c>, <c>momentum</c>), as a view.</summary>
    public Tensor StateOf(string parameter, string slot)
    {
        var s = Buffer.Slots.FirstOrDefault(x => x.Name == parameter) ?? throw new KeyNotFoundException($"no parameter '{parameter}'");
        var flat = _chain.SelectMany(t => t.State()).FirstOrDefault(x => x.Slot == slot).Flat
                   ?? throw new KeyNotFoundException($"{Name} has no state '{slot}' (it has: {string.Join(", ", _chain.SelectMany(t => t.State()).Select(x => x.Slot))})");
        return FlatBuffer.ViewOf(flat, s);
    }

    /// <summary>State of every parameter as <c>slot/parameter</c> views, for checkpoints.</summary>
    public IEnumerable<(string Name, Tensor Value)> NamedState() =>
        State().SelectMany(st => Buffer.Slots.Select(s => ($"{st.Slot}/{s.Name}", FlatBuffer.ViewOf(st.Flat, s))));

    /// <summary>θ − θ_then over the trainable parameters, flat in the master's layout, θ_then read from a weights file
    /// (a task-end snapshot, so a resumed run has it too). In the caller's dispose scope.</summary>
    public Tensor DeltaSince(string weightsFile)
    {
        var before = Research.Core.Checkpoints.Checkpoint.Load(Path.GetDirectoryName(weightsFile)!, Path.GetFileName(weightsFile));
        Research.Core.Checkpoints.WeightFile.CheckDTypes(weightsFile, before, NamedMaster());
        return Master.detach().sub(cat(Buffer.Slots.Select(s => before[s.Name].reshape(-1)).ToList()));
    }

    /// <summary>The fp32 weights of record by name: the master copy's views, or the parameters themselves in fp32.</summary>
    public IEnumerable<(string Name, Tensor Value)> NamedMaster() =>
        Buffer.Slots.Select(s => (s.Name, HasMasterCopy ? FlatBuffer.ViewOf(Master, s) : s.Parameter));

    /// <summary>
    /// Restores a checkpoint: fp32 weights (and the module's copy), moments by <c>slot/parameter</c>, and the step
    /// count. Every expected tensor must be present with its shape; the error names the first that is not.
    /// </summary>
    public void Restore(IReadOnlyDictionary<string, Tensor> weights, IReadOnlyDictionary<string, Tensor> state, long stepCount)
    {
        using var _ = NewDisposeScope();
        using var __ = no_grad();
        foreach (var (name, target) in NamedMaster().Concat(NamedState()))
        {
            var source = (weights.TryGetValue(name, out var w) ? w : state.TryGetValue(name, out var st) ? st : null)
                         ?? throw new InvalidDataException($"the checkpoint has no tensor '{name}'");
            if (!source.shape.SequenceEqual(target.shape))
                throw new InvalidDataException($"the checkpoint's '{name}' has shape [{string.Join("×", source.shape)}], the model [{string.Join("×", target.shape)}]");
            target.copy_(source);
        }
        if (HasMasterCopy) Buffer.Values.copy_(Master);
        StepCount = stepCount;
    }

    /// <summary>Zero moments and t = 0, the values kept: what a fresh optimizer over the same parameters would hold.</summary>
    public void ResetState()
    {
        foreach (var t in _chain) t.Init(Buffer);
        StepCount = 0;
    }

    /// <summary>A copy of one parameter's state in a slot (fp32, the parameter's shape, in the caller's scope), null when the
    /// chain keeps no such slot; <paramref name="found"/> says whether the parameter is this optimizer's.</summary>
    public Tensor? StateCopy(string parameter, string slot, out bool found)
    {
        var s = Buffer.Slots.FirstOrDefault(x => x.Name == parameter);
        found = s is not null;
        if (s is null) return null;
        foreach (var (name, flat) in State())
            if (name == slot)
            {
                using var view = FlatBuffer.ViewOf(flat, s);
                return view.clone();
            }
        return null;
    }

    /// <summary>All flat state tensors by slot name.</summary>
    public IEnumerable<(string Slot, Tensor Flat)> State() => _chain.SelectMany(t => t.State());

    public void Dispose()
    {
        foreach (var t in _chain.OfType<IDisposable>()) t.Dispose();
        if (HasMasterCopy) { Master.Dispose(); MasterGrad.Dispose(); }
        Buffer.Dispose();
    }
}
