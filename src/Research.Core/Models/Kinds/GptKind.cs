using Research.Abstractions;
using Research.Core.Checkpoints;
using Research.Core.Config;
using Research.Core.Data;
using Research.Core.Memory;
using Research.Core.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Models.Kinds;

/// <summary><c>[model] kind = "gpt"</c>: the shape of a decoder-only transformer in GPT-2's layout. 0 keeps the
/// default each key names (these zeros are part of the identity of runs stored before kinds had their own keys).</summary>
[ModelOptions("gpt")]
public sealed record GptOptions
{
    /// <summary>Width d of the residual stream; 0: 256.</summary>
    [Option(Min = 0, Max = 65_536)]
    public int Width { get; init; } = 0;
    /// <summary>Transformer blocks; 0: 4.</summary>
    [Option(Min = 0, Max = 1024)]
    public int Layers { get; init; } = 0;
    /// <summary>Attention heads (the width must be a multiple); 0: 4.</summary>
    [Option(Min = 0, Max = 1024)]
    public int Heads { get; init; } = 0;
    /// <summary>Learned positions; 0: data.context.</summary>
    [Option(Min = 0, Max = 65_536)]
    public int MaxPositions { get; init; } = 0;
    /// <summary>Dropout on embeddings, attention and residual branches (training mode only).</summary>
    [Option(Min = 0, Max = 1, MaxExclusive = true)]
    public double Dropout { get; init; } = 0;

    /// <summary>The width the model gets: <see cref="Width"/>, or 256.</summary>
    public int WidthOrDefault => Width > 0 ? Width : 256;
    /// <summary>The heads the model gets: <see cref="Heads"/>, or 4.</summary>
    public int HeadsOrDefault => Heads > 0 ? Heads : 4;
    /// <summary>The blocks the model gets: <see cref="Layers"/>, or 4.</summary>
    public int LayersOrDefault => Layers > 0 ? Layers : 4;
    /// <summary>The positions the model gets: <see cref="MaxPositions"/>, or the data's context.</summary>
    public int PositionsFor(DataShape data) => MaxPositions > 0 ? MaxPositions : (int)data.Features;
}

/// <summary>
/// A decoder-only transformer (<see cref="Gpt"/>) on token ids: a causal language model whose output projection is its
/// token embedding, or, for classification, a <c>head</c> on the last token's final hidden state (its representation).
/// <c>init_from</c> reads this framework's names and GPT-2's safetensors layout as Hugging Face publishes it, told apart by
/// the tensors' names and shapes (<see cref="Gpt2Layout.Recognise"/>); an exported model is written in GPT-2's layout.
/// </summary>
public sealed class GptKind : ModelKind<GptOptions>
{
    public override string Summary => "a decoder-only transformer in GPT-2's layout (wte, wpe, h.{i}.attn.c_attn, …): a causal language model, or a classifier on the last token";

    /// <summary>The shape of the model a config builds: vocabulary from the tokenizer, positions from the context unless given.</summary>
    public static GptShape ShapeOf(GptOptions o, DataShape d) => new(
        Vocab: d.Vocabulary, MaxLen: o.PositionsFor(d), Width: o.WidthOrDefault, Heads: o.HeadsOrDefault, Layers: o.LayersOrDefault);

    public override IEnumerable<OptionError> Check(GptOptions o, ModelKeys model, DataShape data)
    {
        if (!data.IsText) yield return new("model.kind", $"\"{Name}\" reads token ids, and data.dataset \"{data.Source}\" is not text (fortunes, fortunes-de)");
        var vocabulary = data.Vocabulary;
        if (data.NextToken && model.Outputs > 0 && model.Outputs != vocabulary)
            yield return new("model.outputs", $"{model.Outputs} differs from the {vocabulary} ids of tokenizer \"{data.Tokenizer}\": a language model's outputs are its vocabulary (tied to the token embedding)");
        if (data.Features > o.PositionsFor(data))
            yield return new("model.max_positions", $"{o.MaxPositions} is fewer than data.context {data.Features}: the model would have no position for the last tokens");
        if (o.WidthOrDefault % o.HeadsOrDefault != 0)
            yield return new("model.heads", $"{o.HeadsOrDefault} heads do not divide the width {o.WidthOrDefault}");
    }

    public override nn.Module<Tensor, Tensor> Create(GptOptions o, ModelContext context, Generator generator) =>
        Gpt.Create(ShapeOf(o, context.Data), generator, o.Dropout, classes: context.Data.NextToken ? 0 : context.Outputs);

    /// <summary>
    /// Reads a safetensors file in whichever layout its tensors show: GPT-2's (<c>GPT2LMHeadModel</c> with
    /// <c>transformer.</c>, or its base without; a tied <c>lm_head.weight</c> present or not; Conv1D weights [in, out]) is
    /// loaded strictly, the head left new; this framework's names go through the loader by name (strict or not). A
    /// strict load of a file in neither layout says which names and shapes it expected.
    /// </summary>
    public override string Load(nn.Module<Tensor, Tensor> model, GptOptions o, ModelContext context)
    {
        var gpt = (Gpt)model;
        var path = context.InitPath;
        if (path.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase)) return context.Weights.LoadByName(model, context);
        switch (Gpt2Layout.Recognise(path))
        {
            case Gpt2Layout.Layout.Gpt2:
                Gpt2Layout.Load(gpt, path);
                return $"init_from {path} (GPT-2 layout): every body tensor loaded{NewHead(model, o, context)}";
            // A missing file is the by-name loader's to report ("no weights at …").
            case Gpt2Layout.Layout.None when context.Model.Strict && File.Exists(WeightFile.Resolve(path)):
                throw new InvalidDataException(Gpt2Layout.Expected(gpt, path));
            default:
                return context.Weights.LoadByName(model, context);
        }
    }

    /// <summary>Writes the body in GPT-2's layout (<see cref="Gpt2Layout.Save"/>), which Hugging Face's transformers reads.</summary>
    public override void Save(nn.Module<Tensor, Tensor> model, GptOptions o, ModelContext context, string path) => Gpt2Layout.Save((Gpt)model, path);

    /// <summary>A classifier's <c>head</c>; a language model has none (its output projection is the token embedding).</summary>
    public override IReadOnlyList<string> Head(GptOptions o, ModelContext context) => context.Data.NextToken ? [] : [HeadModule];

    /// <summary>Korthikanti et al.'s shape: L blocks of width d and H heads on windows of data.context tokens, batches of data.batch_size.</summary>
    public override TransformerShape MemoryShape(GptOptions o, ModelKeys model, DataShape data, int batchSize) =>
        new(o.LayersOrDefault, o.WidthOrDefault, o.HeadsOrDefault, data.Features, batchSize);
}
