using Research.Abstractions;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Research.Core.Models;

/// <summary>
/// A Llama-family decoder (Touvron et al. 2023; Hugging Face's <c>LlamaForCausalLM</c>, and Qwen2's and Mistral's, which
/// differ in their biases only): h₀ = embed_tokens[x], then per layer h ← h + o_proj(Attn(RoPE(q), RoPE(k), v)) on
/// RMSNorm(h) and h ← h + down(silu(gate(·))·up(·)) on RMSNorm(h), and logits = lm_head(RMSNorm(h)) — lm_head the token
/// embedding itself when <see cref="LlamaConfig.TieWordEmbeddings"/>. Input: int64 token ids [B, T]; output: logits
/// [B, T, V], position t scoring token t + 1. Right padding needs no mask (causal attention, no learned positions).
/// </summary>
/// <remarks>
/// Parameter names are Hugging Face's exactly, so a checkpoint of this model is a file in its layout:
/// <c>model.embed_tokens.weight</c> [V, d]; per layer <c>model.layers.{i}.self_attn.{q,k,v,o}_proj.weight</c> (q [H·h, d],
/// k and v [K·h, d], o [d, H·h]; Qwen2's q/k/v <c>.bias</c>), <c>model.layers.{i}.mlp.{gate,up,down}_proj.weight</c>,
/// <c>model.layers.{i}.input_layernorm.weight</c>, <c>model.layers.{i}.post_attention_layernorm.weight</c>;
/// <c>model.norm.weight</c>; <c>lm_head.weight</c> [V, d] when untied. With <c>classes</c> &gt; 0 the model classifies
/// instead: a linear <c>head</c> on each sequence's last token's final hidden state (as <see cref="Gpt"/>), and no lm_head.
/// </remarks>
public sealed class Llama : nn.Module<Tensor, Tensor>, IBatchModule, IPrefixLanguageModel
{
    readonly LlamaBody model;
    readonly Linear? lm_head;
    readonly Linear? head;

    public LlamaConfig Config { get; }

    /// <summary>Classes of the head; 0 for a language model.</summary>
    public long Classes { get; }

    /// <summary>Builds the modules; call <see cref="Initialise"/> (or use <see cref="Create"/>) before relying on their values.</summary>
    public Llama(LlamaConfig config, long classes = 0) : base("llama")
    {
        if (config.Problems().FirstOrDefault() is { } problem) throw new ArgumentException($"a Llama of {config}: {problem}");
        if (classes < 0) throw new ArgumentException($"classes must be ≥ 0 (0: a language model), not {classes}");
        Config = config;
        Classes = classes;
        model = new LlamaBody(config);
        if (classes > 0) head = nn.Linear(config.Hidden, classes);
        else if (!config.TieWordEmbeddings) lm_head = nn.Linear(config.Hidden, config.Vocab, hasBias: false);
        RegisterComponents();
    }

    /// <summary>A model of <paramref name="config"/>, initialised by <see cref="Initialise"/> from <paramref name="generator"/>.</summary>
    public static Llama Create(LlamaConfig config, Generator generator, long classes = 0)
    {
        var llama = new Llama(config, classes);
        llama.Initialise(generator);
        return llama;
    }

    /// <summary>
    /// Hugging Face's <c>LlamaPreTrainedModel._init_weights</c>, drawn from <paramref name="generator"/> alone in parameter
    /// order: every Linear and embedding weight N(0, 0.02²) (<c>initializer_range</c>), biases 0, RMSNorm gains 1. Draws
    /// are float32 whatever the model's dtype.
    /// </summary>
    public void Initialise(Generator generator)
    {
        using var _ = NewDisposeScope();
        using var __ = no_grad();
        foreach (var (name, p) in named_parameters())
        {
            if (name.EndsWith("layernorm.weight") || name == "model.norm.weight") p.fill_(1);
            else if (name.EndsWith(".bias")) p.zero_();
            else p.copy_(randn(p.shape, dtype: ScalarType.Float32, generator: generator).mul_(0.02));
        }
    }

    /// <summary>The final hidden states RMSNorm(h) [B, T, d]: what the output projection reads.</summary>
    public Tensor Features(Tensor tokens) => model.call(tokens);

    long IPrefixLanguageModel.Width => Config.Hidden;
    long IPrefixLanguageModel.Vocab => Config.Vocab;
    long IPrefixLanguageModel.MaxPositions => Config.MaxPositions;
    Tensor IPrefixLanguageModel.EmbedTokens(Tensor tokens) => model.Embed(tokens);

    Tensor IPrefixLanguageModel.LogitsOfEmbeddings(Tensor embeddings)
    {
        if (head is not null) throw new InvalidOperationException($"this Llama classifies ({Classes} classes): only a language model continues a prefix");
        var features = model.FeaturesOfEmbeddings(embeddings);
        return lm_head is not null ? lm_head.call(features) : nn.functional.linear(features, model.EmbedTokens);
    }

    /// <summary>Logits [B, T, V] (lm_head, or the token embedding when tied); with a head, [B, classes] from the last position.</summary>
    public override Tensor forward(Tensor tokens) =>
        head is not null ? head.call(Features(tokens).select(1, -1))
        : lm_head is not null ? lm_head.call(Features(tokens))
        : nn.functional.linear(Features(tokens), model.EmbedTokens);

    /// <summary>A batch's logits: [B, T, V] for a language model; with a head, [B, classes] at each row's last token
    /// (position Σ_t mask_t − 1).</summary>
    public Tensor Logits(Batch batch)
    {
        var tokens = batch[Batch.InputIds];
        if (head is null || !batch.TryGetValue(Batch.AttentionMask, out var mask)) return forward(tokens);
        using var scope = NewDisposeScope();
        var features = Features(tokens);
        var last = mask.sum(1).sub(1).clamp_min(0).view(-1, 1, 1).expand(-1, 1, features.shape[2]);
        return head.call(features.gather(1, last).squeeze(1)).MoveToOuterDisposeScope();
    }
}

/// <summary>Hugging Face's <c>LlamaModel</c>: <c>embed_tokens</c>, <c>layers</c>, <c>norm</c>.</summary>
public sealed class LlamaBody : nn.Module<Tensor, Tensor>
{
    readonly Embedding embed_tokens;
    readonly ModuleList<LlamaDecoderLayer> layers = new();
    readonly RmsNorm norm;
    readonly LlamaConfig config;

    public LlamaBody(LlamaConfig config) : base("model")
    {
        this.config = config;
        embed_tokens = nn.Embedding(config.Vocab, config.Hidden);
        for (var i = 0; i < config.Layers; i++) layers.Add(new LlamaDecoderLayer(config));
        norm = new RmsNorm(config.Hidden, config.RmsNormEps);
        RegisterComponents();
    }

    /// <summary>The token embedding [V, d] (the output projection of a tied model).</summary>
    public Tensor EmbedTokens => embed_tokens.weight!;

    public override Tensor forward(Tensor tokens)
    {
        if (tokens.dim() != 2) throw new ArgumentException($"a Llama reads token ids [B, T]; got a tensor of shape [{string.Join(", ", tokens.shape)}]");
        return FeaturesOfEmbeddings(embed_tokens.call(tokens));
    }

    /// <summary>The token embeddings [B, T, d] of ids [B, T].</summary>
    public Tensor Embed(Tensor tokens) => embed_tokens.call(tokens);

    /// <summary>RMSNorm(h) [B, T, d] of input embeddings [B, T, d], the rotary angles counted from the first of them.</summary>
    public Tensor FeaturesOfEmbeddings(Tensor x)
    {
        var length = x.shape[1];
        if (length > config.MaxPositions) throw new ArgumentException($"sequence length {length} exceeds the model's {config.MaxPositions} positions (max_position_embeddings)");
        if (config.SlidingWindow > 0 && length > config.SlidingWindow)
            throw new ArgumentException($"sequence length {length} exceeds the sliding attention window {config.SlidingWindow}, which this model does not implement");
        var (cos, sin) = Rotary.CosSin(length, config.HeadWidth, config.RopeTheta, x.dtype, x.device);
        foreach (var layer in layers) x = layer.call(x, cos, sin);
        return norm.call(x);
    }
}

/// <summary>One pre-norm layer: h + self_attn(input_layernorm(h)), then + mlp(post_attention_layernorm(·)).</summary>
public sealed class LlamaDecoderLayer : nn.Module<Tensor, Tensor, Tensor, Tensor>
{
    readonly LlamaAttention self_attn;
    readonly LlamaMlp mlp;
    readonly RmsNorm input_layernorm;
    readonly RmsNorm post_attention_layernorm;

    public LlamaDecoderLayer(LlamaConfig config) : base("layer")
    {
        self_attn = new LlamaAttention(config);
        mlp = new LlamaMlp(config);
        input_layernorm = new RmsNorm(config.Hidden, config.RmsNormEps);
        post_attention_layernorm = new RmsNorm(config.Hidden, config.RmsNormEps);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, Tensor cos, Tensor sin)
    {
        x = x.add(self_attn.call(input_layernorm.call(x), cos, sin));
        return x.add(mlp.call(post_attention_layernorm.call(x)));
    }
}

/// <summary>
/// Causal grouped-query attention with rotary positions: q = q_proj(x) in H heads, k and v in K heads of the same width h;
/// q and k rotated (<see cref="Rotary.Apply"/>), each key/value head repeated H / K times (query head j reads key/value
/// head ⌊j·K/H⌋, Hugging Face's <c>repeat_kv</c>), then per head softmax(q·kᵀ/√h + M)·v with M = −∞ above the diagonal,
/// heads concatenated and <c>o_proj</c>. The kernel is libtorch's <c>scaled_dot_product_attention</c> with its causal flag.
/// </summary>
public sealed class LlamaAttention : nn.Module<Tensor, Tensor, Tensor, Tensor>
{
    readonly Linear q_proj;
    readonly Linear k_proj;
    readonly Linear v_proj;
    readonly Linear o_proj;
    readonly long heads, kvHeads, headWidth;

    public LlamaAttention(LlamaConfig c) : base("self_attn")
    {
        (heads, kvHeads, headWidth) = (c.Heads, c.KvHeads, c.HeadWidth);
        q_proj = nn.Linear(c.Hidden, heads * headWidth, hasBias: c.QkvBias);
        k_proj = nn.Linear(c.Hidden, kvHeads * headWidth, hasBias: c.QkvBias);
        v_proj = nn.Linear(c.Hidden, kvHeads * headWidth, hasBias: c.QkvBias);
        o_proj = nn.Linear(heads * headWidth, c.Hidden, hasBias: c.OutputBias);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, Tensor cos, Tensor sin)
    {
        var (b, t) = (x.shape[0], x.shape[1]);
        var q = Rotary.Apply(q_proj.call(x).view(b, t, heads, headWidth).transpose(1, 2), cos, sin);
        var k = Rotary.Apply(k_proj.call(x).view(b, t, kvHeads, headWidth).transpose(1, 2), cos, sin);
        var v = v_proj.call(x).view(b, t, kvHeads, headWidth).transpose(1, 2);
        if (kvHeads != heads)
        {
            // [B, K, T, h] → [B, K, H/K, T, h] → [B, H, T, h]: each key/value head serves H/K consecutive query heads.
            var group = heads / kvHeads;
            k = k.unsqueeze(2).expand(b, kvHeads, group, t, headWidth).reshape(b, heads, t, headWidth);
            v = v.unsqueeze(2).expand(b, kvHeads, group, t, headWidth).reshape(b, heads, t, headWidth);
        }
        var y = nn.functional.scaled_dot_product_attention(q, k, v, is_casual: true);
        return o_proj.call(y.transpose(1, 2).reshape(b, t, heads * headWidth));
    }
}

/// <summary>The SwiGLU feed-forward (Shazeer 2020): down_proj(silu(gate_proj(x)) · up_proj(x)), silu(z) = z·σ(z).</summary>
public sealed class LlamaMlp : nn.Module<Tensor, Tensor>
{
    readonly Linear gate_proj;
    readonly Linear up_proj;
    readonly Linear down_proj;

    public LlamaMlp(LlamaConfig c) : base("mlp")
    {
        gate_proj = nn.Linear(c.Hidden, c.Intermediate, hasBias: c.MlpBias);
        up_proj = nn.Linear(c.Hidden, c.Intermediate, hasBias: c.MlpBias);
        down_proj = nn.Linear(c.Intermediate, c.Hidden, hasBias: c.MlpBias);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => down_proj.call(nn.functional.silu(gate_proj.call(x)).mul(up_proj.call(x)));
}

/// <summary>
/// RMSNorm (Zhang &amp; Sennrich 2019): weight · x / √(mean(x²) + ε) over the last dimension, no shift. As Hugging Face's
/// <c>LlamaRMSNorm</c>, the normalisation is computed in float32 for half-precision inputs and cast back to the input's
/// dtype before the gain multiplies; a float64 input stays float64 (Hugging Face would narrow it to float32).
/// </summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    readonly Parameter weight;
    readonly double eps;

    public RmsNorm(long width, double eps) : base("rms_norm")
    {
        weight = new Parameter(ones(width));
        this.eps = eps;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var wide = x.dtype == ScalarType.Float64 ? x : x.to_type(ScalarType.Float32);
        var normalised = wide.mul(wide.pow(2).mean([-1L], keepdim: true).add(eps).rsqrt());
        return weight.mul(normalised.to_type(x.dtype)).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Rotary position embedding (Su et al. 2021) in Hugging Face's rotate-half convention: dimension i &lt; h/2 of a head is
/// paired with i + h/2 (not with its neighbour, as in the paper and Meta's original code), and at position p the pair is
/// rotated by the angle p·θ^(−2i/h). So x' = x·cos + rotate_half(x)·sin with cos, sin = [cos(p·f), cos(p·f)] (the
/// frequencies f repeated for both halves) and rotate_half([x₁, x₂]) = [−x₂, x₁].
/// </summary>
public static class Rotary
{
    /// <summary>cos and sin [T, h] for positions 0 … T − 1, computed in float32 as Hugging Face does (float64 for a
    /// float64 model) and cast to <paramref name="dtype"/>.</summary>
    public static (Tensor Cos, Tensor Sin) CosSin(long length, long headWidth, double theta, ScalarType dtype, Device device)
    {
        using var scope = NewDisposeScope();
        var wide = dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        // f_i = θ^(−2i/h), i = 0 … h/2 − 1 (Hugging Face: 1 / base^(arange(0, h, 2) / h)).
        var exponents = arange(0, headWidth, 2, dtype: ScalarType.Int64, device: device).to_type(wide).div(headWidth);
        var frequencies = tensor(theta, dtype: wide, device: device).pow(exponents).reciprocal();
        var angles = outer(arange(length, dtype: ScalarType.Int64, device: device).to_type(wide), frequencies);
        var both = cat([angles, angles], -1);
        return (both.cos().to_type(dtype).MoveToOuterDisposeScope(), both.sin().to_type(dtype).MoveToOuterDisposeScope());
    }

    /// <summary>x·cos + rotate_half(x)·sin for x [B, heads, T, h].</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        var half = x.shape[^1] / 2;
        var rotated = cat([x.narrow(-1, half, half).neg(), x.narrow(-1, 0, half)], -1);
        return x.mul(cos).add(rotated.mul(sin));
    }
}
