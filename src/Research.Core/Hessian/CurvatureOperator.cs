using Research.Abstractions;
using Research.Core.Models;
using Research.Core.Tasks;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Hessian;

/// <summary>
/// The curvature of a task's mean loss at the model's parameters as an operator v ↦ Mv on flat vectors
/// (<see cref="ParameterLayout"/>), M the Hessian or the generalised Gauss-Newton matrix (<see cref="CurvatureKind"/>), with
/// the loss L and gradient ∇L over the same data — everything a second-order forgetting prediction
/// L(θ + Δθ) − L(θ) ≈ ∇L·Δθ + ½ ΔθᵀMΔθ needs, without ever forming M.
/// </summary>
/// <remarks>
/// <para>
/// The loss is weighted as evaluation weights it: L(θ) = (1/N) Σ_b Σ_{i∈b} ℓᵢ(θ), the mean per-item loss over every counted
/// item of the data — rows whose target is not <see cref="Batch.IgnoreIndex"/>, for a causal LM the predicted tokens
/// (<see cref="OutputTask.Items"/>) — so Mv = (1/N) Σ_b Σ_{i∈b} ∇²ℓᵢ v. Each batch contributes its per-item sum and the
/// division by the total N comes last: a mean of batch means would weight the items of a short batch more (the
/// gradient-accumulation bug of Transformers PR #34191), and the operator would depend on how the data was cut.
/// </para>
/// <para>
/// Hessian: per batch, Hv = ∇θ(∇θS_b · v) with S_b = Σ_{i∈b} ℓᵢ, two backward passes (Pearlmutter 1994, "Fast exact
/// multiplication by the Hessian", Neural Computation 6(1)), through <see cref="HessianVector.Product"/>, which never lets a
/// double-backward graph be traversed twice. Gauss-Newton (Schraudolph 2002, "Fast curvature matrix-vector products for
/// second-order gradient descent", Neural Computation 14(7)): with z the batch's logits rows,
/// Gv = Jᵀ H_out J v. TorchSharp has no forward-mode AD, so J v comes from two reverse passes (the "double-vjp trick"):
/// with a dummy u (requires grad), w(u) = Jᵀu is built with <c>create_graph</c>; w is linear in u, so ∂(w·v)/∂u = J v.
/// The softmax cross-entropy's Hessian in the logits of a row is H_out = diag(p) − ppᵀ, p = softmax(z), applied in closed
/// form as H_out a = p ⊙ a − p (pᵀa) (rows that do not count are zeroed); a third reverse pass gives Jᵀ(H_out J v).
/// </para>
/// <para>
/// What the Hessian means at ReLU kinks. By the chain rule ∇²ℓ = Jᵀ H_out J + Σ_c (∂ℓ/∂z_c) ∇²z_c: the GGN plus the
/// residual-weighted curvature of the logits themselves. ReLU's second derivative is 0 everywhere except at 0, where it does
/// not exist (a Dirac delta in the distributional sense); for fixed data, a pre-activation is exactly 0 only on a set of
/// parameters of measure zero. Autograd differentiates ReLU's backward, grad ⊙ 1[x &gt; 0], treating the mask as a constant,
/// so the product here is the almost-everywhere Hessian: the exact Hessian of the smooth function that agrees with the
/// network inside the activation region containing θ. Its ∇²z_c holds only the smooth parts — the products of weights of
/// different layers (z is multilinear in the layers' weights within a region) and smooth activations (tanh, GELU,
/// softmax attention) — and none of the deltas at the kinks. This is the Hessian that the spectral studies of deep
/// networks compute (Sagun et al. 2017, "Empirical analysis of the Hessian of over-parametrized neural networks";
/// Ghorbani, Krishnan &amp; Xiao 2019, "An investigation into neural net optimization via Hessian eigenvalue density";
/// Papyan 2020, "Traces of class/cross-class structure pervade deep learning spectra", which splits it as H = G + residual
/// terms). Consequence for a forgetting prediction: the quadratic model is exact only while Δθ stays inside one region;
/// activations that flip along Δθ show up as the gap between the prediction and the measured loss change.
/// </para>
/// <para>
/// Which model: when the caller's model already holds every floating parameter and buffer in the working precision, the
/// operator computes with it and sees its current parameters at every call (do not change them while using the operator,
/// except deliberately, as a finite-difference check does). Otherwise — a float32 model and
/// <see cref="CurvaturePrecision.Float64"/> — it builds a replica from <c>replica</c> (TorchSharp cannot deep-copy a
/// module), casts it, and copies the model's parameters, buffers and trainable flags into it once: the caller's model is
/// never cast. Either way the products run in eval mode (dropout off, BatchNorm on its running statistics — each item's
/// loss then depends on that item alone), and a model that was training is put back into training mode after each call.
/// Attention runs on libtorch's twice-differentiable math kernel during the calls (<see cref="MathAttention"/>: the fused
/// kernel's backward has no derivative, and a second backward through it aborts the process). Every batch runs in its
/// own dispose scope, so native memory stays flat over any number of products.
/// </para>
/// </remarks>
public sealed class CurvatureOperator : IDisposable
{
    readonly nn.Module<Tensor, Tensor> _model;
    readonly nn.Module<Tensor, Tensor>? _replica;
    readonly List<(Batch Batch, long Items)> _batches = [];
    readonly List<Tensor> _ownedInputs = [];
    readonly List<Tensor> _parameters;
    readonly OutputTask _task;
    readonly Func<Tensor, Batch, Tensor>? _lossSum;

    /// <summary>
    /// The curvature of <paramref name="model"/>'s mean loss over <paramref name="data"/> (enumerated once; the batches'
    /// tensors stay the caller's and must outlive the operator). <paramref name="task"/> reads the logits as
    /// <see cref="Forgetting.Fisher.Compute"/> does: null for a classifier's [B, C]; a sequence model needs the task that
    /// trains it (<see cref="CausalLmTask"/> shifts the targets). <paramref name="replica"/> makes a fresh instance of the
    /// model's architecture, needed only when the model is not already in the working precision.
    /// <paramref name="lossSum"/> replaces the task's cross-entropy by another per-batch sum Σᵢ ℓᵢ of the model's outputs
    /// (N is still the task's count of items); the Gauss-Newton kind needs the cross-entropy and refuses it.
    /// </summary>
    public CurvatureOperator(nn.Module<Tensor, Tensor> model, IEnumerable<Batch> data, CurvatureKind kind = CurvatureKind.Hessian,
        CurvaturePrecision precision = CurvaturePrecision.Float32, OutputTask? task = null,
        Func<nn.Module<Tensor, Tensor>>? replica = null, Func<Tensor, Batch, Tensor>? lossSum = null)
    {
        if (kind == CurvatureKind.GaussNewton && lossSum is not null)
            throw new ArgumentException("the Gauss-Newton product applies the softmax cross-entropy's output Hessian diag(p) − ppᵀ in closed form, so it cannot take another loss", nameof(lossSum));
        Kind = kind;
        Precision = precision;
        DType = precision == CurvaturePrecision.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        Layout = ParameterLayout.Of(model);
        _task = task ?? new ClassificationTask();
        _lossSum = lossSum;
        try
        {
            if (InWorkingPrecision(model)) _model = model;
            else _model = _replica = Replicate(model, replica ?? throw new ArgumentException(
                $"the model holds {string.Join("/", FloatingTypes(model))} tensors and the operator computes in {DType}: pass replica, a factory of the same architecture, to hold a {DType} copy (TorchSharp cannot deep-copy a module, and the caller's model is not cast)", nameof(replica)));
            var byName = _model.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter, StringComparer.Ordinal);
            _parameters = Layout.Names.Select(n => byName[n]).ToList();
            foreach (var batch in data)
            {
                var cast = CastFloating(batch);
                var items = _task.Items(cast);
                _batches.Add((cast, items));
                Items += items;
                Samples += batch.Size;
            }
            if (Samples == 0) throw new ArgumentException("the data holds no samples", nameof(data));
            if (Items == 0) throw new ArgumentException($"none of the {Samples} samples has a target that counts (every target is {Batch.IgnoreIndex})", nameof(data));
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Hessian or Gauss-Newton.</summary>
    public CurvatureKind Kind { get; }

    /// <summary>The precision the products run in.</summary>
    public CurvaturePrecision Precision { get; }

    /// <summary>The working dtype: float32 or float64.</summary>
    public ScalarType DType { get; }

    /// <summary>The flat-vector layout of the trainable parameters (the caller's model's names and order).</summary>
    public ParameterLayout Layout { get; }

    /// <summary>n, the dimension the operator acts on.</summary>
    public long Dimension => Layout.Size;

    /// <summary>N, the counted items every sum is divided by.</summary>
    public long Items { get; }

    /// <summary>Samples (rows of the batches) in the data.</summary>
    public long Samples { get; }

    /// <summary>Curvature-vector products computed so far (each a pass over all the data).</summary>
    public long Products { get; private set; }

    /// <summary>
    /// Mv for a flat <paramref name="v"/> of any floating dtype: computed in <see cref="DType"/>, returned in v's dtype,
    /// owned by the caller's dispose scope.
    /// </summary>
    public Tensor Apply(Tensor v)
    {
        if (v.dim() != 1 || v.shape[0] != Dimension)
            throw new ArgumentException($"a direction has shape [{Dimension}], not [{string.Join(", ", v.shape)}]", nameof(v));
        using var scope = NewDisposeScope();
        var sum = zeros(Dimension, dtype: DType);
        var sums = Layout.Split(sum);
        var parts = Layout.Split(v.detach().to(DType));
        EachBatch((batch, _) =>
        {
            var product = Kind == CurvatureKind.Hessian
                ? HessianVector.Product(() => LossSum(batch), _parameters, parts)
                : GaussNewtonProduct(batch, parts);
            for (var i = 0; i < sums.Length; i++) sums[i].add_(product[i]);
        });
        Products++;
        return sum.div_(Items).to(v.dtype).MoveToOuterDisposeScope();
    }

    /// <summary>The operator as a function for <see cref="Lanczos"/> and <see cref="Hutchinson"/>.</summary>
    public Func<Tensor, Tensor> AsFunction() => Apply;

    /// <summary>L = (1/N) Σᵢ ℓᵢ and ∇L (flat, in <see cref="DType"/>, the caller's scope) over the same data and weighting
    /// as <see cref="Apply"/>: the first-order term ∇L·Δθ of a prediction.</summary>
    public (double Loss, Tensor Gradient) LossAndGradient()
    {
        using var scope = NewDisposeScope();
        var gradient = zeros(Dimension, dtype: DType);
        var parts = Layout.Split(gradient);
        var total = 0.0;
        EachBatch((batch, _) =>
        {
            var s = LossSum(batch);
            var g = autograd.grad([s], _parameters, allow_unused: true);
            for (var i = 0; i < parts.Length; i++)
                if (g[i] is { IsInvalid: false } gi) parts[i].add_(gi);
            total += s.to(ScalarType.Float64).item<double>();
        });
        return (total / Items, gradient.div_(Items).MoveToOuterDisposeScope());
    }

    /// <summary>L = (1/N) Σᵢ ℓᵢ alone, without gradients.</summary>
    public double Loss()
    {
        var total = 0.0;
        using (no_grad()) EachBatch((batch, _) => total += LossSum(batch).to(ScalarType.Float64).item<double>());
        return total / Items;
    }

    /// <summary>
    /// Jᵀ H_out J v for one batch, per parameter: J v by the double-vjp trick, H_out in closed form, then one vjp. The
    /// first pass keeps its graph (<c>retain_graph</c>) because the third traverses the logits' graph again; the third
    /// frees it. Nothing built here leaves the caller's per-batch scope.
    /// </summary>
    Tensor[] GaussNewtonProduct(Batch batch, Tensor[] v)
    {
        var (rows, targets) = _task.Rows(_task.Restrict(ModelInput.NativeLogits(_model, batch), batch), batch);
        var u = zeros_like(rows).requires_grad_(true);
        var jtu = autograd.grad([rows], _parameters, grad_outputs: [u], retain_graph: true, create_graph: true, allow_unused: true);
        var terms = jtu.Select((w, i) => w is { IsInvalid: false } ? (w * v[i]).sum() : null).OfType<Tensor>().ToList();
        if (terms.Count == 0) return _parameters.Select(p => zeros_like(p)).ToArray();
        var jv = autograd.grad([terms.Aggregate((a, b) => a + b)], [u], retain_graph: true)[0];
        var p = rows.detach().softmax(-1);
        var hjv = p * jv - p * (p * jv).sum(-1, keepdim: true);
        hjv.mul_(targets.ne(Batch.IgnoreIndex).unsqueeze(1).to(hjv.dtype));
        var g = autograd.grad([rows], _parameters, grad_outputs: [hjv], allow_unused: true);
        return g.Select((gi, i) => gi is { IsInvalid: false } ? gi : zeros_like(_parameters[i], dtype: null)).ToArray();
    }

    /// <summary>S_b = Σ_{i∈b} ℓᵢ in the working dtype: the task's summed cross-entropy over the counted rows, or the
    /// caller's loss.</summary>
    Tensor LossSum(Batch batch)
    {
        var logits = ModelInput.NativeLogits(_model, batch);
        if (_lossSum is not null) return _lossSum(logits, batch);
        var (rows, targets) = _task.Rows(_task.Restrict(logits, batch), batch);
        return nn.functional.cross_entropy(rows, targets, ignore_index: Batch.IgnoreIndex, reduction: nn.Reduction.Sum);
    }

    /// <summary>Runs <paramref name="body"/> on each batch with counted items, each in its own dispose scope, the model in
    /// eval mode and attention on its twice-differentiable kernel (<see cref="MathAttention"/>); restores training mode.</summary>
    void EachBatch(Action<Batch, long> body)
    {
        var wasTraining = _model.training;
        _model.eval();
        using var attention = new MathAttention();
        try
        {
            foreach (var (batch, items) in _batches)
            {
                if (items == 0) continue;
                using var scope = NewDisposeScope();
                body(batch, items);
            }
        }
        finally
        {
            if (wasTraining) _model.train();
        }
    }

    bool InWorkingPrecision(nn.Module model) => FloatingTypes(model).All(t => t == DType);

    static IEnumerable<ScalarType> FloatingTypes(nn.Module model) =>
        model.parameters().Select(p => (Tensor)p).Concat(model.buffers()).Where(t => t.is_floating_point()).Select(t => t.dtype).Distinct();

    /// <summary>A fresh instance cast to the working dtype holding the model's parameters, buffers and trainable flags,
    /// in eval mode.</summary>
    nn.Module<Tensor, Tensor> Replicate(nn.Module<Tensor, Tensor> model, Func<nn.Module<Tensor, Tensor>> factory)
    {
        var copy = factory();
        try
        {
            copy.to(DType);
            var source = model.named_parameters().Select(p => (p.name, (Tensor)p.parameter)).Concat(model.named_buffers())
                .ToDictionary(p => p.Item1, p => p.Item2, StringComparer.Ordinal);
            var targets = copy.named_parameters().Select(p => (p.name, (Tensor)p.parameter)).Concat(copy.named_buffers()).ToList();
            var missing = source.Keys.Except(targets.Select(t => t.Item1)).ToList();
            if (missing.Count > 0 || targets.Count != source.Count)
                throw new ArgumentException($"the replica's parameters and buffers do not match the model's (the model has {missing.FirstOrDefault() ?? "other names"} the replica lacks, or the replica has more): replica must build the same architecture");
            var trainable = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.requires_grad, StringComparer.Ordinal);
            using (no_grad())
                foreach (var (name, target) in targets)
                {
                    if (!target.shape.SequenceEqual(source[name].shape))
                        throw new ArgumentException($"replica tensor '{name}' has shape [{string.Join(", ", target.shape)}], the model's [{string.Join(", ", source[name].shape)}]");
                    target.copy_(source[name]);
                }
            foreach (var (name, p) in copy.named_parameters()) p.requires_grad = trainable[name];
            copy.eval();
            return copy;
        }
        catch
        {
            copy.Dispose();
            throw;
        }
    }

    /// <summary>The batch with its floating tensors in the working dtype (new tensors the operator owns), or itself.</summary>
    Batch CastFloating(Batch batch)
    {
        if (batch.Values.All(t => !t.is_floating_point() || t.dtype == DType)) return batch;
        var cast = batch.Keys.Select(name => KeyValuePair.Create(name,
            batch[name].is_floating_point() && batch[name].dtype != DType ? Own(batch[name].to(DType)) : batch[name])).ToList();
        return new Batch(cast);
    }

    Tensor Own(Tensor t)
    {
        t = t.DetachFromDisposeScope();
        _ownedInputs.Add(t);
        return t;
    }

    /// <summary>Frees the replica and the cast copies of the batches; the caller's model and batches are untouched.</summary>
    public void Dispose()
    {
        _replica?.Dispose();
        foreach (var t in _ownedInputs) t.Dispose();
        _ownedInputs.Clear();
    }
}
