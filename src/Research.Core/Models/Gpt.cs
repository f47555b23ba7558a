using Research.Abstractions;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Research.Core.Models;

/// <summary>
/// The shape of a <see cref="Gpt"/>: vocabulary size V, context length T_max, width d, attention heads H (d divisible
/// by H) and blocks L. Parameters: V·d + T_max·d + L·(12d² + 13d) + 2d in 2 + 12·L + 2 tensors — per block 2d + 2d
/// (two LayerNorms), 3d² + 3d (c_attn), d² + d (attn.c_proj), 4d² + 4d (c_fc), 4d² + d (mlp.c_proj); the output
/// projection is the token embedding, so it adds nothing.
/// </summary>
public sealed record GptShape(long Vocab, long MaxLen, long Width, long Heads, long Layers)
{
    /// <summary>GPT-2 "small" (Radford et al. 2019): 124,439,808 parameters.</summary>
    public static GptShape Gpt2Small { get; } = new(Vocab: 50257, MaxLen: 1024, Width: 768, Heads: 12, Layers: 12);

    /// <summary>
    /// The GPT of <c>research bench step</c>: the byte vocabulary (256 bytes and one end-of-text id), 128 positions, width
    /// 256 in 4 heads of 64, 4 blocks — 3,258,112 parameters in 52 tensors, trained on batches of
    /// <see cref="BenchmarkBatch"/> × 128 tokens.
    /// </summary>
    public static GptShape Benchmark { get; } = new(Vocab: 257, MaxLen: 128, Width: 256, Heads: 4, Layers: 4);

    /// <summary>Sequences per batch for <see cref="Benchmark"/>.</summary>
    public const int BenchmarkBatch = 8;

    /// <summary>The number of parameter tensors: two embeddings, 12 per block, the final LayerNorm's two.</summary>
    public long TensorCount => 2 + 12 * Layers + 2;

    /// <summary>The number of scalar parameters (formula in the type's summary).</summary>
    public long ParameterCount => Vocab * Width + MaxLen * Width + Layers * (12 * Width * Width + 13 * Width) + 2 * Width;

    public override string ToString() =>
        $"GPT d {Width}, {Layers} layers, {Heads} heads, vocabulary {Vocab}, {MaxLen} positions ({ParameterCount:N0} parameters)";

    /// <summary>
    /// The useful floating-point operations of one training step (forward and backward) per token, at context length
    /// <paramref name="context"/>: 6·N + 12·L·T·d, with N = 12·L·d² + V·d the weights that enter a matrix product.
    /// </summary>
    /// <remarks>
    /// A weight costs 2 FLOPs per token in the forward pass (a multiply and an add) and 4 in the backward (the gradients of
    /// its input and of itself): 6·N (Kaplan et al. 2020, "Scaling Laws for Neural Language Models", §2.1, C ≈ 6N per
    /// token). N counts each block's c_attn 3d², attn.c_proj d², c_fc 4d², mlp.c_proj 4d² (Kaplan's non-embedding
    /// 12·L·d² with d_ff = 4d) and the output projection V·d — the tied token embedding is a product there, unlike the
    /// position table and the input embedding, which are look-ups; biases and LayerNorms are element-wise and left out.
    /// Attention adds Q·Kᵀ and the weighted sum of V, 2·T·d each per token and layer forward, ×3 with the backward:
    /// 12·L·T·d (Chowdhery et al. 2022, "PaLM", Appendix B, 6N + 12·L·H·Q·T with H·Q = d), counting the full T×T
    /// score matrix as PaLM does although the causal mask makes half of it unused.
    /// </remarks>
    public double TrainingFlopsPerToken(long context) =>
        6.0 * (12.0 * Layers * Width * Width + (double)Vocab * Width) + 12.0 * Layers * context * Width;
}

/// <summary>
/// A decoder-only transformer in GPT-2's layout (Radford et al. 2019): h₀ = wte[x] + wpe[0..T), then per block
/// h ← h + Attn(LN₁(h)), h ← h + MLP(LN₂(h)) with causal self-attention and GELU (tanh approximation), and
/// logits = LN_f(h)·wteᵀ — the output projection is the token embedding itself (tied: one tensor, trained by both uses).
/// Input: int64 token ids [B, T], T ≤ <see cref="GptShape.MaxLen"/>; output: logits [B, T, V], position t scoring token
/// t + 1 (<see cref="Tasks.CausalLmTask"/> shifts). Right padding needs no mask: no position attends to a later one.
/// </summary>
/// <remarks>
/// Parameter names are GPT-2's without Hugging Face's <c>transformer.</c> prefix, in this order: <c>wte.weight</c> [V, d],
/// <c>wpe.weight</c> [T_max, d], per block <c>h.{i}.ln_1.{weight,bias}</c>, <c>h.{i}.attn.c_attn.{weight,bias}</c>
/// [3d, d] (Q, K, V stacked), <c>h.{i}.attn.c_proj.{weight,bias}</c>, <c>h.{i}.ln_2.{weight,bias}</c>,
/// <c>h.{i}.mlp.c_fc.{weight,bias}</c> [4d, d], <c>h.{i}.mlp.c_proj.{weight,bias}</c> [d, 4d], then
/// <c>ln_f.{weight,bias}</c>. Weights are TorchSharp Linear's [out, in]: Hugging Face's Conv1D stores the transpose
/// (<see cref="Gpt2Layout"/> converts). Dropout (GPT-2's embd/attn/resid_pdrop, here one rate) acts in training mode
/// only and draws from the process-global generator.
/// With <c>classes</c> &gt; 0 the model is a sequence classifier instead: a linear <c>head</c> [classes, d] on the final
/// hidden state of each sequence's last token (the only position that has read the whole text under causal attention;
/// Hugging Face's GPT2ForSequenceClassification pools the same way), found from the attention mask.
/// </remarks>
public sealed class Gpt : nn.Module<Tensor, Tensor>, IBatchModule, IPrefixLanguageModel
{
    readonly Embedding wte;
    readonly Embedding wpe;
    readonly ModuleList<GptBlock> h = new();
    readonly LayerNorm ln_f;
    readonly Linear? head;
    readonly double dropout;

    public GptShape Shape { get; }

    /// <summary>Classes of the head; 0 for a language model (tied output embedding).</summary>
    public long Classes { get; }

    /// <summary>
    /// Builds the modules. Their construction-time values come from the process-global generator, so call
    /// <see cref="Initialise"/> (or use <see cref="Create"/>) before relying on them.
    /// </summary>
    /// <param name="shape">The sizes.</param>
    /// <param name="dropout">Dropout rate on the embeddings, the attention weights and each residual branch.</param>
    /// <param name="layerNormEps">ε of every LayerNorm (GPT-2: 1e-5).</param>
    /// <param name="classes">Outputs of a classification head; 0 for a language model.</param>
    public Gpt(GptShape shape, double dropout = 0.0, double layerNormEps = 1e-5, long classes = 0) : base("gpt")
    {
        if (shape.Vocab < 1 || shape.MaxLen < 1 || shape.Width < 1 || shape.Heads < 1 || shape.Layers < 0)
            throw new ArgumentException($"a GPT needs positive sizes: {shape}");
        if (shape.Width % shape.Heads != 0) throw new ArgumentException($"width {shape.Width} is not divisible by {shape.Heads} heads");
        if (dropout is < 0 or >= 1) throw new ArgumentException($"dropout {dropout} is outside [0, 1)");
        Shape = shape;
        this.dropout = dropout;
        wte = nn.Embedding(shape.Vocab, shape.Width);
        wpe = nn.Embedding(shape.MaxLen, shape.Width);
        for (var i = 0; i < shape.Layers; i++) h.Add(new GptBlock(shape.Width, shape.Heads, dropout, layerNormEps));
        ln_f = nn.LayerNorm(shape.Width, layerNormEps);
        if (classes < 0) throw new ArgumentException($"classes must be ≥ 0 (0: a language model), not {classes}");
        Classes = classes;
        if (classes > 0) head = nn.Linear(shape.Width, classes);
        RegisterComponents();
    }

    /// <summary>A model of the given shape, initialised by <see cref="Initialise"/> from <paramref name="generator"/>.</summary>
    public static Gpt Create(GptShape shape, Generator generator, double dropout = 0.0, double layerNormEps = 1e-5, long classes = 0)
    {
        var model = new Gpt(shape, dropout, layerNormEps, classes);
        model.Initialise(generator);
        return model;
    }

    /// <summary>
    /// GPT-2's initialisation, drawn from <paramref name="generator"/> alone (never the process-global RNG) in parameter
    /// order: embeddings and Linear weights N(0, 0.02²), except the residual projections (<c>attn.c_proj</c>,
    /// <c>mlp.c_proj</c>) N(0, (0.02/√(2L))²) so the residual stream's variance does not grow with depth (Radford et al.
    /// 2019, §2.3); biases 0; LayerNorm gain 1 and shift 0. Draws are float32 whatever the model's dtype.
    /// </summary>
    public void Initialise(Generator generator)
    {
        using var _ = NewDisposeScope();
        using var __ = no_grad();
        var residualStd = 0.02 / Math.Sqrt(2.0 * Math.Max(1, Shape.Layers));
        var layerNorms = named_modules().Where(m => m.module is LayerNorm).Select(m => m.name + ".").ToList();
        foreach (var (name, p) in named_parameters())
        {
            if (layerNorms.Any(name.StartsWith)) p.fill_(name.EndsWith(".weight") ? 1 : 0);
            else if (name.EndsWith(".bias")) p.zero_();
            else p.copy_(randn(p.shape, dtype: ScalarType.Float32, generator: generator).mul_(name.EndsWith("c_proj.weight") ? residualStd : 0.02));
        }
    }

    /// <summary>The final hidden states LN_f(h) [B, T, d]: what the output projection reads (features for probes).</summary>
    public Tensor Features(Tensor tokens)
    {
        if (tokens.dim() != 2) throw new ArgumentException($"a GPT reads token ids [B, T]; got a tensor of shape [{string.Join(", ", tokens.shape)}]");
        return FeaturesOfEmbeddings(wte.call(tokens));
    }

    /// <summary>The final hidden states [B, T, d] of input embeddings [B, T, d]: the positions wpe[0..T) are added to them
    /// as to the token embeddings in <see cref="Features"/>.</summary>
    public Tensor FeaturesOfEmbeddings(Tensor embeddings)
    {
        var length = embeddings.shape[1];
        if (length > Shape.MaxLen) throw new ArgumentException($"sequence length {length} exceeds the model's {Shape.MaxLen} positions");
        using var positions = arange(length, dtype: ScalarType.Int64, device: embeddings.device);
        var x = nn.functional.dropout(embeddings.add(wpe.call(positions)), dropout, training);
        foreach (var block in h) x = block.call(x);
        return ln_f.call(x);
    }

    long IPrefixLanguageModel.Width => Shape.Width;
    long IPrefixLanguageModel.Vocab => Shape.Vocab;
    long IPrefixLanguageModel.MaxPositions => Shape.MaxLen;
    Tensor IPrefixLanguageModel.EmbedTokens(Tensor tokens) => wte.call(tokens);

    Tensor IPrefixLanguageModel.LogitsOfEmbeddings(Tensor embeddings) => head is null
        ? nn.functional.linear(FeaturesOfEmbeddings(embeddings), wte.weight!)
        : throw new InvalidOperationException($"this GPT classifies ({Classes} classes): only a language model continues a prefix");

    /// <summary>Logits [B, T, V] = LN_f(h)·wteᵀ; with a head, [B, classes] from each row's last position.</summary>
    public override Tensor forward(Tensor tokens) => head is null
        ? nn.functional.linear(Features(tokens), wte.weight!)
        : head.call(Features(tokens).select(1, -1));

    /// <summary>A batch's logits: [B, T, V] for a language model (right padding needs no mask); with a head, [B, classes]
    /// from the hidden state at each row's last token (position Σ_t mask_t − 1).</summary>
    public Tensor Logits(Batch batch)
    {
        var tokens = batch[Batch.InputIds];
        if (head is null) return forward(tokens);
        if (!batch.TryGetValue(Batch.AttentionMask, out var mask)) return forward(tokens);
        using var scope = NewDisposeScope();
        var features = Features(tokens);
        var last = mask.sum(1).sub(1).clamp_min(0).view(-1, 1, 1).expand(-1, 1, features.shape[2]);
        return head.call(features.gather(1, last).squeeze(1)).MoveToOuterDisposeScope();
    }
}

/// <summary>One pre-LayerNorm block: h + Attn(LN₁(h)), then + MLP(LN₂(·)); parameters <c>ln_1, attn, ln_2, mlp</c>.</summary>
public sealed class GptBlock : nn.Module<Tensor, Tensor>
{
    readonly LayerNorm ln_1;
    readonly CausalSelfAttention attn;
    readonly LayerNorm ln_2;
    readonly GptMlp mlp;

    public GptBlock(long d, long heads, double dropout, double layerNormEps) : base("block")
    {
        ln_1 = nn.LayerNorm(d, layerNormEps);
        attn = new CausalSelfAttention(d, heads, dropout);
        ln_2 = nn.LayerNorm(d, layerNormEps);
        mlp = new GptMlp(d, dropout);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        x = x.add(attn.call(ln_1.call(x)));
        return x.add(mlp.call(ln_2.call(x)));
    }
}

/// <summary>
/// Causal multi-head self-attention: [Q K V] = x·W_c_attnᵀ + b; per head softmax(Q Kᵀ/√(d/H) + M) V with
/// M[s, t] = −∞ for t &gt; s (a position never sees a later one); heads concatenated, then c_proj. The kernel is
/// libtorch's fused <c>scaled_dot_product_attention</c> with its causal flag (TorchSharp 0.107 spells the argument
/// <c>is_casual</c>); its dropout acts on the attention weights, in training mode only.
/// </summary>
public sealed class CausalSelfAttention : nn.Module<Tensor, Tensor>
{
    readonly Linear c_attn;
    readonly Linear c_proj;
    readonly long heads;
    readonly double dropout;

    public CausalSelfAttention(long d, long heads, double dropout = 0.0) : base("attn")
    {
        if (d % heads != 0) throw new ArgumentException($"width {d} is not divisible by {heads} heads");
        c_attn = nn.Linear(d, 3 * d);
        c_proj = nn.Linear(d, d);
        this.heads = heads;
        this.dropout = dropout;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        var (b, t, d) = (x.shape[0], x.shape[1], x.shape[2]);
        // [B, T, 3d] → [3, B, H, T, d/H]: one matmul for Q, K and V (stacked in that order, as GPT-2 stores them).
        var parts = c_attn.call(x).view(b, t, 3, heads, d / heads).permute(2, 0, 3, 1, 4);
        var y = nn.functional.scaled_dot_product_attention(parts[0], parts[1], parts[2], p: training ? dropout : 0.0, is_casual: true);
        return nn.functional.dropout(c_proj.call(y.transpose(1, 2).reshape(b, t, d)), dropout, training);
    }
}

/// <summary>GPT-2's position-wise MLP: c_proj(GELU_tanh(c_fc(x))), width d → 4d → d.</summary>
public sealed class GptMlp : nn.Module<Tensor, Tensor>
{
    readonly Linear c_fc;
    readonly Linear c_proj;
    readonly double dropout;

    public GptMlp(long d, double dropout = 0.0) : base("mlp")
    {
        c_fc = nn.Linear(d, 4 * d);
        c_proj = nn.Linear(4 * d, d);
        this.dropout = dropout;
        RegisterComponents();
    }

    /// <summary>GELU as GPT-2 computes it: ½x(1 + tanh(√(2/π)(x + 0.044715x³))), not the exact erf form.</summary>
    public override Tensor forward(Tensor x) =>
        nn.functional.dropout(c_proj.call(nn.functional.gelu(c_fc.call(x), GELU.Approximate.tanh)), dropout, training);
}
