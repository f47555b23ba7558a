using Research.Core.Models;
using Research.Abstractions;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Research.Core.Forgetting;

/// <summary>
/// The diagonal Fisher information of a classifier p_θ(y|x) = softmax(model(x))_y over N samples, in the four variants
/// of <see cref="FisherKind"/> (van de Ven 2025, arXiv 2502.11756), for EWC (Kirkpatrick et al. 2017):
/// R(θ) = λ/2 Σⱼ Fⱼ (θⱼ − θ*ⱼ)².
/// </summary>
/// <remarks>
/// <para>
/// Per-sample squared gradients without a per-sample loop, for a Linear layer z = Wx + b on 2-D input X (B×in) with
/// output Z (B×out): samples are independent, so row i of G = ∂(Σᵢ ℓᵢ)/∂Z is gᵢ = ∂ℓᵢ/∂zᵢ, the per-sample weight
/// gradient is gᵢxᵢᵀ and Σᵢ (gᵢxᵢᵀ)² = (G²)ᵀ(X²) elementwise, Σᵢ gᵢ² for the bias. Forward hooks capture X and Z
/// (<see cref="LinearCapture"/>); one <c>autograd.grad(Σᵢ ℓᵢ, Z)</c> gives G for every such layer at once. For
/// <see cref="FisherKind.Exact"/> the C classes take C backward passes of the whole batch with ℓᵢ = −log p_θ(c|xᵢ), and
/// Σ_c Σᵢ p_ic (g_ic xᵢᵀ)² = (Σ_c P_c ⊙ G_c²)ᵀ(X²): the class weights enter before the one product with X².
/// </para>
/// <para>
/// The identity needs a layer that sees each sample once. Parameters where it does not hold go to a per-sample loop
/// (one backward per sample, and per class for Exact), and <see cref="FisherResult.Fallback"/> names them with the
/// reason: a Linear applied to [B, T, d] sequences (its weight is shared across positions, so the per-sample gradient
/// Σₜ gᵢₜxᵢₜᵀ does not factor), a Linear called several times per forward, a parameter shared between names,
/// embeddings, LayerNorm and any parameter not owned by a Linear, and a Linear whose hook never ran (a model that calls
/// <c>layer.forward(x)</c> instead of <c>layer.call(x)</c> bypasses TorchSharp's hooks).
/// </para>
/// <para>
/// Assumptions: samples are independent through the model (the model runs in eval mode here, so dropout is off; no
/// batch statistics); the data's targets are int64 class indices. Only trainable parameters (<c>requires_grad</c>)
/// get a Fisher. Each batch runs in its own dispose scope; the result's tensors live outside them.
/// </para>
/// </remarks>
public static class Fisher
{
    /// <summary>
    /// The diagonal Fisher of <paramref name="kind"/> over <paramref name="data"/> (at most
    /// <paramref name="maxSamples"/> samples), by the batched per-sample identity where it holds and the stated
    /// per-sample fallback elsewhere. <paramref name="generator"/> draws the labels of <see cref="FisherKind.Sampled"/>
    /// (required there, unused otherwise): per batch, one <c>multinomial</c> draw over the batch's probabilities.
    /// </summary>
    public static FisherResult Compute(nn.Module<Tensor, Tensor> model, IEnumerable<Batch> data, FisherKind kind,
        Generator? generator = null, long? maxSamples = null)
    {
        RequireGenerator(kind, generator);
        var parameters = Trainable(model);
        var sums = Zeros(parameters);
        try
        {
            using var capture = kind == FisherKind.Batched ? null : new LinearCapture(model);
            Routes? routes = null;
            var (samples, batches) = ForEachBatch(model, data, maxSamples, (x, y) =>
            {
                if (kind == FisherKind.Batched) { AddSquares(BatchMeanGradient(model, x, y, parameters), sums); return; }
                capture!.Clear();
                var logits = ModelInput.Logits(model, x);
                routes ??= Route(model, parameters, capture);
                routes.Check(capture);
                var labels = Labels(kind, logits, y, generator);
                AddByIdentity(logits, labels, kind, routes.Exact, capture, sums);
                if (routes.Fallback.Count > 0)
                    PerSample(model, x, labels, kind, routes.FallbackIndices.Select(i => (Tensor)parameters[i].Value).ToList(),
                        routes.FallbackIndices.Select(i => sums[i]).ToList());
            });
            return Finish(kind, parameters, sums, samples, batches, routes?.Fallback ?? new Dictionary<string, string>());
        }
        catch
        {
            foreach (var s in sums) s.Dispose();
            throw;
        }
    }

    /// <summary>The Fisher tensors of <see cref="Compute"/> by parameter name (fp32, shaped as the parameters).</summary>
    public static IReadOnlyDictionary<string, Tensor> Diagonal(nn.Module<Tensor, Tensor> model, IEnumerable<Batch> data,
        FisherKind kind, Generator? generator = null, long? maxSamples = null) =>
        Compute(model, data, kind, generator, maxSamples).Diagonal;

    /// <summary>
    /// The reference: the straightforward loop, one forward and backward per sample (and per class for
    /// <see cref="FisherKind.Exact"/>) over every trainable parameter; for <see cref="FisherKind.Batched"/> the batch's
    /// per-sample gradients are averaged and the mean squared. Draws the labels of <see cref="FisherKind.Sampled"/>
    /// exactly as <see cref="Compute"/> does (one <c>multinomial</c> per batch, in batch order), so the same generator
    /// state gives the same labels.
    /// </summary>
    public static FisherResult NaiveLoop(nn.Module<Tensor, Tensor> model, IEnumerable<Batch> data, FisherKind kind,
        Generator? generator = null, long? maxSamples = null)
    {
        RequireGenerator(kind, generator);
        var parameters = Trainable(model);
        var all = parameters.Select(p => (Tensor)p.Value).ToList();
        var sums = Zeros(parameters);
        try
        {
            var (samples, batches) = ForEachBatch(model, data, maxSamples, (x, y) =>
            {
                if (kind == FisherKind.Batched) { AddSquares(MeanOfPerSampleGradients(model, x, y, all), sums); return; }
                Tensor? labels = null;
                if (kind != FisherKind.Exact)
                    using (no_grad()) labels = Labels(kind, ModelInput.Logits(model, x), y, generator);
                PerSample(model, x, labels, kind, all, sums);
            });
            var fallback = kind == FisherKind.Batched
                ? new Dictionary<string, string>()
                : parameters.ToDictionary(p => p.Name, _ => "reference per-sample loop");
            return Finish(kind, parameters, sums, samples, batches, fallback);
        }
        catch
        {
            foreach (var s in sums) s.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Runs <paramref name="body"/> on each batch (cut so that at most <paramref name="maxSamples"/> samples are seen),
    /// each in its own dispose scope, with the model in eval mode and gradients enabled; restores training mode.
    /// Returns (N, M).
    /// </summary>
    static (long Samples, long Batches) ForEachBatch(nn.Module<Tensor, Tensor> model, IEnumerable<Batch> data,
        long? maxSamples, Action<Batch, Tensor> body)
    {
        if (maxSamples is < 1) throw new ArgumentOutOfRangeException(nameof(maxSamples), maxSamples, "must be at least 1");
        var wasTraining = model.training;
        model.eval();
        try
        {
            using var _ = enable_grad();
            long samples = 0, batches = 0;
            foreach (var batch in data)
            {
                if (samples >= maxSamples) break;
                var rows = Math.Min(batch.Size, (maxSamples ?? long.MaxValue) - samples);
                if (rows == 0) continue;
                using var scope = NewDisposeScope();
                var whole = rows == batch.Size;
                var part = whole ? batch : batch.Narrow(0, rows);
                body(part, part.TargetsTensor);
                samples += rows;
                batches++;
            }
            if (samples == 0) throw new ArgumentException("the data holds no samples", nameof(data));
            return (samples, batches);
        }
        finally
        {
            if (wasTraining) model.train();
        }
    }

    /// <summary>The labels whose log-likelihood is differentiated: the targets (Empirical), one draw ŷᵢ ~ p_θ(·|xᵢ) per
    /// row in a single <c>multinomial</c> call (Sampled), none (Exact sums over all classes).</summary>
    static Tensor? Labels(FisherKind kind, Tensor logits, Tensor targets, Generator? generator)
    {
        RequireOneOutputPerSample(logits);
        return kind switch
        {
            FisherKind.Empirical => targets,
            FisherKind.Sampled => multinomial(logits.detach().to(float32).softmax(-1), 1, true, generator).squeeze(1),
            _ => null,
        };
    }

    /// <summary>
    /// The log-likelihood here is over the LAST axis of [B, C] logits: one class per sample. Sequence outputs ([B, T, V],
    /// one distribution per position) need the sample's log-likelihood summed over its positions, which the causal-LM
    /// task brings with the token models; until then they are refused rather than differentiated over the wrong axis.
    /// </summary>
    static void RequireOneOutputPerSample(Tensor logits)
    {
        if (logits.dim() != 2)
            throw new NotSupportedException($"the Fisher is computed for [B, C] classifier logits; these are [{string.Join(", ", logits.shape)}] (one distribution per position)");
    }

    /// <summary>
    /// Adds Σᵢ wᵢ (gᵢxᵢᵀ)² = (S)ᵀ(X²) and Σᵢ wᵢ gᵢ² to the sums of the layers routed to the identity, where
    /// S = Σ_terms w ⊙ G² over the backward terms: the C classes with w = p_θ(c|xᵢ) (Exact) or the labels with w = 1.
    /// </summary>
    static void AddByIdentity(Tensor logits, Tensor? labels, FisherKind kind, IReadOnlyList<ExactLayer> layers,
        LinearCapture capture, IReadOnlyList<Tensor> sums)
    {
        if (layers.Count == 0) return;
        var outputs = layers.Select(l => capture.Calls(l.Prefix)[0].Z).ToList();
        var weighted = new Tensor?[layers.Count];
        var logp = nn.functional.log_softmax(logits.to(float32), -1);

        void AddTerm(Tensor loss, Tensor? weight, bool retain)
        {
            var g = autograd.grad(new[] { loss }, outputs, retain_graph: retain, allow_unused: true);
            for (var l = 0; l < layers.Count; l++)
            {
                if (g[l].IsInvalid) continue;
                var g2 = g[l].to(float32).square();
                if (weight is not null) g2.mul_(weight.unsqueeze(1));
                weighted[l] = weighted[l] is { } s ? s.add_(g2) : g2;
            }
        }

        if (kind == FisherKind.Exact)
        {
            var p = logp.detach().exp();
            var classes = logp.shape[1];
            for (long c = 0; c < classes; c++)
                AddTerm(logp.select(1, c).sum().neg(), p.select(1, c), c < classes - 1);
        }
        else AddTerm(logp.gather(1, labels!.unsqueeze(1)).sum().neg(), null, false);

        for (var l = 0; l < layers.Count; l++)
        {
            if (weighted[l] is not { } s) continue;
            var layer = layers[l];
            if (layer.Weight is { } w)
                sums[w].addmm_(s.t(), capture.Calls(layer.Prefix)[0].X.detach().to(float32).square(), 1, 1);
            if (layer.Bias is { } b) sums[b].add_(s.sum(dim: 0));
        }
    }

    /// <summary>
    /// The per-sample loop over <paramref name="parameters"/>: for each row i a forward of xᵢ alone, then
    /// sums += Σ_c p_θ(c|xᵢ) (∇ log p_θ(c|xᵢ))² (Exact, C backward passes) or (∇ log p_θ(yᵢ|xᵢ))² for the given label.
    /// </summary>
    static void PerSample(nn.Module<Tensor, Tensor> model, Batch x, Tensor? labels, FisherKind kind,
        IList<Tensor> parameters, IReadOnlyList<Tensor> sums)
    {
        for (long i = 0; i < x.Size; i++)
        {
            using var scope = NewDisposeScope();
            var logp = nn.functional.log_softmax(ModelInput.Logits(model, x.Narrow(i, 1)), 1)[0];
            if (kind == FisherKind.Exact)
            {
                var p = logp.detach().exp();
                var classes = logp.shape[0];
                for (long c = 0; c < classes; c++)
                    AddSquares(autograd.grad(new[] { logp[c].neg() }, parameters, retain_graph: c < classes - 1, allow_unused: true),
                        sums, p[c]);
            }
            else
                AddSquares(autograd.grad(new[] { logp[labels![i].item<long>()].neg() }, parameters, allow_unused: true), sums);
        }
    }

    /// <summary>∇θ (1/B) Σᵢ −log p_θ(yᵢ|xᵢ): one backward of the batch's mean cross-entropy.</summary>
    static IList<Tensor> BatchMeanGradient(nn.Module<Tensor, Tensor> model, Batch x, Tensor y, IReadOnlyList<NamedParameter> parameters) =>
        autograd.grad(new[] { nn.functional.cross_entropy(ModelInput.Logits(model, x), y) },
            parameters.Select(p => p.Value).ToList(), allow_unused: true);

    /// <summary>(1/B) Σᵢ ∇θ −log p_θ(yᵢ|xᵢ), one backward per sample: the reference for <see cref="BatchMeanGradient"/>.</summary>
    static IList<Tensor> MeanOfPerSampleGradients(nn.Module<Tensor, Tensor> model, Batch x, Tensor y, IList<Tensor> parameters)
    {
        var means = parameters.Select(p => zeros(p.shape, dtype: float32)).ToList();
        for (long i = 0; i < x.Size; i++)
        {
            using var scope = NewDisposeScope();
            var logp = nn.functional.log_softmax(ModelInput.Logits(model, x.Narrow(i, 1)), 1)[0];
            var g = autograd.grad(new[] { logp[y[i].item<long>()].neg() }, parameters, allow_unused: true);
            for (var k = 0; k < g.Count; k++)
                if (!g[k].IsInvalid) means[k].add_(g[k].to(float32));
        }
        foreach (var m in means) m.div_(x.Size);
        return means;
    }

    /// <summary>sums[k] += weight · grads[k]² (an unused parameter's missing gradient counts as zero).</summary>
    static void AddSquares(IList<Tensor> grads, IReadOnlyList<Tensor> sums, Tensor? weight = null)
    {
        for (var k = 0; k < grads.Count; k++)
        {
            if (grads[k].IsInvalid) continue;
            var g2 = grads[k].to(float32).square();
            sums[k].add_(weight is null ? g2 : g2.mul_(weight));
        }
    }

    /// <summary>
    /// Which parameters the identity covers: the weight and bias of a Linear that ran exactly once in the first forward
    /// pass, on 2-D input, and whose tensors no other parameter name shares. Everything else gets the fallback and its
    /// reason.
    /// </summary>
    static Routes Route(nn.Module model, IReadOnlyList<NamedParameter> parameters, LinearCapture capture)
    {
        var owners = new Dictionary<string, nn.Module> { [""] = model };
        foreach (var (name, module) in model.named_modules()) owners.TryAdd(name, module);
        var namesByHandle = model.named_parameters().GroupBy(p => p.parameter.Handle)
            .Where(g => g.Count() > 1).SelectMany(g => g.Select(p => (p.name, others: g.Select(o => o.name).Where(o => o != p.name))))
            .ToDictionary(s => s.name, s => string.Join(", ", s.others));
        var layers = new Dictionary<string, (int? Weight, int? Bias)>();
        var fallback = new Dictionary<string, string>();
        var fallbackIndices = new List<int>();
        for (var k = 0; k < parameters.Count; k++)
        {
            var name = parameters[k].Name;
            var dot = name.LastIndexOf('.');
            var (prefix, leaf) = dot < 0 ? ("", name) : (name[..dot], name[(dot + 1)..]);
            var reason = namesByHandle.TryGetValue(name, out var others)
                ? $"the same tensor as {others}: its gradient gathers several uses"
                : !capture.Layers.ContainsKey(prefix) || leaf is not ("weight" or "bias")
                    ? $"owned by {(owners.TryGetValue(prefix, out var owner) ? owner.GetType().Name : "the model")}, which has no batched per-sample identity here"
                    : LinearReason(capture.Calls(prefix));
            if (reason is null)
            {
                var (w, b) = layers.GetValueOrDefault(prefix);
                layers[prefix] = leaf == "weight" ? (k, b) : (w, k);
            }
            else
            {
                fallback[name] = reason;
                fallbackIndices.Add(k);
            }
        }
        return new Routes(layers.Select(l => new ExactLayer(l.Key, l.Value.Weight, l.Value.Bias)).ToList(), fallback, fallbackIndices);
    }

    /// <summary>Why a Linear's calls do not fit Σᵢ(gᵢxᵢᵀ)² = (G²)ᵀ(X²), or null when they do.</summary>
    static string? LinearReason(IReadOnlyList<(Tensor X, Tensor Z)> calls) => calls.Count switch
    {
        0 => "its Linear recorded no call: the model invokes it with forward(x), which bypasses TorchSharp's hooks (call(x) runs them), or does not use it",
        > 1 => $"its Linear runs {calls.Count} times per forward pass: the weight is shared across the calls",
        _ when calls[0].X.dim() != 2 => $"its Linear sees {calls[0].X.dim()}-D input {Shape(calls[0].X)}: the weight is shared across positions, so the per-sample gradient Σₜ gᵢₜxᵢₜᵀ does not factor",
        _ => null,
    };

    static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";

    static List<NamedParameter> Trainable(nn.Module model) =>
        model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => new NamedParameter(p.name, p.parameter)).ToList();

    static List<Tensor> Zeros(IReadOnlyList<NamedParameter> parameters) =>
        parameters.Select(p => zeros(p.Value.shape, dtype: float32)).ToList();

    static FisherResult Finish(FisherKind kind, IReadOnlyList<NamedParameter> parameters, IReadOnlyList<Tensor> sums,
        long samples, long batches, IReadOnlyDictionary<string, string> fallback)
    {
        var divisor = kind == FisherKind.Batched ? batches : samples;
        var diagonal = new Dictionary<string, Tensor>();
        for (var k = 0; k < parameters.Count; k++) diagonal[parameters[k].Name] = sums[k].div_(divisor);
        return new FisherResult(kind, diagonal, samples, batches, fallback);
    }

    static void RequireGenerator(FisherKind kind, Generator? generator)
    {
        if (kind == FisherKind.Sampled && generator is null)
            throw new ArgumentNullException(nameof(generator), "the Sampled Fisher draws its labels from an explicit generator");
    }

    /// <summary>A Linear routed to the identity: its name prefix and the indices of its weight and bias among the
    /// trainable parameters (null when frozen).</summary>
    sealed record ExactLayer(string Prefix, int? Weight, int? Bias);

    /// <summary>The routing decided on the first batch; later batches must call the layers the same way.</summary>
    sealed record Routes(IReadOnlyList<ExactLayer> Exact, IReadOnlyDictionary<string, string> Fallback, IReadOnlyList<int> FallbackIndices)
    {
        public void Check(LinearCapture capture)
        {
            foreach (var layer in Exact)
                if (LinearReason(capture.Calls(layer.Prefix)) is { } reason)
                    throw new InvalidOperationException($"Linear '{layer.Prefix}' changed how it is called between batches ({reason}); the Fisher's routing assumes one structure");
        }
    }
}
