using Research.Abstractions;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Research.Core.Models;

/// <summary>
/// The shape of a <see cref="Bert"/>: vocabulary V, absolute positions P, token types S, width d, heads H (d divisible by
/// H), layers L, intermediate width I, LayerNorm ε, dropout p (hidden states and attention probabilities, training only)
/// and the padding token id (its embedding row gets no gradient, as in Hugging Face's BertEmbeddings). Parameters:
/// (V + P + S + 2)·d + L·(4d² + 2dI + 9d + I), in 5 + 16·L tensors.
/// </summary>
public sealed record BertShape(long Vocab, long MaxPositions, long TokenTypes, long Width, long Heads, long Layers, long Intermediate,
    double LayerNormEps = 1e-12, double Dropout = 0.1, long PaddingId = 0)
{
    /// <summary>sentence-transformers' all-MiniLM-L6-v2 (<see cref="PublishedModels.MiniLM"/>): 22.6 M parameters, 101 tensors.</summary>
    public static BertShape AllMiniLmL6V2 { get; } = new(Vocab: 30522, MaxPositions: 512, TokenTypes: 2, Width: 384, Heads: 12, Layers: 6, Intermediate: 1536);

    /// <summary>The number of parameter tensors: 3 embeddings and their LayerNorm (2), 16 per layer.</summary>
    public long TensorCount => 5 + 16 * Layers;

    /// <summary>The number of scalar parameters (formula in the type's summary).</summary>
    public long ParameterCount => (Vocab + MaxPositions + TokenTypes + 2) * Width
        + Layers * (4 * Width * Width + 2 * Width * Intermediate + 9 * Width + Intermediate);
}

/// <summary>What <see cref="Bert.LoadOnnx"/> did.</summary>
/// <param name="Sources">Each parameter and the initializer it was copied from (<c>"927ᵀ"</c>: transposed).</param>
/// <param name="Ignored">Each initializer not copied, and why.</param>
public sealed record OnnxLoadReport(IReadOnlyDictionary<string, string> Sources, IReadOnlyDictionary<string, string> Ignored);

/// <summary>
/// A BERT encoder (Devlin et al. 2019) with post-LayerNorm blocks, as Hugging Face's <c>BertModel</c> without its pooler:
/// h₀ = LN(E_word[x] + E_type[s] + E_pos[0..T)), then per layer a = LN(h + Attn(h)·W_o + b_o), h = LN(a + GELU(a·W_i + b_i)·W_out + b_out),
/// where Attn is multi-head softmax(Q Kᵀ/√(d/H) + M) V over the keys the attention mask keeps (M = 0 there, the dtype's
/// minimum at padding) and GELU is the exact form x·Φ(x) = x/2·(1 + erf(x/√2)).
/// Parameter names are Hugging Face's: <c>embeddings.{word,position,token_type}_embeddings.weight</c>,
/// <c>embeddings.LayerNorm.{weight,bias}</c>, <c>encoder.layer.{i}.attention.self.{query,key,value}.{weight,bias}</c>,
/// <c>encoder.layer.{i}.attention.output.{dense,LayerNorm}.*</c>, <c>encoder.layer.{i}.intermediate.dense.*</c>,
/// <c>encoder.layer.{i}.output.{dense,LayerNorm}.*</c>.
/// </summary>
/// <remarks>
/// Inputs: <c>input_ids</c> [B, T] (T ≤ P), optional <c>attention_mask</c> [B, T] (1 token, 0 padding; none = all tokens) and
/// <c>token_type_ids</c> [B, T] (none = zeros). Output: the last hidden state [B, T, d]. The sentence embedding of
/// sentence-transformers (<see cref="SentenceEmbedding(Tensor, Tensor, Tensor?)"/>) is the mask-weighted mean of it,
/// L2-normalised — not BERT's pooler (tanh of a dense layer on [CLS]), which this model does not have.
/// Dropout draws from the process-global generator: call <c>eval()</c> (or use p = 0) for deterministic outputs.
/// With <c>classes</c> &gt; 0 the model is a sequence classifier: a linear <c>head</c> [classes, d] on the sentence
/// embedding (a probe on what sentence-transformers users compare), and a batch's output is its logits [B, classes].
/// </remarks>
public sealed class Bert : nn.Module<Tensor, Tensor>, IBatchModule
{
    readonly BertEmbeddings embeddings;
    readonly BertEncoder encoder;
    readonly Linear? head;

    public BertShape Shape { get; }

    /// <summary>Classes of the head; 0 when the model outputs its last hidden state.</summary>
    public long Classes { get; }

    /// <summary>
    /// Builds the modules. Their construction-time values come from the process-global generator, so call
    /// <see cref="Initialise"/> (or use <see cref="Create"/>, or load weights with <see cref="LoadOnnx"/>) before relying on them.
    /// </summary>
    public Bert(BertShape shape, long classes = 0) : base("bert")
    {
        if (shape.Width % shape.Heads != 0) throw new ArgumentException($"width {shape.Width} is not divisible by {shape.Heads} heads");
        if (classes < 0) throw new ArgumentException($"classes must be ≥ 0 (0: no head), not {classes}");
        Shape = shape;
        Classes = classes;
        embeddings = new BertEmbeddings(shape);
        encoder = new BertEncoder(shape);
        if (classes > 0) head = nn.Linear(shape.Width, classes);
        RegisterComponents();
    }

    /// <summary>A model of the given shape, initialised by <see cref="Initialise"/> from <paramref name="generator"/>.</summary>
    public static Bert Create(BertShape shape, Generator generator, long classes = 0)
    {
        var model = new Bert(shape, classes);
        model.Initialise(generator);
        return model;
    }

    /// <summary>
    /// The model in an ONNX export of a BERT (such as <see cref="PublishedModels.MiniLM"/>'s <c>model.onnx</c>), in
    /// evaluation mode. Strict, as <see cref="LoadOnnx"/>.
    /// </summary>
    public static Bert FromOnnx(string path, BertShape? shape = null)
    {
        var weights = OnnxWeights.Read(path);
        var model = new Bert(shape ?? BertShape.AllMiniLmL6V2);
        model.LoadOnnx(weights);
        model.eval();
        return model;
    }

    /// <summary>
    /// Draws every parameter from <paramref name="generator"/> alone, as Hugging Face's BertPreTrainedModel initialises:
    /// Linear weights and embeddings N(0, 0.02²) (the padding row zero), biases 0, LayerNorm gain 1 and shift 0.
    /// </summary>
    public void Initialise(Generator generator)
    {
        using var _ = NewDisposeScope();
        using var __ = no_grad();
        foreach (var (name, p) in named_parameters())
        {
            if (name.EndsWith(".bias")) p.zero_();
            else if (name.Contains("LayerNorm")) p.fill_(1);
            else p.copy_(randn(p.shape, generator: generator).mul_(0.02));
        }
        embeddings.word_embeddings.weight![Shape.PaddingId].zero_();
    }

    /// <summary>Token ids without padding: the logits with a head, else the last hidden state [B, T, d].</summary>
    public override Tensor forward(Tensor inputIds) => head is null ? Forward(inputIds) : head.call(SentenceEmbedding(inputIds, ones_like(inputIds)));

    /// <summary>A batch's logits [B, classes] with a head (on the sentence embedding), else its last hidden state.</summary>
    public Tensor Logits(Batch batch) => head is null ? Forward(batch) : head.call(SentenceEmbedding(batch));

    /// <summary>The last hidden state [B, T, d]. A null mask attends to every token; null token types are all type 0.</summary>
    public Tensor Forward(Tensor inputIds, Tensor? attentionMask = null, Tensor? tokenTypeIds = null)
    {
        var length = inputIds.shape[1];
        if (length > Shape.MaxPositions) throw new ArgumentException($"sequence length {length} exceeds the model's {Shape.MaxPositions} positions");
        using var scope = NewDisposeScope();
        var h = embeddings.call(inputIds, tokenTypeIds ?? zeros_like(inputIds));
        // Additive mask [B, 1, 1, T] broadcast over heads and queries: 0 where a key is a token, the dtype's minimum at
        // padding (Hugging Face's choice; finite, so a row of padding only still has a softmax).
        Tensor? mask = attentionMask is null ? null
            : attentionMask.to(h.dtype).neg().add_(1).mul_(finfo(h.dtype).min).view(inputIds.shape[0], 1, 1, length);
        return encoder.call(h, mask).MoveToOuterDisposeScope();
    }

    /// <summary>The last hidden state of a batch's <c>input_ids</c>, <c>attention_mask</c> and <c>token_type_ids</c> (the last two optional).</summary>
    public Tensor Forward(Batch batch) =>
        Forward(batch[Batch.InputIds], batch.TryGetValue(Batch.AttentionMask, out var m) ? m : null,
            batch.TryGetValue(Batch.TokenTypeIds, out var s) ? s : null);

    /// <summary>The sentence embeddings [B, d]: <see cref="MeanPool"/> of the last hidden state.</summary>
    public Tensor SentenceEmbedding(Tensor inputIds, Tensor attentionMask, Tensor? tokenTypeIds = null)
    {
        using var scope = NewDisposeScope();
        return MeanPool(Forward(inputIds, attentionMask, tokenTypeIds), attentionMask).MoveToOuterDisposeScope();
    }

    /// <summary>The sentence embeddings [B, d] of a batch (an absent mask counts every token).</summary>
    public Tensor SentenceEmbedding(Batch batch)
    {
        using var scope = NewDisposeScope();
        var mask = batch.TryGetValue(Batch.AttentionMask, out var m) ? m : ones_like(batch[Batch.InputIds]);
        return MeanPool(Forward(batch), mask).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// sentence-transformers' pooling of all-MiniLM-L6-v2: e = Σ_t m_t h_t / max(Σ_t m_t, 10⁻⁹), then e / max(‖e‖₂, 10⁻¹²).
    /// <paramref name="hidden"/> [B, T, d], <paramref name="attentionMask"/> [B, T]; result [B, d].
    /// </summary>
    public static Tensor MeanPool(Tensor hidden, Tensor attentionMask)
    {
        using var scope = NewDisposeScope();
        var m = attentionMask.unsqueeze(-1).to(hidden.dtype);
        var mean = hidden.mul(m).sum(1).div(m.sum(1).clamp_min(1e-9));
        return nn.functional.normalize(mean, p: 2, dim: 1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Copies the weights of an ONNX export of a BERT into this model. Mapping: an initializer named like a parameter is
    /// copied as it is; an anonymous weight W of an exported Linear (<see cref="OnnxWeights.ExportedLinears"/>) whose bias
    /// is named <c>X.bias</c> becomes <c>X.weight</c> = Wᵀ. Left out, and said so in the report: BERT's pooler
    /// (<c>pooler.dense.*</c>, unused by mean pooling), <c>embeddings.position_ids</c> (checked to be 0, 1, …, P−1, the
    /// positions this model uses), and one-element INT64 initializers that only shape operators read (the export's
    /// reshape sizes). Strict: every parameter is filled exactly once with its exact shape, and every other initializer is
    /// one of those; otherwise one <see cref="InvalidDataException"/> naming the file lists every problem, and the model is
    /// left unchanged.
    /// </summary>
    public OnnxLoadReport LoadOnnx(OnnxWeights onnx)
    {
        // The body only: a published encoder has no head, which stays as initialised (a new head on a pre-trained body).
        var parameters = named_parameters().Where(p => !p.name.StartsWith("head.")).ToDictionary(p => p.name, p => p.parameter);
        var sources = new Dictionary<string, (string Initializer, bool Transposed)>();
        var ignored = new Dictionary<string, string>();
        var problems = new List<string>();
        // A weight read by two exported Linears (tied) would map to two parameters: refused below as "not used".
        var linears = onnx.ExportedLinears().Where(l => !parameters.ContainsKey(l.Weight)).GroupBy(l => l.Weight)
            .Where(g => g.Count() == 1).ToDictionary(g => g.Key, g => g.Single());

        void Source(string parameter, string initializer, bool transposed)
        {
            if (!parameters.ContainsKey(parameter))
                problems.Add($"'{initializer}' maps to '{parameter}', which the model does not have");
            else if (sources.TryGetValue(parameter, out var first))
                problems.Add($"'{parameter}' would be filled twice (from '{first.Initializer}' and '{initializer}')");
            else sources[parameter] = (initializer, transposed);
        }

        foreach (var init in onnx.Initializers)
        {
            var name = init.Name;
            if (parameters.ContainsKey(name)) Source(name, name, transposed: false);
            else if (linears.TryGetValue(name, out var linear) && linear.Bias.EndsWith(".bias") && parameters.ContainsKey(linear.Bias))
                Source(linear.Bias[..^".bias".Length] + ".weight", name, transposed: true);
            else if (name.StartsWith("pooler.dense."))
                ignored[name] = "BERT's pooler (tanh of a dense layer on [CLS]); sentence embeddings mean-pool instead";
            else if (name == "embeddings.position_ids")
            {
                var ids = init.ElementType == "INT64" ? onnx.Int64(name) : [];
                if (ids.Length == 0 || ids.Where((v, i) => v != i).Any()) problems.Add($"'{name}' is not the positions 0, 1, 2, …");
                else ignored[name] = $"the positions 0…{ids.Length - 1}, which the model takes as they are";
            }
            else if (init.ElementType == "INT64" && init.Count == 1 && onnx.Consumers(name).All(n => n.OpType is "Reshape" or "Concat" or "Slice" or "Unsqueeze" or "Squeeze" or "Expand"))
                ignored[name] = $"a shape operand of the exported graph ({string.Join(", ", onnx.Consumers(name).Select(n => n.OpType).Distinct())})";
            else problems.Add($"'{name}' [{string.Join("×", init.Shape)}] {init.ElementType} is not used");
        }

        foreach (var (name, p) in parameters)
        {
            if (!sources.TryGetValue(name, out var source)) { problems.Add($"'{name}' is missing"); continue; }
            var stored = onnx.Info(source.Initializer).Shape;
            var shape = source.Transposed ? stored.Reverse().ToArray() : stored.ToArray();
            if (!shape.SequenceEqual(p.shape))
                problems.Add($"'{name}' (from '{source.Initializer}'{(source.Transposed ? ", transposed" : "")}) is [{string.Join("×", shape)}], the model's is [{string.Join("×", p.shape)}]");
        }
        if (problems.Count > 0)
            throw new InvalidDataException($"{onnx.Path}: cannot load it into a BERT of {Shape}: {string.Join("; ", problems)}");

        using (var _ = NewDisposeScope())
        using (no_grad())
            foreach (var (name, (initializer, transposed)) in sources)
            {
                var value = onnx.Float(initializer);
                parameters[name].copy_(transposed ? value.t() : value);
            }
        return new OnnxLoadReport(
            sources.ToDictionary(s => s.Key, s => s.Value.Transposed ? s.Value.Initializer + "ᵀ" : s.Value.Initializer),
            ignored);
    }
}

/// <summary>h₀ = LN(E_word[x] + E_type[s] + E_pos[0..T)), then dropout.</summary>
sealed class BertEmbeddings : nn.Module<Tensor, Tensor, Tensor>
{
    internal readonly Embedding word_embeddings;
    readonly Embedding position_embeddings;
    readonly Embedding token_type_embeddings;
    readonly LayerNorm LayerNorm;
    readonly double dropout;

    public BertEmbeddings(BertShape shape) : base("embeddings")
    {
        word_embeddings = nn.Embedding(shape.Vocab, shape.Width, padding_idx: shape.PaddingId);
        position_embeddings = nn.Embedding(shape.MaxPositions, shape.Width);
        token_type_embeddings = nn.Embedding(shape.TokenTypes, shape.Width);
        LayerNorm = nn.LayerNorm(shape.Width, eps: shape.LayerNormEps);
        dropout = shape.Dropout;
        RegisterComponents();
    }

    public override Tensor forward(Tensor inputIds, Tensor tokenTypeIds)
    {
        using var positions = arange(inputIds.shape[1], dtype: ScalarType.Int64, device: inputIds.device);
        // Summed in Hugging Face's order (word + type, then + position), which the ONNX export keeps.
        var h = word_embeddings.call(inputIds).add(token_type_embeddings.call(tokenTypeIds)).add(position_embeddings.call(positions));
        return nn.functional.dropout(LayerNorm.call(h), dropout, training);
    }
}

/// <summary>The stack of layers, <c>encoder.layer.{i}</c>.</summary>
sealed class BertEncoder : nn.Module<Tensor, Tensor?, Tensor>
{
    readonly ModuleList<BertLayer> layer = new();

    public BertEncoder(BertShape shape) : base("encoder")
    {
        for (var i = 0; i < shape.Layers; i++) layer.Add(new BertLayer(shape));
        RegisterComponents();
    }

    public override Tensor forward(Tensor h, Tensor? mask)
    {
        foreach (var l in layer) h = l.call(h, mask);
        return h;
    }
}

/// <summary>One post-LayerNorm layer: a = LN(h + Attn(h)·W_o), then LN(a + GELU(a·W_i)·W_out) (biases implied).</summary>
sealed class BertLayer : nn.Module<Tensor, Tensor?, Tensor>
{
    readonly BertAttention attention;
    readonly BertIntermediate intermediate;
    readonly BertAddNorm output;

    public BertLayer(BertShape shape) : base("layer")
    {
        attention = new BertAttention(shape);
        intermediate = new BertIntermediate(shape);
        output = new BertAddNorm(shape.Intermediate, shape);
        RegisterComponents();
    }

    public override Tensor forward(Tensor h, Tensor? mask)
    {
        var a = attention.call(h, mask);
        return output.call(intermediate.call(a), a);
    }
}

/// <summary>Self-attention (<c>self</c>) and its projection, residual and LayerNorm (<c>output</c>).</summary>
sealed class BertAttention : nn.Module<Tensor, Tensor?, Tensor>
{
    readonly BertSelfAttention self;
    readonly BertAddNorm output;

    public BertAttention(BertShape shape) : base("attention")
    {
        self = new BertSelfAttention(shape);
        output = new BertAddNorm(shape.Width, shape);
        RegisterComponents();
    }

    public override Tensor forward(Tensor h, Tensor? mask) => output.call(self.call(h, mask), h);
}

/// <summary>
/// Multi-head attention with separate Q, K, V projections (Hugging Face's layout): per head softmax(Q Kᵀ/√(d/H) + M) V,
/// heads concatenated. libtorch's <c>scaled_dot_product_attention</c> computes exactly that, with dropout on the
/// probabilities while training.
/// </summary>
sealed class BertSelfAttention : nn.Module<Tensor, Tensor?, Tensor>
{
    readonly Linear query;
    readonly Linear key;
    readonly Linear value;
    readonly long heads;
    readonly double dropout;

    public BertSelfAttention(BertShape shape) : base("self")
    {
        query = nn.Linear(shape.Width, shape.Width);
        key = nn.Linear(shape.Width, shape.Width);
        value = nn.Linear(shape.Width, shape.Width);
        heads = shape.Heads;
        dropout = shape.Dropout;
        RegisterComponents();
    }

    public override Tensor forward(Tensor h, Tensor? mask)
    {
        var (b, t, d) = (h.shape[0], h.shape[1], h.shape[2]);
        Tensor Split(Linear projection) => projection.call(h).view(b, t, heads, d / heads).transpose(1, 2);
        var y = nn.functional.scaled_dot_product_attention(Split(query), Split(key), Split(value), mask, training ? dropout : 0);
        return y.transpose(1, 2).reshape(b, t, d);
    }
}

/// <summary>GELU(h·W_i + b_i), the exact (erf) GELU: width d → I.</summary>
sealed class BertIntermediate : nn.Module<Tensor, Tensor>
{
    readonly Linear dense;

    public BertIntermediate(BertShape shape) : base("intermediate")
    {
        dense = nn.Linear(shape.Width, shape.Intermediate);
        RegisterComponents();
    }

    public override Tensor forward(Tensor h) => nn.functional.gelu(dense.call(h));
}

/// <summary>LN(dropout(x·W + b) + residual): the block's output projection, residual and post-LayerNorm.</summary>
sealed class BertAddNorm : nn.Module<Tensor, Tensor, Tensor>
{
    readonly Linear dense;
    readonly LayerNorm LayerNorm;
    readonly double dropout;

    public BertAddNorm(long inputs, BertShape shape) : base("output")
    {
        dense = nn.Linear(inputs, shape.Width);
        LayerNorm = nn.LayerNorm(shape.Width, eps: shape.LayerNormEps);
        dropout = shape.Dropout;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, Tensor residual) =>
        LayerNorm.call(nn.functional.dropout(dense.call(x), dropout, training).add(residual));
}
