using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Research.Core.Models;

/// <summary>
/// The shape of a <see cref="TinyTransformer"/>: vocabulary size V, longest sequence T_max, width d, attention
/// heads H (d divisible by H), blocks L and classes. Parameters: V·d + T_max·d + L·(12d² + 13d) + 2d + d·classes + classes,
/// in 2 + 12·L + 4 tensors.
/// </summary>
public sealed record TinyTransformerShape(long Vocab, long MaxLen, long Width, long Heads, long Layers, long Classes)
{
    /// <summary>
    /// A "transformer-sized" step for benchmarks: 4.2 M parameters (1 M of them in the embedding), 54 tensors.
    /// Measured with the plain TorchSharp loop (forward, backward, AdamW) on 2 Cascade Lake cores and 2 intra-op
    /// threads: 65–75 ms per batch of <see cref="BenchmarkBatch"/> × 64 tokens (~130 ms at 16 sequences, ~240 ms at 32).
    /// </summary>
    public static TinyTransformerShape Benchmark { get; } = new(Vocab: 4096, MaxLen: 64, Width: 256, Heads: 4, Layers: 4, Classes: 10);

    /// <summary>Sequences per batch for <see cref="Benchmark"/> (each of <see cref="MaxLen"/> tokens).</summary>
    public const int BenchmarkBatch = 8;

    /// <summary>
    /// Many small tensors (12 blocks of width 64: 150 tensors, 0.64 M parameters), so that an optimizer step is
    /// dominated by per-tensor overhead rather than arithmetic.
    /// </summary>
    public static TinyTransformerShape ManyTensors { get; } = new(Vocab: 512, MaxLen: 32, Width: 64, Heads: 4, Layers: 12, Classes: 10);

    /// <summary>The number of parameter tensors: embedding, positions, 12 per block, final LayerNorm (2), head (2).</summary>
    public long TensorCount => 2 + 12 * Layers + 4;

    /// <summary>The number of scalar parameters (formula in the type's summary).</summary>
    public long ParameterCount => Vocab * Width + MaxLen * Width + Layers * (12 * Width * Width + 13 * Width)
        + 2 * Width + Width * Classes + Classes;
}

/// <summary>
/// A pre-LayerNorm transformer encoder for sequence classification (GPT-2's block layout, without a causal mask):
/// h₀ = E[x] + P[0..T), h ← h + Attn(LN₁(h)), h ← h + MLP(LN₂(h)) for each block, logits = head(mean_t LN_f(h)).
/// Input: int64 token ids [B, T] with T ≤ <see cref="TinyTransformerShape.MaxLen"/>; output: logits [B, classes].
/// Parameter names, in order: <c>pos</c> (a module's own parameters precede its children's), <c>embed.weight</c>, <c>blocks.{i}.ln1.{weight,bias}</c>,
/// <c>blocks.{i}.attn.{qkv,proj}.{weight,bias}</c>, <c>blocks.{i}.ln2.{weight,bias}</c>,
/// <c>blocks.{i}.mlp.{fc,out}.{weight,bias}</c>, <c>ln_f.{weight,bias}</c>, <c>head.{weight,bias}</c>.
/// </summary>
public sealed class TinyTransformer : nn.Module<Tensor, Tensor>
{
    readonly Embedding embed;
    readonly Parameter pos;
    readonly ModuleList<TransformerBlock> blocks = new();
    readonly LayerNorm ln_f;
    readonly Linear head;

    public TinyTransformerShape Shape { get; }

    /// <summary>
    /// Builds the modules. Their construction-time values come from the process-global generator, so call
    /// <see cref="Initialise"/> (or use <see cref="Create"/>) before relying on them.
    /// </summary>
    public TinyTransformer(long vocab, long maxLen, long d, long heads, long layers, long classes) : base("tiny_transformer")
    {
        if (d % heads != 0) throw new ArgumentException($"width {d} is not divisible by {heads} heads");
        Shape = new TinyTransformerShape(vocab, maxLen, d, heads, layers, classes);
        embed = nn.Embedding(vocab, d);
        pos = new Parameter(zeros(maxLen, d));
        for (var i = 0; i < layers; i++) blocks.Add(new TransformerBlock(d, heads));
        ln_f = nn.LayerNorm(d);
        head = nn.Linear(d, classes);
        RegisterComponents();
    }

    /// <summary>A model of the given shape, initialised by <see cref="Initialise"/> from <paramref name="generator"/>.</summary>
    public static TinyTransformer Create(TinyTransformerShape shape, Generator generator)
    {
        var model = new TinyTransformer(shape.Vocab, shape.MaxLen, shape.Width, shape.Heads, shape.Layers, shape.Classes);
        model.Initialise(generator);
        return model;
    }

    /// <summary>The <see cref="TinyTransformerShape.Benchmark"/> model.</summary>
    public static TinyTransformer BenchmarkSized(Generator generator) => Create(TinyTransformerShape.Benchmark, generator);

    /// <summary>The <see cref="TinyTransformerShape.ManyTensors"/> model.</summary>
    public static TinyTransformer ManyTensors(Generator generator) => Create(TinyTransformerShape.ManyTensors, generator);

    /// <summary>
    /// Draws every parameter from <paramref name="generator"/> alone (never the process-global RNG), in
    /// parameter order: Linear layers PyTorch's default U(±1/√fan_in) (<see cref="Init.LinearDefault"/>),
    /// token and position embeddings N(0, 0.02²) (GPT-2), LayerNorm gain 1 and shift 0.
    /// </summary>
    public void Initialise(Generator generator)
    {
        var linears = named_modules().Where(m => m.module is Linear).Select(m => m.name).ToList();
        Init.LinearDefault(this, generator, linears);
        using var _ = NewDisposeScope();
        using var __ = no_grad();
        foreach (var p in new[] { embed.weight!, pos })
            p.copy_(randn(p.shape, generator: generator).mul_(0.02));
        foreach (var (_, m) in named_modules())
            if (m is LayerNorm ln) { ln.weight!.fill_(1); ln.bias!.zero_(); }
    }

    public override Tensor forward(Tensor tokens)
    {
        var length = tokens.shape[1];
        if (length > Shape.MaxLen) throw new ArgumentException($"sequence length {length} exceeds the model's {Shape.MaxLen} positions");
        var h = embed.call(tokens).add(pos.narrow(0, 0, length));
        foreach (var block in blocks) h = block.call(h);
        return head.call(ln_f.call(h).mean([1]));
    }
}

/// <summary>One pre-LayerNorm block: h + Attn(LN₁(h)), then + MLP(LN₂(·)).</summary>
public sealed class TransformerBlock : nn.Module<Tensor, Tensor>
{
    readonly LayerNorm ln1;
    readonly SelfAttention attn;
    readonly LayerNorm ln2;
    readonly FeedForward mlp;

    public TransformerBlock(long d, long heads) : base("block")
    {
        ln1 = nn.LayerNorm(d);
        attn = new SelfAttention(d, heads);
        ln2 = nn.LayerNorm(d);
        mlp = new FeedForward(d);
        RegisterComponents();
    }

    public override Tensor forward(Tensor h)
    {
        h = h.add(attn.call(ln1.call(h)));
        return h.add(mlp.call(ln2.call(h)));
    }
}

/// <summary>
/// Multi-head self-attention without a mask (Vaswani et al. 2017): [Q K V] = x·W_qkv + b, per head
/// softmax(Q Kᵀ / √(d/H)) V, heads concatenated, then projected. The attention kernel is libtorch's
/// <c>scaled_dot_product_attention</c>, which computes exactly that formula.
/// </summary>
public sealed class SelfAttention : nn.Module<Tensor, Tensor>
{
    readonly Linear qkv;
    readonly Linear proj;
    readonly long heads;

    public SelfAttention(long d, long heads) : base("attn")
    {
        qkv = nn.Linear(d, 3 * d);
        proj = nn.Linear(d, d);
        this.heads = heads;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        var (b, t, d) = (x.shape[0], x.shape[1], x.shape[2]);
        // [B, T, 3d] → [3, B, H, T, d/H]: one matmul for Q, K and V, then a view per head.
        var parts = qkv.call(x).view(b, t, 3, heads, d / heads).permute(2, 0, 3, 1, 4);
        var y = nn.functional.scaled_dot_product_attention(parts[0], parts[1], parts[2]);
        return proj.call(y.transpose(1, 2).reshape(b, t, d));
    }
}

/// <summary>The position-wise MLP: out(GELU(fc(x))), width d → 4d → d.</summary>
public sealed class FeedForward : nn.Module<Tensor, Tensor>
{
    readonly Linear fc;
    readonly Linear @out;

    public FeedForward(long d) : base("mlp")
    {
        fc = nn.Linear(d, 4 * d);
        @out = nn.Linear(4 * d, d);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => @out.call(nn.functional.gelu(fc.call(x)));
}
