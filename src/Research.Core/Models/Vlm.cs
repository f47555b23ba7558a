using Research.Abstractions;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Research.Core.Models;

/// <summary>
/// A vision-language model composed of three modules that other kinds build (ClipCap, Mokady et al. 2021; LLaVA, Liu et
/// al. 2023): a vision encoder maps an image to pooled features f [B, F]; a connector maps f to P prefix embeddings
/// [B, P, d] of the language model's width; the language model reads the sequence [prefix ; embed(caption)] and scores
/// each next token. Parameter names start with <c>vision_encoder.</c>, <c>connector.</c> and <c>language_model.</c>,
/// so the seed chapter's three learning-rate groups and freezing select them by pattern.
/// </summary>
/// <remarks>
/// <para>A batch carries <c>image</c> ([B, 1, 28, 28] or flat [B, 784] grey pixels, as the encoder kinds read them) and
/// <c>input_ids</c> [B, T] (a caption that starts with the tokenizer's end-of-text id, as GPT-2's texts do). The logits
/// returned are those of the caption's T positions, [B, T, V]: position t has read the whole prefix and tokens 0…t and
/// scores token t + 1, which is what <see cref="Tasks.CausalLmTask"/> pairs it with. The prefix's own positions score
/// nothing that counts: on the full sequence of P + T positions this is the next-token loss with target −100 on every
/// prefix position and on the position before the first token (the begin id is given, not predicted).</para>
/// <para>The representation (what probes read) is the connector's input: the encoder's features.</para>
/// </remarks>
public sealed class Vlm : nn.Module<Tensor, Tensor>, IBatchModule
{
    readonly nn.Module<Tensor, Tensor> vision_encoder;
    readonly VlmConnector connector;
    readonly nn.Module<Tensor, Tensor> language_model;

    /// <summary>P, the prefix tokens an image becomes.</summary>
    public long PrefixTokens { get; }

    /// <summary>The language model, as a model that reads embeddings.</summary>
    public IPrefixLanguageModel LanguageModel => (IPrefixLanguageModel)language_model;

    /// <summary>The vision encoder (images [B, …] → features [B, F]).</summary>
    public nn.Module<Tensor, Tensor> VisionEncoder => vision_encoder;

    /// <summary>The connector (features [B, F] → prefix embeddings [B, P·d]).</summary>
    public VlmConnector Connector => connector;

    /// <summary>Composes the three modules (their values are theirs: <see cref="VlmConnector.Initialise"/> the connector).</summary>
    public Vlm(nn.Module<Tensor, Tensor> visionEncoder, VlmConnector connector, nn.Module<Tensor, Tensor> languageModel) : base("vlm")
    {
        if (languageModel is not IPrefixLanguageModel lm)
            throw new ArgumentException($"a {languageModel.GetType().Name} cannot read a prefix of embeddings: the language model must be a causal language model (gpt, llama)");
        if (connector.Width != lm.Width)
            throw new ArgumentException($"the connector makes embeddings of width {connector.Width}; the language model's are {lm.Width}");
        vision_encoder = visionEncoder;
        this.connector = connector;
        language_model = languageModel;
        PrefixTokens = connector.PrefixTokens;
        RegisterComponents();
    }

    /// <summary>The prefix embeddings [B, P, d] of images.</summary>
    public Tensor Prefix(Tensor images)
    {
        var features = vision_encoder.call(images.dim() == 4 ? images.flatten(1) : images);
        if (features.dim() != 2) throw new ArgumentException($"the vision encoder gave features [{string.Join(", ", features.shape)}], not [B, F]");
        return connector.call(features).view(features.shape[0], PrefixTokens, connector.Width);
    }

    /// <summary>Logits [B, P + T, V] of the whole sequence [prefix ; embed(tokens)].</summary>
    public Tensor SequenceLogits(Tensor images, Tensor tokens)
    {
        if (tokens.dim() != 2) throw new ArgumentException($"captions are token ids [B, T], not [{string.Join(", ", tokens.shape)}]");
        if (images.shape[0] != tokens.shape[0]) throw new ArgumentException($"{images.shape[0]} images and {tokens.shape[0]} captions");
        var lm = LanguageModel;
        return lm.LogitsOfEmbeddings(cat([Prefix(images), lm.EmbedTokens(tokens)], 1));
    }

    /// <summary>Logits [B, T, V] of the caption's positions (see the remarks).</summary>
    /// <remarks>No dispose scope of its own: what forward hooks keep of the layers' inputs (the Fisher's
    /// <see cref="Forgetting.LinearCapture"/>, the probes) is made during this call and must outlive it, so the
    /// intermediates belong to the caller's scope, as in every other model here.</remarks>
    public Tensor Logits(Tensor images, Tensor tokens) =>
        SequenceLogits(images, tokens).narrow(1, PrefixTokens, tokens.shape[1]);

    /// <summary>A batch's logits: <c>image</c> and <c>input_ids</c>.</summary>
    public Tensor Logits(Batch batch) => Logits(batch[Batch.Image], batch[Batch.InputIds]);

    /// <summary>A VLM reads two tensors: call <see cref="Logits(Batch)"/>.</summary>
    public override Tensor forward(Tensor input) =>
        throw new InvalidOperationException("a vision-language model reads an image and token ids: call Logits(batch) with 'image' and 'input_ids'");
}

/// <summary>
/// The connector: a two-layer MLP from pooled image features to P prefix embeddings, fc2(GELU(fc1(f))) with f [B, F] →
/// [B, hidden] → [B, P·d] (LLaVA-1.5's projector, widened to P tokens as ClipCap's MLP mapping network is).
/// Parameters <c>fc1.{weight,bias}</c> [hidden, F], <c>fc2.{weight,bias}</c> [P·d, hidden].
/// </summary>
public sealed class VlmConnector : nn.Module<Tensor, Tensor>
{
    readonly Linear fc1;
    readonly Linear fc2;

    public long PrefixTokens { get; }
    public long Width { get; }

    public VlmConnector(long features, long hidden, long prefixTokens, long width) : base("connector")
    {
        if (features < 1 || hidden < 1 || prefixTokens < 1 || width < 1)
            throw new ArgumentException($"a connector needs positive sizes: features {features}, hidden {hidden}, prefix tokens {prefixTokens}, width {width}");
        PrefixTokens = prefixTokens;
        Width = width;
        fc1 = nn.Linear(features, hidden);
        fc2 = nn.Linear(hidden, prefixTokens * width);
        RegisterComponents();
    }

    /// <summary>PyTorch's Linear default U(±1/√fan_in) for weights and biases, drawn from <paramref name="generator"/>.</summary>
    public void Initialise(Generator generator) => Init.LinearDefault(this, generator);

    /// <summary>fc1 and fc2 are invoked through <c>call</c>, so the Fisher's forward hooks see them.</summary>
    public override Tensor forward(Tensor features) => fc2.call(nn.functional.gelu(fc1.call(features)));
}
