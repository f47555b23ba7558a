using System.Reflection;
using Research.Abstractions;
using Research.Core.Config;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Models.Kinds;

/// <summary>
/// <c>[model] kind = "vlm"</c>: which registered kinds make the vision encoder and the language model, their own keys
/// in the sub-tables <c>[model.resnet]</c>, <c>[model.cnn]</c>, <c>[model.gpt]</c>, <c>[model.llama]</c>, and the connector
/// between them.
/// </summary>
[ModelOptions("vlm")]
public sealed record VlmOptions
{
    /// <summary>The vision encoder's kind: <c>resnet</c> (ResNet-18; with <c>encoder_init_from = "resnet18-imagenet"</c> the
    /// published ImageNet weights) or <c>cnn</c> (the small two-convolution network, from scratch).</summary>
    [Option(OneOf = ["resnet", "cnn"])]
    public string Encoder { get; init; } = "resnet";
    /// <summary>The language model's kind: <c>gpt</c> or <c>llama</c>.</summary>
    [Option(OneOf = ["gpt", "llama"])]
    public string LanguageModel { get; init; } = "gpt";
    /// <summary>P, the prefix embeddings an image becomes (the connector's output is P × the language model's width).</summary>
    [Option(Min = 1, Max = 256)]
    public int PrefixTokens { get; init; } = 4;
    /// <summary>The connector's hidden width; 0: the language model's width.</summary>
    [Option(Min = 0, Max = 65_536)]
    public int ConnectorHidden { get; init; } = 0;
    /// <summary>The encoder's feature width as the outputs of its head; 0: the encoder's own features (ResNet: its pooled 512,
    /// no head; cnn, which always has a head: 128).</summary>
    [Option(Min = 0, Max = 65_536)]
    public int EncoderOutputs { get; init; } = 0;
    /// <summary>Weights of the vision encoder alone, read by its kind (a published model's name, an ONNX file, or a run's
    /// weights by that kind's names); empty: from scratch.</summary>
    public string EncoderInitFrom { get; init; } = "";
    /// <summary>Weights of the language model alone, read by its kind (a run's weights or folder, a Hugging Face folder or
    /// file); empty: from scratch.</summary>
    public string LanguageModelInitFrom { get; init; } = "";
    /// <summary>The ResNet encoder's keys (kind <c>resnet</c>).</summary>
    public ResNetOptions Resnet { get; init; } = new();
    /// <summary>The CNN encoder's keys (kind <c>cnn</c>: none).</summary>
    public CnnOptions Cnn { get; init; } = new();
    /// <summary>The GPT's keys (kind <c>gpt</c>; its positions must cover P + the caption tokens T).</summary>
    public GptOptions Gpt { get; init; } = new();
    /// <summary>The Llama's keys (kind <c>llama</c>).</summary>
    public LlamaOptions Llama { get; init; } = new();

    /// <summary>The encoder's <c>init_from</c>, resolved (set by <see cref="VlmKind.Resolve"/>).</summary>
    internal string EncoderPath { get; init; } = "";
    /// <summary>The language model's <c>init_from</c>, resolved (set by <see cref="VlmKind.Resolve"/>).</summary>
    internal string LanguageModelPath { get; init; } = "";
}

/// <summary>
/// A vision-language model (<see cref="Vlm"/>) composed of registered kinds: the encoder's kind and the language model's
/// kind each check, resolve, create and load their own module from their sub-table, as they would as <c>[model]</c>; this
/// kind only adds the connector and the names (<c>vision_encoder.</c>, <c>connector.</c>, <c>language_model.</c>). The
/// data are images with captions (<c>fashion-captions</c>): the encoder sees the images as an image dataset of the same
/// pixels, the language model a token dataset of P + T positions.
/// </summary>
/// <remarks>
/// The components' own <c>init_from</c> files are read when a model is created (after every value has been drawn from
/// the generator, so the draws do not depend on them): every instance of the run's architecture — trained model, shadow,
/// snapshots — starts from them. <c>[model] init_from</c> reads a whole VLM by this framework's names.
/// </remarks>
public sealed class VlmKind : ModelKind<VlmOptions>
{
    public override string Summary => "a vision-language model: a vision encoder (resnet or cnn), a 2-layer MLP connector to P prefix embeddings, a causal language model (gpt or llama)";

    /// <summary>The property of <see cref="VlmOptions"/> holding a kind's sub-table, and its key.</summary>
    static (object Options, string Key) SubTable(VlmOptions o, ModelKind kind)
    {
        var property = typeof(VlmOptions).GetProperties(BindingFlags.Public | BindingFlags.Instance).First(p => p.PropertyType == kind.OptionsType);
        return (property.GetValue(o)!, OptionsBinder.SnakeCase(property.Name));
    }

    static ModelKind KindNamed(string name) => ModelKinds.Find(name) ?? throw new InvalidOperationException($"model kind '{name}' is not registered");

    /// <summary>What the encoder is built for: the images of the data as an image dataset.</summary>
    static DataShape ImageShape(DataShape d) =>
        new(d.Source, InputKind.Images, (long)d.ImageChannels * d.ImageHeight * d.ImageWidth, d.Classes)
        { ImageChannels = d.ImageChannels, ImageHeight = d.ImageHeight, ImageWidth = d.ImageWidth };

    /// <summary>What the language model is built for: causal language modelling on P + T positions of the data's tokenizer.</summary>
    static DataShape TextShape(DataShape d, VlmOptions o) =>
        new(d.Source, InputKind.Tokens, o.PrefixTokens + d.Features, d.Vocabulary) { NextToken = true, Tokenizer = d.Tokenizer, Vocabulary = d.Vocabulary };

    static int EncoderOutputs(VlmOptions o) => o.EncoderOutputs > 0 ? o.EncoderOutputs : o.Encoder == "cnn" ? 128 : 0;

    static ModelContext EncoderContext(VlmOptions o, ModelContext c) =>
        new(new ModelKeys(o.Encoder, EncoderOutputs(o), o.EncoderInitFrom, c.Model.Strict, []), ImageShape(c.Data),
            new ModelTarget(ImageShape(c.Data).Features, 0), o.EncoderPath) { Weights = c.Weights, ResolveFile = c.ResolveFile };

    static ModelContext LanguageContext(VlmOptions o, ModelContext c) =>
        new(new ModelKeys(o.LanguageModel, 0, o.LanguageModelInitFrom, c.Model.Strict, []), TextShape(c.Data, o),
            new ModelTarget(TextShape(c.Data, o).Features, c.Data.Vocabulary), o.LanguageModelPath) { Weights = c.Weights, ResolveFile = c.ResolveFile };

    public override IEnumerable<OptionError> Check(VlmOptions o, ModelKeys model, DataShape data)
    {
        if (data.Input != InputKind.ImagesAndTokens || !data.NextToken)
        {
            yield return new("model.kind", $"\"{Name}\" reads images with captions (fashion-captions), and data.dataset \"{data.Source}\" is not");
            yield break;
        }
        // The component kinds check themselves against the data they will see; their keys are re-addressed to where the
        // VLM's config writes them.
        foreach (var (kindName, role, shape, outputs, initFrom) in new[]
                 {
                     (o.Encoder, "encoder", ImageShape(data), EncoderOutputs(o), o.EncoderInitFrom),
                     (o.LanguageModel, "language_model", TextShape(data, o), 0, o.LanguageModelInitFrom),
                 })
        {
            var kind = ModelKinds.Find(kindName);
            if (kind is null) { yield return new($"model.{role}", $"\"{kindName}\" is not a registered model kind"); continue; }
            var (sub, key) = SubTable(o, kind);
            foreach (var e in kind.Check(sub, new ModelKeys(kindName, outputs, initFrom, model.Strict, []), shape))
                yield return e.Key switch
                {
                    "model.kind" => new($"model.{role}", e.Message),
                    "model.outputs" => new($"model.{role}_outputs", e.Message),
                    "model.init_from" => new($"model.{role}_init_from", e.Message),
                    _ => new(e.Key.StartsWith("model.") ? $"model.{key}.{e.Key["model.".Length..]}" : e.Key, e.Message),
                };
        }
    }

    /// <summary>Each component's <c>init_from</c> resolved (<see cref="ModelContext.ResolveFile"/>), then its kind's own
    /// <see cref="ModelKind.Resolve"/> (the published ResNet's stages, a Llama folder's config.json) on its sub-table.</summary>
    public override VlmOptions Resolve(VlmOptions o, ModelContext context)
    {
        o = o with
        {
            EncoderPath = o.EncoderInitFrom.Length > 0 ? context.ResolveFile(o.EncoderInitFrom) : "",
            LanguageModelPath = o.LanguageModelInitFrom.Length > 0 ? context.ResolveFile(o.LanguageModelInitFrom) : "",
        };
        var encoder = KindNamed(o.Encoder);
        var language = KindNamed(o.LanguageModel);
        return WithSubTable(WithSubTable(o, encoder, encoder.Resolve(SubTable(o, encoder).Options, EncoderContext(o, context))),
            language, language.Resolve(SubTable(o, language).Options, LanguageContext(o, context)));
    }

    static VlmOptions WithSubTable(VlmOptions o, ModelKind kind, object value)
    {
        var copy = o with { };
        typeof(VlmOptions).GetProperties(BindingFlags.Public | BindingFlags.Instance).First(p => p.PropertyType == kind.OptionsType).SetValue(copy, value);
        return copy;
    }

    /// <summary>
    /// The encoder, the connector and the language model, drawn from <paramref name="generator"/> in that order (each kind's
    /// own initialisation; the connector PyTorch's Linear default), then the components' <c>init_from</c> files loaded by
    /// their kinds. The encoder's feature width F is measured by running it on one blank image.
    /// </summary>
    public override nn.Module<Tensor, Tensor> Create(VlmOptions o, ModelContext context, Generator generator)
    {
        var (encoderKind, languageKind) = (KindNamed(o.Encoder), KindNamed(o.LanguageModel));
        var (encoderContext, languageContext) = (EncoderContext(o, context), LanguageContext(o, context));
        var encoderOptions = SubTable(o, encoderKind).Options;
        var languageOptions = SubTable(o, languageKind).Options;
        var parts = new List<IDisposable>();
        try
        {
            var encoder = encoderKind.Create(encoderOptions, encoderContext, generator);
            parts.Add(encoder);
            var features = FeatureWidth(encoder, encoderContext.Data.Features);
            var language = languageKind.Create(languageOptions, languageContext, generator);
            parts.Add(language);
            var width = (language as IPrefixLanguageModel)?.Width
                ?? throw new InvalidOperationException($"kind '{o.LanguageModel}' made a {language.GetType().Name}, which does not read a prefix of embeddings");
            var connector = new VlmConnector(features, o.ConnectorHidden > 0 ? o.ConnectorHidden : width, o.PrefixTokens, width);
            parts.Add(connector);
            connector.Initialise(generator);
            if (encoderContext.InitPath.Length > 0) encoderKind.Load(encoder, encoderOptions, encoderContext);
            if (languageContext.InitPath.Length > 0) languageKind.Load(language, languageOptions, languageContext);
            return new Vlm(encoder, connector, language);
        }
        catch
        {
            foreach (var p in parts) p.Dispose();
            throw;
        }
    }

    /// <summary>F: the width of the encoder's output on one blank image (eval mode, no gradients; the mode is restored).</summary>
    static long FeatureWidth(nn.Module<Tensor, Tensor> encoder, long pixels)
    {
        var training = encoder.training;
        try
        {
            encoder.eval();
            using var _ = no_grad();
            using var scope = NewDisposeScope();
            var output = encoder.call(zeros(1, pixels));
            return output.dim() == 2 ? output.shape[1]
                : throw new InvalidOperationException($"the vision encoder gives [{string.Join(", ", output.shape)}] per image batch, not features [B, F]");
        }
        finally { encoder.train(training); }
    }

    /// <summary>No classifier head: the caption's tokens are scored through the language model's output projection.</summary>
    public override IReadOnlyList<string> Head(VlmOptions o, ModelContext context) => [];

    /// <summary>The connector's input: the vision encoder's pooled features, one row per image.</summary>
    public override string Representation(VlmOptions o) => "connector";

    /// <summary>The language model's blocks, under <c>language_model.</c>.</summary>
    public override IReadOnlyList<string> Blocks(VlmOptions o, ModelContext context) =>
        KindNamed(o.LanguageModel).Blocks(SubTable(o, KindNamed(o.LanguageModel)).Options, LanguageContext(o, context)).Select(b => "language_model." + b).ToList();

    /// <summary>The language model's shape on P + T positions (the encoder's activations are left out).</summary>
    public override TransformerShape? MemoryShape(VlmOptions o, ModelKeys model, DataShape data, int batchSize) =>
        data.Input == InputKind.ImagesAndTokens
            ? KindNamed(o.LanguageModel).MemoryShape(SubTable(o, KindNamed(o.LanguageModel)).Options,
                new ModelKeys(o.LanguageModel, 0, o.LanguageModelInitFrom, model.Strict, []), TextShape(data, o), batchSize)
            : null;
}
