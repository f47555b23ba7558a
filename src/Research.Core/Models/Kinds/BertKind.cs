using Research.Abstractions;
using Research.Core.Config;
using Research.Core.Data;
using Research.Core.Memory;
using Research.Core.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Models.Kinds;

/// <summary><c>[model] kind = "bert"</c>: the shape of a BERT encoder, all-MiniLM-L6-v2's where a key is 0 (these zeros are
/// part of the identity of runs stored before kinds had their own keys).</summary>
[ModelOptions("bert")]
public sealed record BertOptions
{
    /// <summary>Width d of the hidden states; 0: 384 (MiniLM's).</summary>
    [Option(Min = 0, Max = 65_536)]
    public int Width { get; init; } = 0;
    /// <summary>Encoder layers; 0: 6 (MiniLM's).</summary>
    [Option(Min = 0, Max = 1024)]
    public int Layers { get; init; } = 0;
    /// <summary>Attention heads (the width must be a multiple); 0: 12 (MiniLM's).</summary>
    [Option(Min = 0, Max = 1024)]
    public int Heads { get; init; } = 0;
    /// <summary>Width of the feed-forward layer; 0: 4d.</summary>
    [Option(Min = 0, Max = 1_000_000)]
    public int Intermediate { get; init; } = 0;
    /// <summary>Learned positions; 0: 512 (MiniLM's).</summary>
    [Option(Min = 0, Max = 65_536)]
    public int MaxPositions { get; init; } = 0;

    /// <summary>The shape these options give with the tokenizer's vocabulary: MiniLM's where a key is 0.</summary>
    public BertShape ShapeFor(int vocabulary)
    {
        var mini = BertShape.AllMiniLmL6V2;
        var width = Width > 0 ? Width : mini.Width;
        return mini with
        {
            Vocab = vocabulary,
            MaxPositions = MaxPositions > 0 ? MaxPositions : mini.MaxPositions,
            Width = width,
            Heads = Heads > 0 ? Heads : mini.Heads,
            Layers = Layers > 0 ? Layers : mini.Layers,
            Intermediate = Intermediate > 0 ? Intermediate : 4 * width,
        };
    }
}

/// <summary>
/// A BERT encoder (<see cref="Bert"/>) in Hugging Face's names classifying the mean-pooled sentence embedding (its
/// representation, read by the <c>head</c>). <c>init_from</c> reads an ONNX export such as the published
/// <see cref="PublishedModels.MiniLM"/> (the body, strictly; the head stays new) or this framework's names.
/// </summary>
public sealed class BertKind : ModelKind<BertOptions>
{
    public override string Summary => "a BERT encoder in Hugging Face's names (embeddings.*, encoder.layer.{i}.*; MiniLM's shape by default) classifying the mean-pooled sentence embedding";

    public override IReadOnlyList<string> Published => [PublishedModels.MiniLM];

    public override bool ReadsOnnx => true;

    public override IEnumerable<OptionError> Check(BertOptions o, ModelKeys model, DataShape data)
    {
        if (!data.IsText) yield return new("model.kind", $"\"{Name}\" reads token ids, and data.dataset \"{data.Source}\" is not text (fortunes, fortunes-de)");
        else if (data.NextToken) yield return new("model.kind", $"\"{Name}\" is an encoder (it sees the whole text): a causal language model is \"gpt\"");
        var shape = o.ShapeFor(data.Vocabulary);
        if (data.Features > shape.MaxPositions)
            yield return new("data.context", $"{data.Features} is more than the BERT's {shape.MaxPositions} positions");
        if (shape.Width % shape.Heads != 0)
            yield return new("model.heads", $"{shape.Heads} heads do not divide the width {shape.Width}");
        if (model.InitFrom == PublishedModels.MiniLM && data.Tokenizer != "wordpiece")
            yield return new("data.tokenizer", $"\"{data.Tokenizer}\": {PublishedModels.MiniLM} reads the ids of its own vocabulary, tokenizer \"wordpiece\"");
    }

    public override nn.Module<Tensor, Tensor> Create(BertOptions o, ModelContext context, Generator generator) =>
        Bert.Create(o.ShapeFor(context.Data.Vocabulary), generator, context.Outputs);

    public override string Load(nn.Module<Tensor, Tensor> model, BertOptions o, ModelContext context)
    {
        var path = context.InitPath;
        if (!path.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase)) return context.Weights.LoadByName(model, context);
        var report = ((Bert)model).LoadOnnx(OnnxWeights.Read(path));
        return $"init_from {path} (ONNX): {report.Sources.Count} tensors into the BERT body, {report.Ignored.Count} initializers left out{NewHead(model, o, context)}";
    }

    /// <summary>An encoder's layers in Korthikanti et al.'s shape (their count assumes GPT's 4d feed-forward width).</summary>
    public override TransformerShape MemoryShape(BertOptions o, ModelKeys model, DataShape data, int batchSize)
    {
        var shape = o.ShapeFor(data.Vocabulary);
        return new(shape.Layers, shape.Width, shape.Heads, data.Features, batchSize);
    }
}
