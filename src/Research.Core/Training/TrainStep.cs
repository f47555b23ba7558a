using Research.Abstractions;
using Research.Core.Models;
using Research.Core.Optim;
using Research.Core.Precision;
using Research.Core.Tasks;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Training;

/// <summary>What one optimizer step did.</summary>
/// <param name="Applied">False when the loss scaler skipped the step (inf/NaN gradient in fp16).</param>
/// <param name="Loss">The window's loss Σᵢℓᵢ/N plus the loss terms and penalties.</param>
/// <param name="GradNorm">‖g‖₂ of the unscaled fp32 gradient before clipping.</param>
/// <param name="Items">N: target items in the window (ignored labels excluded), memory items included (appended ones and
/// those of separate replay batches).</param>
public sealed record StepOutcome(bool Applied, double Loss, double GradNorm, double LearningRate, long Items, double LossScale);

/// <summary>The gradient became inf/NaN without a loss scaler to absorb it: the run diverged.</summary>
public sealed class NonFiniteGradientException(string message) : Exception(message);

/// <summary>An update left a parameter inf/NaN (a finite gradient times a huge learning rate, or fp32 weights beyond the
/// range of a half-precision model): the run diverged, whatever the loss scaler would make of the steps after.</summary>
public sealed class NonFiniteParametersException(string message) : Exception(message);

/// <summary>
/// One optimizer step over one accumulation window of micro-batches, top to bottom:
/// for each micro-batch: forward → the task's loss Σᵢℓᵢ and the loss terms' sums, each divided by the number of target
/// items in the WHOLE window → (× loss scale) → backward → accumulate into the fp32 master gradient; then unscale →
/// penalties (once per window, fp32, not divided by the item count) → gradient hooks on the task-loss gradient → the
/// total gradient → non-finite check → clip by global norm → optimizer update at η·f(t) → the parameters' non-finite
/// check → step observers → zero gradients. All temporaries die in one dispose scope, so native memory stays flat.
/// </summary>
/// <remarks>
/// <para>Why the window's item count: the gradient of the full batch is ∇(Σᵢℓᵢ/N). Dividing each micro-batch's mean loss
/// by k instead weights items of small micro-batches more, and is wrong whenever micro-batches hold different numbers of
/// target items (padding, ignored labels, the short last window of an epoch) (Hugging Face Transformers, PR #34191, 2024).
/// The loss terms are normalised the same way, so a window of k micro-batches equals one batch of the same items.</para>
/// <para>Memory items (<see cref="MixedWindow.Memory"/>, weight w): appended ones are counted in N and their losses weighted,
/// L = (Σ_{cur} ℓᵢ + w·Σ_{mem} ℓⱼ)/N (w = 1 computes the plain Σᵢℓᵢ/N, 2.x's replay bit for bit); a separate replay batch
/// has a forward pass of its own and its own count over the window, L = Σ_{cur} ℓᵢ/N_cur + w·Σ_{mem} ℓⱼ/N_mem, its loss
/// terms divided by N_mem, so both modes keep "a window of k micro-batches equals one batch of the same items". The replay
/// loss is part of the task loss (and of the task gradient a hook or observer reads); the memory's extra tensors reach the
/// loss terms (<see cref="LossTermContext.Memory"/>), never the model.</para>
/// <para>Two gradients only when needed: with a gradient hook or a step observer the task-loss gradient stays in the
/// optimizer's gradient buffer and the loss terms' and penalties' gradients go to a second flat buffer
/// (<c>autograd.grad</c>, which leaves the parameters' gradients alone); they are added after the hooks. Without either,
/// everything backpropagates into one buffer and the step is the plain one (AdamW's fused update included), so a method
/// that only adds a penalty leaves the update bitwise equal to plain fine-tuning at zero penalty.</para>
/// </remarks>
public sealed class TrainStep(
    nn.Module<Tensor, Tensor> model,
    Optimizer optimizer,
    PrecisionPolicy precision,
    MethodSet methods,
    double clipNorm,
    int taskIndex = 0,
    OutputTask? task = null,
    long stepOffset = 0,
    Func<string, Generator>? random = null,
    ShadowModel? shadow = null,
    AddedParameterSet? added = null)
{
    readonly OutputTask _task = task ?? new ClassificationTask();
    readonly Func<string, Generator> _random = random ?? (name => Seeds.Generator(0, name));
    Tensor? _penaltyGrad;

    /// <param name="measureNorm">Compute ‖g‖ for logging even when neither clipping nor loss scaling needs it
    /// (one pass over the gradient). Unmeasured, the reported norm is NaN and divergence shows in the loss.</param>
    public StepOutcome Run(IReadOnlyList<Batch> window, double learningRate, bool measureNorm = true) =>
        Run(new MixedWindow(window), learningRate, measureNorm);

    /// <summary>One step over a window with the memory items a data role mixed in (<see cref="MethodSet.WithMemory"/>).</summary>
    public StepOutcome Run(MixedWindow mixed, double learningRate, bool measureNorm = true)
    {
        using var scope = NewDisposeScope();
        optimizer.Buffer.CheckViews();
        var window = mixed.Batches;
        var memory = mixed.Memory;
        // The run's step: updates applied before this optimizer was made (a study that resets it per task) plus its own.
        long t = stepOffset + optimizer.StepCount;
        long items = window.Sum(_task.Items);
        // N_mem: the counted memory items of the window's separate replay batches (0 without any).
        long replayItems = memory?.Parts.Sum(p => p?.Replay is { } r ? _task.Items(r) : 0) ?? 0;
        double scale = precision.LossScale;
        double loss = 0;
        bool split = methods.SplitsGradient;
        var other = split ? OtherGradient() : null;
        var slotParameters = split ? optimizer.Buffer.Slots.Select(s => s.Parameter).ToArray() : [];
        var calls = methods.Callbacks;
        // Parameters methods added (contract 3.0): null when there are none, so a run without them takes the paths it took.
        var extra = added is { Any: true } ? added : null;
        if (split && extra is not null) slotParameters = [.. slotParameters, .. extra.All.Select(p => p.Value)];

        for (int i = 0; i < window.Count; i++)
        {
            using var microScope = NewDisposeScope();
            var b = window[i];
            double before = loss;
            var part = memory?.Parts[i];
            calls.BeforeForward(t, taskIndex, i, b);
            var logits = ModelInput.Logits(model, b, precision);
            calls.AfterForward(t, taskIndex, i, b, logits);
            var normalised = TaskLossSum(logits, b, part, memory?.Weight ?? 1).div(Math.Max(items, 1));
            var appended = part is { Replay: null } ? part : null;
            var terms = LossTerms(t, b, logits, appended)?.div(Math.Max(items, 1));
            if (part?.Replay is { } replay)
            {
                var replayLogits = ModelInput.Logits(model, replay, precision);
                normalised = normalised + _task.LossSum(replayLogits, replay).mul(memory!.Weight).div(Math.Max(replayItems, 1));
                if (LossTerms(t, replay, replayLogits, part)?.div(Math.Max(replayItems, 1)) is { } replayTerms)
                    terms = terms is null ? replayTerms : terms + replayTerms;
            }
            loss += normalised.item<float>();
            if (terms is not null)
            {
                loss += terms.item<float>();
                if (!split) normalised = normalised + terms;
            }
            var scaled = scale != 1 ? normalised.mul(scale) : normalised;
            calls.BeforeBackward(t, taskIndex, i, loss - before);
            scaled.backward(retain_graph: split && terms is not null);
            optimizer.AccumulateMicroBatch();
            if (split && terms is not null) AddTo(other!, autograd.grad([scale != 1 ? terms.mul(scale) : terms], slotParameters, allow_unused: true), extra);
            calls.AfterBackward(t, taskIndex, i, loss - before);
            FaultInjection.AfterMicroBatch();
        }
        if (scale != 1)
        {
            optimizer.MasterGrad.div_(scale);
            other?.div_(scale);
            extra?.Unscale(scale);
        }

        IReadOnlyList<NamedParameter>? named = null;
        if (methods.Penalties.Count > 0 || split)
        {
            named = optimizer.PenaltyParameters();
            Tensor? penalty = null;
            var parts = new List<(GuardedMethod Method, Tensor Value)>();
            foreach (var m in methods.Penalties)
                if (m.PenaltyOf(new PenaltyContext(t, taskIndex, named) { AddedParameters = Added }) is { } p)
                {
                    parts.Add((m, p));
                    penalty = penalty is null ? p.to(ScalarType.Float32) : penalty + p.to(ScalarType.Float32);
                }
            if (penalty is not null)
            {
                var value = penalty.item<float>();
                // A non-finite penalty is the plugin's fault, not the run's divergence (and under fp16 the loss scaler would
                // silently skip every step): name the plugin that returned it.
                if (!float.IsFinite(value)) throw NonFinitePenalty(parts, t);
                loss += value;
                if (split) AddTo(other!, autograd.grad([penalty], [.. named.Select(n => n.Value), .. extra?.All.Select(p => p.Value) ?? []], allow_unused: true), extra);
                else penalty.backward();
            }
        }

        Tensor? taskGradient = null;
        if (split)
        {
            if (methods.Observers.Count > 0) taskGradient = optimizer.MasterGrad.clone();
            if (methods.Hooks.Count > 0)
            {
                using var generator = _random($"step-{t}/gradient-hooks");
                var hookMemory = methods.Mixer?.AsMemory(t, like: window[0], methods.TargetIds);
                var context = new GradientContext(t, taskIndex, named!, optimizer.Views(optimizer.MasterGrad), optimizer.Views(other!),
                    GradientOf, hookMemory, generator)
                {
                    AddedParameters = Added, AddedGradients = extra?.Gradients() ?? Structure.NoParameters, OptimizerState = StateOf,
                };
                foreach (var m in methods.Hooks) m.BeforeUpdate(context);
            }
            optimizer.MasterGrad.add_(other!);
        }

        bool needNorm = measureNorm || clipNorm > 0 || precision.Scaler is not null;
        double norm = needNorm ? optimizer.MasterGrad.norm().item<float>() : double.NaN;
        // One global norm over the model's and the added parameters' gradients: √(‖g‖² + Σ‖g_block‖²).
        if (needNorm && extra is not null) norm = Math.Sqrt(norm * norm + extra.SquaredNorm());
        if (needNorm ? !double.IsFinite(norm) : !double.IsFinite(loss))
        {
            if (precision.Scaler is null)
                throw new NonFiniteGradientException($"the loss or gradient is not finite at step {t} (loss {loss}, ‖g‖ {norm}): the run diverged; lower the learning rate or set [optimizer] clip_norm");
            precision.Scaler.Update(gradientsFinite: false);
            optimizer.ZeroGrad();
            extra?.ZeroGrad();
            return new StepOutcome(false, loss, norm, learningRate, items + replayItems, scale);
        }
        precision.Scaler?.Update(gradientsFinite: true);
        if (clipNorm > 0 && norm > clipNorm)
        {
            optimizer.MasterGrad.mul_(clipNorm / (norm + 1e-6));
            extra?.Scale(clipNorm / (norm + 1e-6));
        }

        bool observed = methods.Observers.Count > 0;
        var delta = optimizer.Step(learningRate, returnDelta: observed);
        CheckParameters(t, learningRate);
        if (extra is not null)
        {
            extra.Step(learningRate, unfused: observed);
            if (extra.NonFinite() is { } bad)
                throw new NonFiniteParametersException($"the parameters are not finite after the update at step {t}: added parameter '{bad.Name}' has {bad.Bad} of {bad.Count} values inf or NaN (learning rate {learningRate}): the run diverged; lower the learning rate or set [optimizer] clip_norm");
        }
        if (observed)
        {
            var context = new StepContext(t, taskIndex, named!, optimizer.Views(taskGradient!), optimizer.Views(optimizer.MasterGrad),
                optimizer.Views(delta!), learningRate, loss) { AddedParameters = Added, OptimizerState = StateOf };
            foreach (var m in methods.Observers) m.AfterStep(context);
        }
        optimizer.ZeroGrad();
        extra?.ZeroGrad();
        return new StepOutcome(true, loss, norm, learningRate, items + replayItems, scale);
    }

    /// <summary>Σ of the task's per-item losses over a micro-batch, its appended memory rows weighted by w (the plain sum
    /// when there are none or w = 1, so 2.x's replay is computed exactly as before).</summary>
    Tensor TaskLossSum(Tensor logits, Batch b, MemoryPart? part, double weight)
    {
        if (part is not { Replay: null } || weight == 1) return _task.LossSum(logits, b);
        var current = _task.LossSum(logits.narrow(0, 0, part.Offset), b.Narrow(0, part.Offset));
        var remembered = _task.LossSum(logits.narrow(0, part.Offset, part.Items), b.Narrow(part.Offset, part.Items));
        return current + remembered.mul(weight);
    }

    /// <summary>Σ of the loss terms' sums on a batch the model read (fp32), or null when every term is zero; the memory
    /// items among its rows (appended, or the whole replay batch) are handed in with their extra tensors.</summary>
    Tensor? LossTerms(long t, Batch b, Tensor logits, MemoryPart? part)
    {
        if (methods.LossTerms.Count == 0) return null;
        var context = new LossTermContext(t, taskIndex, b, logits, LogitsWith) { Memory = part is null ? null : MemoryOf(b, logits, part), AddedParameters = Added };
        Tensor? terms = null;
        foreach (var m in methods.LossTerms)
            if (m.LossOf(context) is { } term)
                terms = terms is null ? term.to(ScalarType.Float32) : terms + term.to(ScalarType.Float32);
        return terms;
    }

    static MemoryItems MemoryOf(Batch b, Tensor logits, MemoryPart part) => part.Replay is null
        ? new MemoryItems(ReplayMode.Append, part.Offset, b.Narrow(part.Offset, part.Items), logits.narrow(0, part.Offset, part.Items), part.Extras)
        : new MemoryItems(ReplayMode.Separate, 0, b, logits, part.Extras);

    /// <summary>
    /// A finite gradient does not make a finite update: η·g can overflow, and fp32 master weights past 65504 become ±∞ in an
    /// fp16 model, after which the loss scaler skips every step and the run would end "finished" on NaN weights. So the
    /// model's own weights (the flat buffer every trainable parameter views, in the model's dtype) are checked after each
    /// update; frozen parameters cannot change.
    /// </summary>
    /// <remarks>Σθ is finite only when every θ is (NaN and ±∞ propagate through a sum): one reduction over the buffer and no
    /// temporary the size of the model, where <c>isfinite().all()</c> builds several (measured: several times the cost of
    /// the sum). The sum is taken in fp32, which a half-precision buffer cannot overflow; an fp32 buffer can (weights near
    /// 10³⁴ and beyond), and then the scan by parameter finds every value finite and the step goes on.</remarks>
    void CheckParameters(long step, double learningRate)
    {
        var values = optimizer.Buffer.Values;
        if (float.IsFinite(values.sum(ScalarType.Float32).item<float>())) return;
        foreach (var slot in optimizer.Buffer.Slots)
        {
            var view = FlatBuffer.ViewOf(values, slot);
            long bad = view.numel() - view.isfinite().sum().item<long>();
            if (bad > 0)
                throw new NonFiniteParametersException(
                    $"the parameters are not finite after the update at step {step}: '{slot.Name}' has {bad} of {view.numel()} values inf or NaN " +
                    $"(learning rate {learningRate}): the run diverged; lower the learning rate or set [optimizer] clip_norm");
        }
    }

    static PluginFailureException NonFinitePenalty(List<(GuardedMethod Method, Tensor Value)> parts, long step)
    {
        var (m, v) = parts.FirstOrDefault(x => !float.IsFinite(x.Value.to(ScalarType.Float32).item<float>()));
        m ??= parts[0].Method;
        return new PluginFailureException(
            $"method '{m.Name}' ({m.Descriptor.AssemblyPath}) returned a non-finite penalty ({v?.to(ScalarType.Float32).item<float>()}) at step {step}",
            new ArithmeticException("non-finite penalty"));
    }

    /// <summary>The second flat fp32 buffer (loss terms' and penalties' gradients), zeroed; kept across steps.</summary>
    Tensor OtherGradient()
    {
        _penaltyGrad ??= zeros(optimizer.Buffer.Count, dtype: ScalarType.Float32).DetachFromDisposeScope();
        return _penaltyGrad.zero_();
    }

    /// <summary>Adds per-slot gradients (as autograd.grad returns them, in slot order; undefined for unused) into a flat buffer,
    /// and those after the slots into the added parameters' own gradients.</summary>
    void AddTo(Tensor flat, IList<Tensor> grads, AddedParameterSet? extra)
    {
        var views = optimizer.Views(flat);
        for (int i = 0; i < views.Count; i++)
            if (grads[i] is { IsInvalid: false } g) views[i].add_(g.to(ScalarType.Float32));
        extra?.Accumulate(grads, views.Count);
    }

    /// <summary>The added parameters a context hands a plugin (none outside a run's set).</summary>
    IReadOnlyDictionary<string, Tensor> Added => added?.Parameters ?? Structure.NoParameters;

    /// <summary>A context's <c>OptimizerState</c>: a copy of a model or added parameter's state in a slot.</summary>
    Tensor? StateOf(string parameter, string slot) => OptimizerStates.Read(optimizer, added, parameter, slot);

    /// <summary>The task-loss gradient Σᵢℓᵢ/N over all the items of <paramref name="batches"/>, per slot, without touching
    /// the parameters' gradients (A-GEM's reference gradient).</summary>
    IReadOnlyList<Tensor> GradientOf(IEnumerable<Batch> batches)
    {
        var list = batches.ToList();
        long n = Math.Max(list.Sum(_task.Items), 1);
        var parameters = optimizer.Buffer.Slots.Select(s => s.Parameter).ToArray();
        var sums = optimizer.Buffer.Slots.Select(s => zeros(s.Shape, dtype: ScalarType.Float32)).ToList();
        foreach (var b in list)
        {
            using var inner = NewDisposeScope();
            var l = _task.LossSum(ModelInput.Logits(model, b, precision), b).div(n);
            var g = autograd.grad([l], parameters, allow_unused: true);
            for (int i = 0; i < sums.Count; i++)
                if (g[i] is { IsInvalid: false } gi) sums[i].add_(gi.to(ScalarType.Float32));
        }
        return sums;
    }

    Tensor LogitsWith(IReadOnlyDictionary<string, Tensor> weights, Batch batch) =>
        (shadow ?? throw new InvalidOperationException("this step was built without a model factory, so LogitsWith is unavailable"))
        .Logits(model, weights, batch);

    /// <summary>Frees the second gradient buffer.</summary>
    public void Release() { _penaltyGrad?.Dispose(); _penaltyGrad = null; }
}

/// <summary>
/// A second instance of the run's model in fp32, in eval mode, that computes logits with weights a method keeps (LwF's
/// teacher) without touching the trained model: each call copies the given weights (and the live model's values for the
/// names not given, buffers included) into it. Copying costs one pass over the parameters per call, small against a
/// forward pass, and needs no cache that in-place changes to the weights could make stale.
/// </summary>
public sealed class ShadowModel(Func<nn.Module<Tensor, Tensor>> factory) : IDisposable
{
    nn.Module<Tensor, Tensor>? _model;

    public Tensor Logits(nn.Module<Tensor, Tensor> live, IReadOnlyDictionary<string, Tensor> weights, Batch batch)
    {
        _model ??= factory();
        using (no_grad())
        {
            var liveTensors = live.named_parameters().Select(p => (p.name, (Tensor)p.parameter)).Concat(live.named_buffers()).ToDictionary(x => x.Item1, x => x.Item2);
            foreach (var (name, target) in _model.named_parameters().Select(p => (p.name, (Tensor)p.parameter)).Concat(_model.named_buffers()))
                target.copy_(weights.TryGetValue(name, out var w) ? w : liveTensors[name]);
            _model.eval();
            return ModelInput.Logits(_model, batch);
        }
    }

    public void Dispose() => _model?.Dispose();
}
