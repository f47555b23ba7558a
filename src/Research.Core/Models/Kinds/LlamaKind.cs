using Research.Abstractions;
using Research.Core.Checkpoints;
using Research.Core.Config;
using Research.Core.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Models.Kinds;

/// <summary>
/// <c>[model] kind = "llama"</c>: the shape of a Llama-family decoder. With <c>init_from</c> naming a Hugging Face model
/// folder (or its <c>model.safetensors</c>) the folder's <c>config.json</c> decides every key left at its default, and a key
/// set otherwise than the file says is refused; without one, the keys build a random model. Each key's Hugging Face name is
/// accepted as an alias.
/// </summary>
[ModelOptions("llama")]
public sealed record LlamaOptions
{
    /// <summary>Rows of the token embedding (<c>vocab_size</c>); 0: the tokenizer's vocabulary.</summary>
    [Option(Min = 0, Max = 10_000_000, Aliases = ["vocab_size"])]
    public int Vocab { get; init; } = 0;
    /// <summary>Width d of the residual stream (<c>hidden_size</c>); 0: 256.</summary>
    [Option(Min = 0, Max = 65_536, Aliases = ["hidden_size"])]
    public int Width { get; init; } = 0;
    /// <summary>Inner width of the SwiGLU (<c>intermediate_size</c>); 0: 8d/3 rounded up to a multiple of 32.</summary>
    [Option(Min = 0, Max = 1_000_000, Aliases = ["intermediate_size"])]
    public int Intermediate { get; init; } = 0;
    /// <summary>Decoder layers (<c>num_hidden_layers</c>); 0: 4.</summary>
    [Option(Min = 0, Max = 1024, Aliases = ["num_hidden_layers"])]
    public int Layers { get; init; } = 0;
    /// <summary>Query heads (<c>num_attention_heads</c>); 0: 4.</summary>
    [Option(Min = 0, Max = 1024, Aliases = ["num_attention_heads"])]
    public int Heads { get; init; } = 0;
    /// <summary>Key/value heads (<c>num_key_value_heads</c>), dividing the heads (grouped-query attention); 0: the heads.</summary>
    [Option(Min = 0, Max = 1024, Aliases = ["num_key_value_heads"])]
    public int KvHeads { get; init; } = 0;
    /// <summary>Width of one head (<c>head_dim</c>); 0: width / heads.</summary>
    [Option(Min = 0, Max = 65_536)]
    public int HeadDim { get; init; } = 0;
    /// <summary>Positions the model reads at most (<c>max_position_embeddings</c>); 0: data.context.</summary>
    [Option(Min = 0, Max = 10_000_000, Aliases = ["max_position_embeddings"])]
    public int MaxPositions { get; init; } = 0;
    /// <summary>ε of every RMSNorm (<c>rms_norm_eps</c>).</summary>
    [Option(Min = 0, MinExclusive = true, Max = 1)]
    public double RmsNormEps { get; init; } = 1e-6;
    /// <summary>Base of the rotary frequencies (<c>rope_theta</c>).</summary>
    [Option(Min = 1, MinExclusive = true)]
    public double RopeTheta { get; init; } = 10_000;
    /// <summary>The output projection is the token embedding (<c>tie_word_embeddings</c>).</summary>
    [Option(Aliases = ["tie_word_embeddings"])]
    public bool TieEmbeddings { get; init; } = false;
    /// <summary>Biases on q_proj, k_proj and v_proj, as Qwen2 has them (not on o_proj).</summary>
    [Option]
    public bool QkvBias { get; init; } = false;

    /// <summary>The <c>config.json</c> this was resolved against (set by <see cref="LlamaKind.Resolve"/>); null: none.</summary>
    internal LlamaConfig? FromFile { get; init; }

    /// <summary>The model these options build for <paramref name="data"/>: the resolved file's config, else the keys.</summary>
    public LlamaConfig ConfigFor(DataShape data)
    {
        if (FromFile is not null) return FromFile;
        var width = Width > 0 ? Width : 256;
        var heads = Heads > 0 ? Heads : 4;
        return new LlamaConfig(Vocab > 0 ? Vocab : data.Vocabulary, width, Intermediate > 0 ? Intermediate : (8 * width / 3 + 31) / 32 * 32,
            Layers > 0 ? Layers : 4, heads, KvHeads > 0 ? KvHeads : heads)
        {
            HeadDim = HeadDim,
            RmsNormEps = RmsNormEps,
            RopeTheta = RopeTheta,
            TieWordEmbeddings = TieEmbeddings,
            MaxPositions = MaxPositions > 0 ? MaxPositions : data.Features,
            QkvBias = QkvBias,
            ModelType = QkvBias ? "qwen2" : "llama",
        };
    }
}

/// <summary>
/// A Llama-family decoder (<see cref="Llama"/>: RMSNorm, rotary positions, SwiGLU, grouped-query attention; Qwen2's q/k/v
/// biases) on token ids: a causal language model, or a classifier on the last token. <c>init_from</c> reads a Hugging Face
/// model folder — <c>config.json</c> and <c>model.safetensors</c> in its own names — or this framework's checkpoint of one
/// (the same names); export writes that folder.
/// </summary>
public sealed class LlamaKind : ModelKind<LlamaOptions>
{
    public override string Summary => "a Llama-family decoder in Hugging Face's layout (model.embed_tokens, model.layers.{i}.self_attn.q_proj, …; Llama, Qwen2, Mistral): RMSNorm, rotary positions, SwiGLU, grouped-query attention";

    public override IEnumerable<OptionError> Check(LlamaOptions o, ModelKeys model, DataShape data)
    {
        if (!data.IsText) { yield return new("model.kind", $"\"{Name}\" reads token ids, and data.dataset \"{data.Source}\" is not text"); yield break; }
        var config = o.ConfigFor(data);
        if (data.NextToken && model.Outputs > 0 && model.Outputs != config.Vocab)
            yield return new("model.outputs", $"{model.Outputs} differs from the vocabulary {config.Vocab}: a language model's outputs are its vocabulary");
        if (o.Vocab > 0 && o.Vocab < data.Vocabulary)
            yield return new("model.vocab", $"{o.Vocab} is fewer than the {data.Vocabulary} ids of tokenizer \"{data.Tokenizer}\"");
        if (data.Features > config.MaxPositions)
            yield return new("model.max_positions", $"{o.MaxPositions} is fewer than data.context {data.Features}: the model would read more positions than it has");
        // Each problem under the [model] key that sets the config.json key it names (its first word).
        foreach (var problem in config.Problems())
            yield return new(KeyOf.TryGetValue(problem.Split(' ')[0], out var key) ? "model." + key : "model", problem);
    }

    /// <summary>
    /// The [model] keys that build <paramref name="c"/>'s shape without its config.json, as <c>key=value</c> overrides: how a
    /// run fine-tuned from a Hugging Face folder is rebuilt around one of its own checkpoints (which hold weights only).
    /// Llama's <c>attention_bias</c> (a bias on o_proj too) and <c>mlp_bias</c> have no key and are refused.
    /// </summary>
    public static IReadOnlyList<string> Overrides(LlamaConfig c, string file)
    {
        if (c.OutputBias || c.MlpBias) throw new InvalidDataException($"{file}: attention_bias or mlp_bias: a checkpoint of this model cannot be rebuilt from [model] keys");
        static string Real(double x) => x.ToString("R", System.Globalization.CultureInfo.InvariantCulture) is var t && (t.Contains('.') || t.Contains('E')) ? t : t + ".0";
        return [$"model.vocab={c.Vocab}", $"model.width={c.Hidden}", $"model.intermediate={c.Intermediate}", $"model.layers={c.Layers}",
            $"model.heads={c.Heads}", $"model.kv_heads={c.KvHeads}", $"model.head_dim={c.HeadDim}", $"model.max_positions={c.MaxPositions}",
            $"model.rms_norm_eps={Real(c.RmsNormEps)}", $"model.rope_theta={Real(c.RopeTheta)}",
            $"model.tie_embeddings={(c.TieWordEmbeddings ? "true" : "false")}", $"model.qkv_bias={(c.QkvBias ? "true" : "false")}"];
    }

    /// <summary>The [model] key of each config.json key.</summary>
    static readonly Dictionary<string, string> KeyOf = new()
    {
        ["vocab_size"] = "vocab", ["hidden_size"] = "width", ["intermediate_size"] = "intermediate", ["num_hidden_layers"] = "layers",
        ["num_attention_heads"] = "heads", ["num_key_value_heads"] = "kv_heads", ["head_dim"] = "head_dim", ["rms_norm_eps"] = "rms_norm_eps",
        ["rope_theta"] = "rope_theta", ["max_position_embeddings"] = "max_positions",
    };

    /// <summary>
    /// The options completed by the <c>config.json</c> beside the <c>init_from</c> weights, when there is one: each key at its
    /// default takes the file's value; a key set to another value than the file's is refused (the weights could not load).
    /// </summary>
    public override LlamaOptions Resolve(LlamaOptions o, ModelContext context)
    {
        if (LlamaConfig.ConfigFileFor(context.InitPath) is not { } file) return o;
        var c = LlamaConfig.Read(file);
        var d = new LlamaOptions();
        var conflicts = new List<string>();
        void Same<T>(string key, T given, T fallback, T read) where T : notnull
        {
            if (!given.Equals(fallback) && !given.Equals(read)) conflicts.Add($"model.{key} = {given}, and {file} says {read}");
        }
        Same("vocab", (long)o.Vocab, d.Vocab, c.Vocab);
        Same("width", (long)o.Width, d.Width, c.Hidden);
        Same("intermediate", (long)o.Intermediate, d.Intermediate, c.Intermediate);
        Same("layers", (long)o.Layers, d.Layers, c.Layers);
        Same("heads", (long)o.Heads, d.Heads, c.Heads);
        Same("kv_heads", (long)o.KvHeads, d.KvHeads, c.KvHeads);
        Same("head_dim", (long)o.HeadDim, d.HeadDim, c.HeadWidth);
        Same("max_positions", (long)o.MaxPositions, d.MaxPositions, c.MaxPositions);
        Same("rms_norm_eps", o.RmsNormEps, d.RmsNormEps, c.RmsNormEps);
        Same("rope_theta", o.RopeTheta, d.RopeTheta, c.RopeTheta);
        Same("tie_embeddings", o.TieEmbeddings, d.TieEmbeddings, c.TieWordEmbeddings);
        Same("qkv_bias", o.QkvBias, d.QkvBias, c.QkvBias);
        if (conflicts.Count > 0) throw new InvalidDataException(string.Join("\n", conflicts));
        if (c.Problems().FirstOrDefault() is { } problem) throw new InvalidDataException($"{file}: {problem}");
        if (context.Data.IsText && context.Data.Vocabulary > c.Vocab)
            throw new InvalidDataException($"{file}: vocab_size {c.Vocab} is fewer than the {context.Data.Vocabulary} ids of tokenizer \"{context.Data.Tokenizer}\"");
        if (context.Data.Features > c.MaxPositions)
            throw new InvalidDataException($"{file}: max_position_embeddings {c.MaxPositions} is fewer than data.context {context.Data.Features}");
        return o with { FromFile = c };
    }

    public override nn.Module<Tensor, Tensor> Create(LlamaOptions o, ModelContext context, Generator generator) =>
        Llama.Create(o.ConfigFor(context.Data), generator, classes: context.Data.NextToken ? 0 : context.Outputs);

    /// <summary>A strict load reads Hugging Face's layout (<see cref="LlamaLayout.Load"/>: a tied copy of the embedding and
    /// rotary buffers allowed); a load that is not strict, or re-initialises parts, goes by name.</summary>
    public override string Load(nn.Module<Tensor, Tensor> model, LlamaOptions o, ModelContext context)
    {
        if (!context.Model.Strict || context.Model.Reinit.Count > 0 || context.InitPath.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase))
            return context.Weights.LoadByName(model, context);
        var llama = (Llama)model;
        LlamaLayout.Load(llama, context.InitPath);
        return $"init_from {WeightFile.Resolve(context.InitPath)} (Llama layout): every body tensor loaded, {llama.Config}{NewHead(model, o, context)}";
    }

    /// <summary>Writes Hugging Face's layout: the weights, and <c>config.json</c> beside them (<see cref="LlamaLayout.Save"/>).</summary>
    public override void Save(nn.Module<Tensor, Tensor> model, LlamaOptions o, ModelContext context, string path) => LlamaLayout.Save((Llama)model, path);

    /// <summary>A classifier's <c>head</c>; a language model has none.</summary>
    public override IReadOnlyList<string> Head(LlamaOptions o, ModelContext context) => context.Data.NextToken ? [] : [HeadModule];

    /// <summary>Korthikanti et al.'s shape: L layers of width d and H heads on windows of data.context tokens.</summary>
    public override TransformerShape MemoryShape(LlamaOptions o, ModelKeys model, DataShape data, int batchSize)
    {
        var c = o.ConfigFor(data);
        return new(c.Layers, c.Hidden, c.Heads, data.Features, batchSize);
    }
}
