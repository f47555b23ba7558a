using System.Text.Json;
using System.Text.Json.Nodes;

namespace Research.Core.Models;

/// <summary>
/// The shape of a <see cref="Llama"/>, in the terms of Hugging Face's <c>config.json</c> for <c>LlamaForCausalLM</c>,
/// <c>Qwen2ForCausalLM</c> and <c>MistralForCausalLM</c> (the keys each property reads are named beside it).
/// </summary>
/// <param name="Vocab"><c>vocab_size</c>: rows of the token embedding (and of <c>lm_head</c>).</param>
/// <param name="Hidden"><c>hidden_size</c> d.</param>
/// <param name="Intermediate"><c>intermediate_size</c>: the SwiGLU's inner width.</param>
/// <param name="Layers"><c>num_hidden_layers</c> L.</param>
/// <param name="Heads"><c>num_attention_heads</c> H.</param>
/// <param name="KvHeads"><c>num_key_value_heads</c> (H when absent): grouped-query attention shares each key/value head
/// among H / KvHeads query heads.</param>
public sealed record LlamaConfig(long Vocab, long Hidden, long Intermediate, long Layers, long Heads, long KvHeads)
{
    /// <summary><c>head_dim</c>: the width of one head (d / H when absent, as in Llama and Qwen2).</summary>
    public long HeadDim { get; init; }
    /// <summary><c>rms_norm_eps</c> (Llama's default 1e-6).</summary>
    public double RmsNormEps { get; init; } = 1e-6;
    /// <summary><c>rope_theta</c>: the base of the rotary frequencies (10,000 when absent).</summary>
    public double RopeTheta { get; init; } = 10_000;
    /// <summary><c>tie_word_embeddings</c>: the output projection is the token embedding (no <c>lm_head.weight</c>).
    /// Llama's and Qwen2's configs default to false.</summary>
    public bool TieWordEmbeddings { get; init; }
    /// <summary><c>max_position_embeddings</c>: the longest sequence the model reads.</summary>
    public long MaxPositions { get; init; } = 2048;
    /// <summary>Biases on <c>q_proj</c>, <c>k_proj</c>, <c>v_proj</c>: Qwen2's architecture always has them; Llama's
    /// <c>attention_bias</c> gives them (and one on <c>o_proj</c>).</summary>
    public bool QkvBias { get; init; }
    /// <summary>A bias on <c>o_proj</c>: Llama's <c>attention_bias</c> (Qwen2 has none).</summary>
    public bool OutputBias { get; init; }
    /// <summary><c>mlp_bias</c>: biases on <c>gate_proj</c>, <c>up_proj</c>, <c>down_proj</c> (Llama; default false).</summary>
    public bool MlpBias { get; init; }
    /// <summary><c>model_type</c> as read (<c>llama</c>, <c>qwen2</c>, <c>mistral</c>), written back by <see cref="ToJson"/>.</summary>
    public string ModelType { get; init; } = "llama";
    /// <summary>Mistral's and Qwen2's sliding attention window, when it is on (0: none): not implemented, so a sequence
    /// longer than it is refused rather than attended in full.</summary>
    public long SlidingWindow { get; init; }

    /// <summary>The width of one head: <see cref="HeadDim"/>, or d / H.</summary>
    public long HeadWidth => HeadDim > 0 ? HeadDim : Hidden / Math.Max(1, Heads);

    /// <summary>The number of scalar parameters of the language model: V·d (embedding) + L·(d·H·h + 2·d·K·h + H·h·d
    /// (q, k, v, o) + 3·d·I (gate, up, down) + 2d (two RMSNorms) + biases) + d (final norm) + V·d when untied; h the head
    /// width, K the key/value heads.</summary>
    public long ParameterCount
    {
        get
        {
            var (d, h, q, kv) = (Hidden, HeadWidth, Heads * HeadWidth, KvHeads * HeadWidth);
            var block = d * q + 2 * d * kv + q * d + 3 * d * Intermediate + 2 * d
                        + (QkvBias ? q + 2 * kv : 0) + (OutputBias ? d : 0) + (MlpBias ? 2 * Intermediate + d : 0);
            return Vocab * d + Layers * block + d + (TieWordEmbeddings ? 0 : Vocab * d);
        }
    }

    /// <summary>The problems of this shape, each a sentence naming the <c>config.json</c> key; empty when it builds.</summary>
    public IEnumerable<string> Problems()
    {
        if (Vocab < 1) yield return $"vocab_size {Vocab} is not positive";
        if (Hidden < 1) yield return $"hidden_size {Hidden} is not positive";
        if (Intermediate < 1) yield return $"intermediate_size {Intermediate} is not positive";
        if (Layers < 0) yield return $"num_hidden_layers {Layers} is negative";
        if (Heads < 1) yield return $"num_attention_heads {Heads} is not positive";
        else if (HeadDim <= 0 && Hidden % Heads != 0) yield return $"num_attention_heads {Heads} does not divide hidden_size {Hidden}";
        if (KvHeads < 1 || (Heads > 0 && Heads % KvHeads != 0))
            yield return $"num_key_value_heads {KvHeads} does not divide num_attention_heads {Heads} (each key/value head serves a group of query heads)";
        if (HeadWidth % 2 != 0) yield return $"head_dim {HeadWidth} is odd; rotary positions rotate pairs of dimensions";
        if (RmsNormEps <= 0 || !double.IsFinite(RmsNormEps)) yield return $"rms_norm_eps {RmsNormEps} is not a positive number";
        if (RopeTheta <= 1 || !double.IsFinite(RopeTheta)) yield return $"rope_theta {RopeTheta} is not a number above 1";
        if (MaxPositions < 1) yield return $"max_position_embeddings {MaxPositions} is not positive";
    }

    public override string ToString() =>
        $"{ModelType} d {Hidden}, {Layers} layers, {Heads} heads ({KvHeads} key/value), SwiGLU {Intermediate}, vocabulary {Vocab}" +
        $"{(TieWordEmbeddings ? ", tied" : "")}{(QkvBias ? ", q/k/v biases" : "")} ({ParameterCount:N0} parameters)";

    /// <summary>The model types whose <c>config.json</c> this reads: one architecture, which differs in its biases only.</summary>
    public static IReadOnlyList<string> ModelTypes { get; } = ["llama", "qwen2", "mistral"];

    /// <summary>The <c>config.json</c> of a model folder, or of the folder holding a weights file; null when there is none.</summary>
    public static string? ConfigFileFor(string path)
    {
        if (path.Length == 0) return null;
        var folder = Directory.Exists(path) ? path : Path.GetDirectoryName(Path.GetFullPath(path));
        var file = folder is null ? null : Path.Combine(folder, "config.json");
        return file is not null && File.Exists(file) ? file : null;
    }

    /// <summary>
    /// Reads Hugging Face's <c>config.json</c> (keys named on each property; <c>architectures</c> or <c>model_type</c> decide
    /// Qwen2's q/k/v biases). Refused, naming the file and the key: another model type, an activation other than
    /// <c>silu</c>, <c>rope_scaling</c> (Llama 3.1's long-context frequencies are not implemented), a missing size.
    /// </summary>
    /// <exception cref="InvalidDataException">The file is not such a config.</exception>
    public static LlamaConfig Read(string file) => Parse(File.ReadAllText(file), file);

    /// <summary>The repository's path of <see cref="Llama2_7B"/>'s config.json (embedded in this assembly from there).</summary>
    public const string Llama2_7BFile = "experiments/configs/models/llama-2-7b/config.json";

    /// <summary>Llama-2-7B's shape (d 4096, SwiGLU 11008, 32 layers, 32 heads and key/value heads, vocabulary 32,000,
    /// untied): 6,738,415,616 parameters. The memory estimator's 7B row is this model; read from the config.json the
    /// repository commits at <see cref="Llama2_7BFile"/>, embedded at build time.</summary>
    public static LlamaConfig Llama2_7B => Llama2_7BConfig.Value;

    static readonly Lazy<LlamaConfig> Llama2_7BConfig = new(() =>
    {
        using var stream = typeof(LlamaConfig).Assembly.GetManifestResourceStream("llama-2-7b.config.json")
            ?? throw new InvalidOperationException($"{Llama2_7BFile} is not embedded in {typeof(LlamaConfig).Assembly.GetName().Name}");
        using var reader = new StreamReader(stream);
        return Parse(reader.ReadToEnd(), Llama2_7BFile);
    });

    /// <summary><see cref="Read"/> on the text of a config.json; <paramref name="file"/> names it in messages.</summary>
    public static LlamaConfig Parse(string text, string file)
    {
        JsonObject json;
        try { json = JsonNode.Parse(text) as JsonObject ?? throw new InvalidDataException($"{file}: not a JSON object"); }
        catch (JsonException e) { throw new InvalidDataException($"{file}: not JSON ({e.Message})", e); }
        string? Text(string key) => json[key] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
        long Long(string key, long? fallback = null)
        {
            var node = json[key];
            if (node is null) return fallback ?? throw new InvalidDataException($"{file}: no \"{key}\" (a Llama-family config.json gives it)");
            return node is JsonValue v && v.TryGetValue<long>(out var n) ? n
                : throw new InvalidDataException($"{file}: \"{key}\" is {node.ToJsonString()}, not an integer");
        }
        double Double(string key, double fallback)
        {
            var node = json[key];
            if (node is null) return fallback;
            return node is JsonValue v && v.TryGetValue<double>(out var x) ? x
                : throw new InvalidDataException($"{file}: \"{key}\" is {node.ToJsonString()}, not a number");
        }
        bool Bool(string key, bool fallback)
        {
            var node = json[key];
            if (node is null) return fallback;
            return node is JsonValue v && v.TryGetValue<bool>(out var b) ? b
                : throw new InvalidDataException($"{file}: \"{key}\" is {node.ToJsonString()}, not true or false");
        }

        var architectures = json["architectures"] is JsonArray a ? a.Select(x => x?.GetValue<string>() ?? "").ToList() : [];
        var type = Text("model_type")
                   ?? (architectures.Any(x => x.StartsWith("Qwen2")) ? "qwen2" : architectures.Any(x => x.StartsWith("Mistral")) ? "mistral" : "llama");
        if (!ModelTypes.Contains(type))
            throw new InvalidDataException($"{file}: model_type \"{type}\" is not one this kind reads ({string.Join(", ", ModelTypes)})");
        if ((Text("hidden_act") ?? "silu") != "silu")
            throw new InvalidDataException($"{file}: hidden_act \"{Text("hidden_act")}\"; the Llama family's SwiGLU uses silu");
        if (json["rope_scaling"] is { } scaling)
            throw new InvalidDataException($"{file}: rope_scaling {scaling.ToJsonString()} is not implemented (plain rotary positions with rope_theta only)");
        var qwen2 = type == "qwen2" || architectures.Any(x => x.StartsWith("Qwen2"));
        var attentionBias = Bool("attention_bias", false);
        var heads = Long("num_attention_heads");
        // Qwen2 attends within a sliding window only when use_sliding_window says so; Mistral whenever sliding_window is set.
        var window = json["sliding_window"] is JsonValue w && w.TryGetValue<long>(out var sw) && (type == "mistral" || Bool("use_sliding_window", false)) ? sw : 0;
        return new LlamaConfig(Long("vocab_size"), Long("hidden_size"), Long("intermediate_size"), Long("num_hidden_layers"), heads,
            Long("num_key_value_heads", heads))
        {
            HeadDim = json["head_dim"] is null ? 0 : Long("head_dim"),
            RmsNormEps = Double("rms_norm_eps", 1e-6),
            RopeTheta = Double("rope_theta", 10_000),
            TieWordEmbeddings = Bool("tie_word_embeddings", false),
            MaxPositions = Long("max_position_embeddings", 2048),
            QkvBias = qwen2 || attentionBias,
            OutputBias = !qwen2 && attentionBias,
            MlpBias = Bool("mlp_bias", false),
            ModelType = type,
            SlidingWindow = window,
        };
    }

    /// <summary>
    /// This shape as Hugging Face's <c>config.json</c>, which <c>AutoModelForCausalLM.from_pretrained</c> reads: Qwen2's
    /// architecture when the q/k/v biases stand alone (without one on <c>o_proj</c>), else Llama's with
    /// <c>attention_bias</c>.
    /// </summary>
    public string ToJson()
    {
        var qwen2 = QkvBias && !OutputBias && !MlpBias;
        if (QkvBias != OutputBias && !qwen2) throw new InvalidOperationException("q/k/v biases without o_proj's and with mlp biases are neither Llama's nor Qwen2's layout");
        var type = qwen2 ? "qwen2" : ModelType == "mistral" && !QkvBias && !MlpBias ? "mistral" : "llama";
        var json = new JsonObject
        {
            ["architectures"] = new JsonArray(type switch { "qwen2" => "Qwen2ForCausalLM", "mistral" => "MistralForCausalLM", _ => "LlamaForCausalLM" }),
            ["model_type"] = type,
            ["vocab_size"] = Vocab,
            ["hidden_size"] = Hidden,
            ["intermediate_size"] = Intermediate,
            ["num_hidden_layers"] = Layers,
            ["num_attention_heads"] = Heads,
            ["num_key_value_heads"] = KvHeads,
            ["hidden_act"] = "silu",
            ["rms_norm_eps"] = RmsNormEps,
            ["rope_theta"] = RopeTheta,
            ["max_position_embeddings"] = MaxPositions,
            ["tie_word_embeddings"] = TieWordEmbeddings,
        };
        // Written only when set apart from d / H, so that a config read back is the same record.
        if (HeadDim > 0) json["head_dim"] = HeadDim;
        if (type == "llama") { json["attention_bias"] = QkvBias; json["mlp_bias"] = MlpBias; }
        if (type == "qwen2") json["use_sliding_window"] = false;
        if (type == "mistral") json["sliding_window"] = SlidingWindow > 0 ? SlidingWindow : null;
        return json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n";
    }
}
