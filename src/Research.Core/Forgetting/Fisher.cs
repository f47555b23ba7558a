using Research.Core.Models;
using Research.Core.Tasks;
using Research.Abstractions;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Research.Core.Forgetting;

/// <summary>
/// The diagonal Fisher information of a model p_θ(y|x) over N samples, in the four variants of <see cref="FisherKind"/>
/// (van de Ven 2025, arXiv 2502.11756), for EWC (Kirkpatrick et al. 2017): R(θ) = λ/2 Σⱼ Fⱼ (θⱼ − θ*ⱼ)². A sample is
/// a classifier's input (logits [B, C], one distribution) or a sequence (logits [B, T, V], one distribution per
/// position, read through the <see cref="OutputTask"/> that trains it — <see cref="CausalLmTask"/> for a language model).
/// </summary>
/// <remarks>
/// <para>
/// Sequences, teacher-forced, over tokens. The task's rows of sample b (for a causal LM, position t scores token t + 1)
/// give its log-likelihood ℓ_b = Σₜ m_bt log p_θ(y_bt | x_b,&lt;t), m_bt = 1 where the target counts (≠
/// <see cref="Batch.IgnoreIndex"/>), the prefix x_b,&lt;t always the real text. With g_b = ∇θ ℓ_b and n_b = Σₜ m_bt the
/// counted tokens, F̂ = Σ_b g_b² / Σ_b n_b. A classifier has one row per sample (n_b = 1), so F̂ = (1/N) Σᵢ gᵢ² as before.
/// </para>
/// <para>
/// Why divide by tokens: for <see cref="FisherKind.Sampled"/> the labels y_bt ~ p_θ(·|x_b,&lt;t) are drawn independently
/// at each counted position given the fixed real prefix, so g_b = Σₜ g_bt where g_bt = ∇θ log p_θ(y_bt|x_b,&lt;t) depends on
/// y_bt alone. For t ≠ s, E[g_bt g_bsᵀ] = E[g_bt] E[g_bs]ᵀ = 0, since E_{y~p}[∇ log p(y)] = Σ_y ∇p(y) = ∇1 = 0. Hence
/// E[g_b g_bᵀ] = Σₜ F_bt, the sum of the per-token Fishers F_bt = E_y[∇log p_θ(y|x_b,&lt;t) ∇log p_θ(y|x_b,&lt;t)ᵀ], and F̂ is an
/// unbiased estimate of the mean per-token Fisher over the counted tokens (the masks are data, not draws, so the
/// divisor is fixed) — the Fisher of the model's next-token conditionals at the data's prefixes, not of its joint
/// sequence distribution, whose prefixes would be its own samples (Martens 2020, "New insights and perspectives on the
/// natural gradient method", JMLR 21, §9). The sum over positions then needs one backward per sequence, not per token.
/// </para>
/// <para>
/// <see cref="FisherKind.Empirical"/> differentiates the real next tokens, which are not draws from p_θ and are part of
/// the later prefixes: the cross terms do not vanish in general. Its F̂ = (1/Σn) Σ_b (Σₜ g_bt)² is the squared gradient
/// of each sequence's real log-likelihood, per token: the per-token empirical Fisher (1/Σn) Σ_bt g_bt² plus the
/// cross-position products (1/Σn) Σ_b Σ_{t≠s} g_bt g_bs, which cancel in expectation only where the model's
/// conditionals match the data's (on the empirical Fisher's limits, Kunstner et al. 2019, "Limitations of the empirical
/// Fisher approximation for natural gradient descent"). <see cref="FisherKind.Exact"/> would sum over V^T label
/// sequences per sample and is refused for sequence outputs (<see cref="FisherKind.Sampled"/> estimates the same
/// per-token Fisher without bias). <see cref="FisherKind.Batched"/> keeps its definition: the square of each
/// mini-batch's mean gradient, the mean over the batch's counted tokens (its mean loss).
/// </para>
/// <para>
/// Per-sample squared gradients without a per-sample loop, for a Linear layer z = Wx + b whose input X has the sample on
/// its first axis: samples are independent, so the slice b of G = ∂(Σ_b ℓ_b)/∂Z is δ_b = ∂ℓ_b/∂Z_b. On 2-D input
/// (B×in, one row per sample) the per-sample weight gradient is δ_b x_bᵀ and Σ_b (δ_b x_bᵀ)² = (G²)ᵀ(X²) elementwise,
/// Σ_b δ_b² for the bias. On [B, T, in] (a position-wise layer; more axes are flattened into T) one weight serves every
/// position of the sample, whose gradient is the sum G_b = Σₜ δ_bt x_btᵀ = δ_bᵀ X_b — one batched product for the batch —
/// and Σ_b G_b² is summed from it, Σ_b (Σₜ δ_bt)² for the bias. Forward hooks capture X and Z
/// (<see cref="LinearCapture"/>); one <c>autograd.grad(Σ_b ℓ_b, Z)</c> gives G for every such layer at once. For
/// <see cref="FisherKind.Exact"/> the C classes take C backward passes of the whole batch with ℓ_b = −log p_θ(c|x_b), and
/// on 2-D input Σ_c Σ_b p_bc (δ_bc x_bᵀ)² = (Σ_c P_c ⊙ G_c²)ᵀ(X²): the class weights enter before the one product with X².
/// </para>
/// <para>
/// Parameters where the identity does not hold go to a per-sample loop (one backward per sample, and per class for
/// Exact), and <see cref="FisherResult.Fallback"/> names them with the reason: a Linear called several times per
/// forward, a Linear whose input's first axis is not the batch, a parameter shared between names, embeddings (a GPT's
/// tied output projection is its token embedding), LayerNorm and any parameter not owned by a Linear, and a Linear whose
/// hook never ran (a model that calls <c>layer.forward(x)</c> instead of <c>layer.call(x)</c> bypasses TorchSharp's
/// hooks). A Linear on [B, T, in] takes the identity only when nothing else needs the loop (a model whose embeddings and
/// LayerNorms are frozen, say): otherwise each sample's backward crosses it anyway and gives its gradient for the cost
/// of one weight-gradient product, less than the identity's batched backward and [B, out, in] products.
/// </para>
/// <para>
/// Assumptions: samples are independent through the model (the model runs in eval mode here, so dropout is off; no
/// batch statistics); the targets are int64 class or token ids; the task's rows are sample-major (sample b owns rows
/// b·k … b·k + k − 1, as <see cref="OutputTask.Rows"/> gives them). The task's <see cref="OutputTask.Restrict"/> is
/// not applied: a task-incremental head enters as a model (the trainer's class subset). Only trainable parameters
/// (<c>requires_grad</c>) get a Fisher. Each batch runs in its own dispose scope; the result's tensors live outside them.
/// </para>
/// </remarks>
public static class Fisher
{
    /// <summary>
    /// The diagonal Fisher of <paramref name="kind"/> over <paramref name="data"/> (at most
    /// <paramref name="maxSamples"/> samples), by the batched per-sample identity where it holds and the stated
    /// per-sample fallback elsewhere. <paramref name="generator"/> draws the labels of <see cref="FisherKind.Sampled"/>
    /// (required there, unused otherwise): per batch, one <c>multinomial</c> draw over the probabilities of the counted
    /// rows, in row order. <paramref name="task"/> reads the logits: null for a classifier's [B, C]; a sequence model's
    /// [B, T, V] needs the task that trains it (<see cref="CausalLmTask"/> shifts the targets).
    /// </summary>
    public static FisherResult Compute(nn.Module<Tensor, Tensor> model, IEnumerable<Batch> data, FisherKind kind,
        Generator? generator = null, long? maxSamples = null, OutputTask? task = null)
    {
        RequireGenerator(kind, generator);
        var parameters = Trainable(model);
        var sums = Zeros(parameters);
        try
        {
            using var capture = kind == FisherKind.Batched ? null : new LinearCapture(model);
            Routes? routes = null;
            var counts = ForEachBatch(model, data, maxSamples, x =>
            {
                if (kind == FisherKind.Batched) return AddBatchMeanSquare(Rows.Of(ModelInput.Logits(model, x), x, task, kind), parameters, sums);
                // The first batch's routing is read from a forward pass without a graph: only layers routed to the
                // identity need one. Where none is (a GPT: its embeddings need the loop), the batch's forward only draws
                // labels, and a graph kept through the per-sample loop would only hold memory.
                Rows? rows = null;
                if (routes is not { Exact.Count: > 0 })
                {
                    using (no_grad()) rows = Rows.Of(ModelInput.Logits(model, x), x, task, kind);
                    routes ??= Route(model, parameters, capture!, x.Size);
                }
                if (routes.Exact.Count > 0)
                {
                    capture!.Clear();
                    rows = Rows.Of(ModelInput.Logits(model, x), x, task, kind);
                    routes.Check(capture, x.Size);
                }
                var labels = Labels(kind, rows!, generator);
                AddByIdentity(rows!, labels, kind, routes.Exact, capture!, sums);
                if (routes.Fallback.Count > 0)
                    PerSample(model, x, task, labels, kind, routes.FallbackIndices.Select(i => (Tensor)parameters[i].Value).ToList(),
                        routes.FallbackIndices.Select(i => sums[i]).ToList());
                return rows!;
            }, capture);
            return Finish(kind, parameters, sums, counts, routes?.Fallback ?? new Dictionary<string, string>());
        }
        catch
        {
            foreach (var s in sums) s.Dispose();
            throw;
        }
    }

    /// <summary>The Fisher tensors of <see cref="Compute"/> by parameter name (fp32, shaped as the parameters).</summary>
    public static IReadOnlyDictionary<string, Tensor> Diagonal(nn.Module<Tensor, Tensor> model, IEnumerable<Batch> data,
        FisherKind kind, Generator? generator = null, long? maxSamples = null, OutputTask? task = null) =>
        Compute(model, data, kind, generator, maxSamples, task).Diagonal;

    /// <summary>
    /// The reference: the straightforward loop, one forward and backward per sample (and per class for
    /// <see cref="FisherKind.Exact"/>) over every trainable parameter; for <see cref="FisherKind.Batched"/> the batch's
    /// per-sample gradients are summed and divided by the batch's counted targets before squaring. Draws the labels of
    /// <see cref="FisherKind.Sampled"/> exactly as <see cref="Compute"/> does (one <c>multinomial</c> per batch over its
    /// counted rows, in row order), so the same generator state gives the same labels.
    /// </summary>
    public static FisherResult NaiveLoop(nn.Module<Tensor, Tensor> model, IEnumerable<Batch> data, FisherKind kind,
        Generator? generator = null, long? maxSamples = null, OutputTask? task = null)
    {
        RequireGenerator(kind, generator);
        var parameters = Trainable(model);
        var all = parameters.Select(p => (Tensor)p.Value).ToList();
        var sums = Zeros(parameters);
        try
        {
            var counts = ForEachBatch(model, data, maxSamples, x =>
            {
                Rows rows;
                using (no_grad()) rows = Rows.Of(ModelInput.Logits(model, x), x, task, kind);
                if (kind == FisherKind.Batched)
                {
                    if (rows.Tokens > 0) AddSquares(MeanOfPerSampleGradients(model, x, task, rows, all), sums);
                    return rows;
                }
                PerSample(model, x, task, Labels(kind, rows, generator), kind, all, sums);
                return rows;
            }, null);
            var fallback = kind == FisherKind.Batched
                ? new Dictionary<string, string>()
                : parameters.ToDictionary(p => p.Name, _ => "reference per-sample loop");
            return Finish(kind, parameters, sums, counts, fallback);
        }
        catch
        {
            foreach (var s in sums) s.Dispose();
            throw;
        }
    }

    /// <summary>What <see cref="ForEachBatch"/> counted: N samples, M batches (those with a counted target), the counted
    /// targets Σ_b n_b, and whether the outputs were sequences.</summary>
    readonly record struct Counts(long Samples, long Batches, long Tokens, bool Sequences);

    /// <summary>
    /// Runs <paramref name="body"/> on each batch (cut so that at most <paramref name="maxSamples"/> samples are seen),
    /// each in its own dispose scope, with the model in eval mode and gradients enabled; restores training mode. The
    /// body returns the batch's rows, whose counted targets this sums.
    /// </summary>
    static Counts ForEachBatch(nn.Module<Tensor, Tensor> model, IEnumerable<Batch> data, long? maxSamples,
        Func<Batch, Rows> body, LinearCapture? capture)
    {
        if (maxSamples is < 1) throw new ArgumentOutOfRangeException(nameof(maxSamples), maxSamples, "must be at least 1");
        var wasTraining = model.training;
        model.eval();
        try
        {
            using var _ = enable_grad();
            long samples = 0, batches = 0, tokens = 0;
            var sequences = false;
            foreach (var batch in data)
            {
                if (samples >= maxSamples) break;
                var rows = Math.Min(batch.Size, (maxSamples ?? long.MaxValue) - samples);
                if (rows == 0) continue;
                using var scope = NewDisposeScope();
                capture?.Clear();
                var part = rows == batch.Size ? batch : batch.Narrow(0, rows);
                var seen = body(part);
                var counted = seen.Tokens;
                samples += rows;
                tokens += counted;
                if (counted > 0) batches++;
                sequences |= seen.Sequence;
            }
            if (samples == 0) throw new ArgumentException("the data holds no samples", nameof(data));
            if (tokens == 0) throw new ArgumentException($"none of the {samples} samples has a target that counts (every target is {Batch.IgnoreIndex})", nameof(data));
            return new Counts(samples, batches, tokens, sequences);
        }
        finally
        {
            if (wasTraining) model.train();
        }
    }

    static readonly ClassificationTask OneClassPerSample = new();

    /// <summary>
    /// A batch's outputs as the task's rows: logits [B·k, C] in fp32 (sample b owns rows b·k … b·k + k − 1), targets
    /// [B·k], which rows count, and whether the logits were a sequence's (rank &gt; 2).
    /// </summary>
    sealed record Rows(Tensor Logits, Tensor Targets, Tensor Counted, long PerSample, bool Sequence)
    {
        long? tokens;

        /// <summary>n = Σ m: the rows that count.</summary>
        public long Tokens => tokens ??= Counted.sum().item<long>();

        public static Rows Of(Tensor logits, Batch batch, OutputTask? task, FisherKind kind)
        {
            var sequence = logits.dim() > 2;
            if (task is null && sequence)
                throw new NotSupportedException($"the Fisher of sequence logits {Shape(logits)} needs the task that reads them: pass CausalLmTask (position t scores token t + 1) or ClassificationTask (one class per position) as task");
            if (sequence && kind == FisherKind.Exact)
                throw new NotSupportedException($"the Exact Fisher of sequence logits {Shape(logits)} is an expectation over every label sequence, V^T = {logits.shape[^1]}^{logits.shape[1]} terms per sample; use FisherKind.Sampled (one draw per counted position, an unbiased estimate of the same per-token Fisher) or Empirical");
            var (rows, targets) = (task ?? OneClassPerSample).Rows(logits, batch);
            if (rows.dim() != 2 || targets.dim() != 1 || rows.shape[0] != targets.shape[0] || rows.shape[0] % batch.Size != 0)
                throw new InvalidOperationException($"the task's rows {Shape(rows)} and targets {Shape(targets)} are not k rows for each of the batch's {batch.Size} samples");
            return new Rows(rows.to(float32), targets, targets.ne(Batch.IgnoreIndex), rows.shape[0] / batch.Size, sequence);
        }
    }

    /// <summary>The labels whose log-likelihood is differentiated, one per row (0 where the row does not count): the
    /// targets (Empirical), draws ŷ_r ~ p_θ(·|row r) at the counted rows in a single <c>multinomial</c> call (Sampled),
    /// none (Exact sums over all classes).</summary>
    static Tensor? Labels(FisherKind kind, Rows rows, Generator? generator)
    {
        switch (kind)
        {
            case FisherKind.Empirical:
                return rows.Targets.masked_fill(rows.Counted.logical_not(), 0);
            case FisherKind.Sampled:
                var labels = zeros(rows.Targets.shape[0], dtype: int64);
                var at = rows.Counted.nonzero().squeeze(1);
                if (at.numel() > 0)
                    labels.index_copy_(0, at, multinomial(rows.Logits.detach().index_select(0, at).softmax(-1), 1, true, generator).squeeze(1));
                return labels;
            default:
                return null;
        }
    }

    /// <summary>log p_θ(y_r|·) at each row r for its label, 0 where the row does not count (no gradient reaches it).</summary>
    static Tensor CountedLogLikelihood(Tensor logp, Tensor labels, Tensor counted) =>
        logp.gather(1, labels.unsqueeze(1)).squeeze(1).masked_fill(counted.logical_not(), 0);

    /// <summary>
    /// Adds each sample's squared gradient to the sums of the layers routed to the identity, summed over the backward
    /// terms: the C classes weighted by p_θ(c|x_b) (Exact, classifiers only), or the labels with weight 1.
    /// On 2-D input Σ_b w_b (δ_b x_bᵀ)² = (S)ᵀ(X²) with S = Σ_terms w ⊙ G² formed first; on [B, T, in] input each term
    /// adds Σ_b w_b (δ_bᵀ X_b)² at once (<see cref="AddPositionwise"/>).
    /// </summary>
    static void AddByIdentity(Rows rows, Tensor? labels, FisherKind kind, IReadOnlyList<ExactLayer> layers,
        LinearCapture capture, IReadOnlyList<Tensor> sums)
    {
        if (layers.Count == 0) return;
        var calls = layers.Select(l => capture.Calls(l.Prefix)[0]).ToList();
        var outputs = calls.Select(c => c.Z).ToList();
        var weighted = new Tensor?[layers.Count];
        var logp = nn.functional.log_softmax(rows.Logits, -1);

        void AddTerm(Tensor loss, Tensor? weight, bool retain)
        {
            var g = autograd.grad(new[] { loss }, outputs, retain_graph: retain, allow_unused: true);
            for (var l = 0; l < layers.Count; l++)
            {
                if (g[l].IsInvalid) continue;
                if (calls[l].X.dim() > 2) { AddPositionwise(layers[l], g[l], calls[l].X, weight, sums); continue; }
                var g2 = g[l].to(float32).square();
                if (weight is not null) g2.mul_(weight.unsqueeze(1));
                weighted[l] = weighted[l] is { } s ? s.add_(g2) : g2;
            }
        }

        if (kind == FisherKind.Exact)
        {
            // One row per sample here (sequences are refused); a row that does not count weighs 0.
            var p = logp.detach().exp().mul_(rows.Counted.unsqueeze(1));
            var classes = logp.shape[1];
            for (long c = 0; c < classes; c++)
                AddTerm(logp.select(1, c).sum().neg(), p.select(1, c), c < classes - 1);
        }
        else AddTerm(CountedLogLikelihood(logp, labels!, rows.Counted).sum().neg(), null, false);

        for (var l = 0; l < layers.Count; l++)
        {
            if (weighted[l] is not { } s) continue;
            var layer = layers[l];
            if (layer.Weight is { } w)
                sums[w].addmm_(s.t(), calls[l].X.detach().to(float32).square(), 1, 1);
            if (layer.Bias is { } b) sums[b].add_(s.sum(dim: 0));
        }
    }

    /// <summary>Elements of the [chunk, out, in] per-sample weight gradients formed at once (64 MB in fp32).</summary>
    const long PerSampleElements = 1L << 24;

    /// <summary>
    /// A Linear on [B, T…, in]: sums[W] += Σ_b w_b (δ_bᵀ X_b)² and sums[b] += Σ_b w_b (Σₜ δ_bt)², with δ = ∂loss/∂Z and
    /// w_b the term's per-sample weight (1 when null). The [B, out, in] per-sample gradients are formed in chunks of
    /// samples so their memory stays bounded.
    /// </summary>
    static void AddPositionwise(ExactLayer layer, Tensor g, Tensor x, Tensor? weight, IReadOnlyList<Tensor> sums)
    {
        var samples = x.shape[0];
        var delta = g.to(float32).reshape(samples, -1, g.shape[^1]);
        if (layer.Weight is { } w)
        {
            var input = x.detach().to(float32).reshape(samples, -1, x.shape[^1]);
            var chunk = Math.Max(1, PerSampleElements / (delta.shape[2] * input.shape[2]));
            for (long start = 0; start < samples; start += chunk)
            {
                using var scope = NewDisposeScope();
                var n = Math.Min(chunk, samples - start);
                var perSample = delta.narrow(0, start, n).transpose(1, 2).bmm(input.narrow(0, start, n)).pow_(2);
                if (weight is not null) perSample.mul_(weight.narrow(0, start, n).view(-1, 1, 1));
                sums[w].add_(perSample.sum(dim: 0));
            }
        }
        if (layer.Bias is { } b)
        {
            var perSample = delta.sum(dim: 1).pow_(2);
            if (weight is not null) perSample.mul_(weight.unsqueeze(1));
            sums[b].add_(perSample.sum(dim: 0));
        }
    }

    /// <summary>
    /// The per-sample loop over <paramref name="parameters"/>: for each sample i a forward of it alone, then
    /// sums += Σ_c p_θ(c|xᵢ) (∇ log p_θ(c|xᵢ))² (Exact, C backward passes) or (∇ Σₜ mᵢₜ log p_θ(yᵢₜ|·))² for the given
    /// labels of its rows. A sample with no counted target adds nothing and is skipped.
    /// </summary>
    static void PerSample(nn.Module<Tensor, Tensor> model, Batch x, OutputTask? task, Tensor? labels, FisherKind kind,
        IList<Tensor> parameters, IReadOnlyList<Tensor> sums)
    {
        for (long i = 0; i < x.Size; i++)
        {
            using var scope = NewDisposeScope();
            var one = x.Narrow(i, 1);
            var rows = Rows.Of(ModelInput.Logits(model, one), one, task, kind);
            if (rows.Tokens == 0) continue;
            var logp = nn.functional.log_softmax(rows.Logits, 1);
            if (kind == FisherKind.Exact)
            {
                var p = logp[0].detach().exp();
                var classes = logp.shape[1];
                for (long c = 0; c < classes; c++)
                    AddSquares(autograd.grad(new[] { logp[0, c].neg() }, parameters, retain_graph: c < classes - 1, allow_unused: true),
                        sums, p[c]);
            }
            else
            {
                var own = labels!.narrow(0, i * rows.PerSample, rows.PerSample);
                AddSquares(autograd.grad(new[] { CountedLogLikelihood(logp, own, rows.Counted).sum().neg() }, parameters, allow_unused: true), sums);
            }
        }
    }

    /// <summary>
    /// Batched: sums += (∇θ (1/n) Σ_r −m_r log p_θ(y_r|·))², one backward of the batch's mean cross-entropy over its n
    /// counted targets (for a classifier, the mean over its B samples). A batch with no counted target adds nothing.
    /// </summary>
    static Rows AddBatchMeanSquare(Rows rows, IReadOnlyList<NamedParameter> parameters, IReadOnlyList<Tensor> sums)
    {
        if (rows.Tokens == 0) return rows;
        AddSquares(autograd.grad(new[] { nn.functional.cross_entropy(rows.Logits, rows.Targets, ignore_index: Batch.IgnoreIndex) },
            parameters.Select(p => p.Value).ToList(), allow_unused: true), sums);
        return rows;
    }

    /// <summary>(1/n) Σᵢ ∇θ −Σₜ mᵢₜ log p_θ(yᵢₜ|·), one backward per sample: the reference for <see cref="AddBatchMeanSquare"/>.</summary>
    static IList<Tensor> MeanOfPerSampleGradients(nn.Module<Tensor, Tensor> model, Batch x, OutputTask? task, Rows batchRows, IList<Tensor> parameters)
    {
        var means = parameters.Select(p => zeros(p.shape, dtype: float32)).ToList();
        for (long i = 0; i < x.Size; i++)
        {
            using var scope = NewDisposeScope();
            var one = x.Narrow(i, 1);
            var rows = Rows.Of(ModelInput.Logits(model, one), one, task, FisherKind.Batched);
            if (rows.Tokens == 0) continue;
            var logp = nn.functional.log_softmax(rows.Logits, 1);
            var labels = rows.Targets.masked_fill(rows.Counted.logical_not(), 0);
            var g = autograd.grad(new[] { CountedLogLikelihood(logp, labels, rows.Counted).sum().neg() }, parameters, allow_unused: true);
            for (var k = 0; k < g.Count; k++)
                if (!g[k].IsInvalid) means[k].add_(g[k].to(float32));
        }
        foreach (var m in means) m.div_(batchRows.Tokens);
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
    /// pass, on input whose first axis is the batch's samples, and whose tensors no other parameter name shares.
    /// Everything else gets the fallback and its reason.
    /// </summary>
    static Routes Route(nn.Module model, IReadOnlyList<NamedParameter> parameters, LinearCapture capture, long samples)
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
                    : LinearReason(capture.Calls(prefix), samples);
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
        // A layer with positions is worth the identity only when no per-sample loop runs: the loop's backward of each
        // sample crosses every layer above the deepest fallback parameter (an input embedding: all of them), so there it
        // yields Σₜ δ_bt x_btᵀ for the cost of the weight's gradient product, while the identity would add a batched
        // backward to Z and the [B, out, in] products. A 2-D layer's (G²)ᵀ(X²) costs one product, and stays.
        var needLoop = fallback.Count;
        if (needLoop > 0)
            foreach (var (prefix, (w, b)) in layers.Where(l => capture.Calls(l.Key)[0].X.dim() > 2).ToList())
            {
                var reason = $"its Linear sees {Shape(capture.Calls(prefix)[0].X)}: the weight is shared across positions, and the per-sample loop that {needLoop} other parameters need yields its per-sample gradient Σₜ δₜxₜᵀ for less than the batched δᵀX";
                foreach (var k in new[] { w, b }.OfType<int>())
                {
                    fallback[parameters[k].Name] = reason;
                    fallbackIndices.Add(k);
                }
                layers.Remove(prefix);
            }
        fallbackIndices.Sort();
        return new Routes(layers.Select(l => new ExactLayer(l.Key, l.Value.Weight, l.Value.Bias)).ToList(), fallback, fallbackIndices);
    }

    /// <summary>Why a Linear's calls do not fit the per-sample identity on a batch of <paramref name="samples"/>, or null
    /// when they do.</summary>
    static string? LinearReason(IReadOnlyList<(Tensor X, Tensor Z)> calls, long samples) => calls.Count switch
    {
        0 => "its Linear recorded no call: the model invokes it with forward(x), which bypasses TorchSharp's hooks (call(x) runs them), or does not use it",
        > 1 => $"its Linear runs {calls.Count} times per forward pass: the weight is shared across the calls",
        _ when calls[0].X.dim() < 2 || calls[0].X.shape[0] != samples || calls[0].Z.shape[0] != samples =>
            $"its Linear sees input {Shape(calls[0].X)} whose first axis is not the batch's {samples} samples: its rows cannot be grouped by sample",
        _ => null,
    };

    static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";

    static List<NamedParameter> Trainable(nn.Module model) =>
        model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => new NamedParameter(p.name, p.parameter)).ToList();

    static List<Tensor> Zeros(IReadOnlyList<NamedParameter> parameters) =>
        parameters.Select(p => zeros(p.Value.shape, dtype: float32)).ToList();

    /// <summary>Divides the sums by M (Batched) or by the counted targets Σ_b n_b (N for a classifier).</summary>
    static FisherResult Finish(FisherKind kind, IReadOnlyList<NamedParameter> parameters, IReadOnlyList<Tensor> sums,
        Counts counts, IReadOnlyDictionary<string, string> fallback)
    {
        var divisor = kind == FisherKind.Batched ? counts.Batches : counts.Tokens;
        var diagonal = new Dictionary<string, Tensor>();
        for (var k = 0; k < parameters.Count; k++) diagonal[parameters[k].Name] = sums[k].div_(divisor);
        return new FisherResult(kind, diagonal, counts.Samples, counts.Batches, fallback, counts.Sequences ? counts.Tokens : null);
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
        public void Check(LinearCapture capture, long samples)
        {
            foreach (var layer in Exact)
                if (LinearReason(capture.Calls(layer.Prefix), samples) is { } reason)
                    throw new InvalidOperationException($"Linear '{layer.Prefix}' changed how it is called between batches ({reason}); the Fisher's routing assumes one structure");
        }
    }
}
