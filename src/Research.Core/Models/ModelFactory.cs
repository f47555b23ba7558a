using Research.Core.Checkpoints;
using Research.Core.Config;
using Research.Core.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Models;

/// <summary>What a model is built for: the data's feature width (flat inputs) and the outputs it needs.</summary>
/// <param name="Features">D of flat inputs [B, D]; the context T for text.</param>
/// <param name="Outputs">Classes of the head, or the vocabulary of a language model.</param>
public sealed record ModelTarget(long Features, int Outputs);

/// <summary>
/// The one place a <c>[model]</c> section becomes a network: its kind and shape, the seeded initialisation, the
/// published or saved weights of <c>init_from</c>, then <c>reinit</c>. Every model it makes is an
/// <c>nn.Module&lt;Tensor, Tensor&gt;</c> that the core calls through <see cref="ModelInput"/>.
/// </summary>
public static class ModelFactory
{
    /// <summary>The GPT shape of a config: vocabulary from the tokenizer, positions from the context unless given.</summary>
    public static GptShape GptShapeOf(ModelSection m, DataShape d) => new(
        Vocab: d.Vocabulary,
        MaxLen: m.MaxPositions > 0 ? m.MaxPositions : d.Features,
        Width: m.Width > 0 ? m.Width : 256,
        Heads: m.Heads > 0 ? m.Heads : 4,
        Layers: m.Layers > 0 ? m.Layers : 4);

    /// <summary>The BERT shape of a config: MiniLM's unless changed, with the tokenizer's vocabulary.</summary>
    public static BertShape BertShapeOf(ModelSection m, DataShape d)
    {
        var width = m.Width > 0 ? m.Width : BertShape.AllMiniLmL6V2.Width;
        return BertShape.AllMiniLmL6V2 with
        {
            Vocab = d.Vocabulary,
            MaxPositions = m.MaxPositions > 0 ? m.MaxPositions : BertShape.AllMiniLmL6V2.MaxPositions,
            Width = width,
            Heads = m.Heads > 0 ? m.Heads : BertShape.AllMiniLmL6V2.Heads,
            Layers = m.Layers > 0 ? m.Layers : BertShape.AllMiniLmL6V2.Layers,
            Intermediate = m.Intermediate > 0 ? m.Intermediate : 4 * width,
        };
    }

    /// <summary>
    /// The problems of a model and data pairing, each as (key, message), before anything is built: a kind reads one
    /// kind of input (images or vectors, or token ids), and a language model's outputs are its vocabulary.
    /// </summary>
    public static IEnumerable<(string Key, string Message)> Check(ModelSection m, DataShape d)
    {
        bool text = d.IsText;
        switch (m.Kind)
        {
            case "mlp" when text:
            case "cnn" when text:
            case "resnet" when text:
                yield return ("model.kind", $"\"{m.Kind}\" reads images or feature vectors, and data.dataset \"{d.Source}\" is text: use gpt or bert");
                break;
            case "gpt" or "bert" when !text:
                yield return ("model.kind", $"\"{m.Kind}\" reads token ids, and data.dataset \"{d.Source}\" is not text");
                break;
            case "cnn" or "resnet" when d.Input != InputKind.Images || d.ImageSide != 28:
                yield return ("model.kind", $"\"{m.Kind}\" reads 28×28 grey images (fashion-mnist), not \"{d.Source}\" features");
                break;
            case "bert" when d.NextToken:
                yield return ("model.kind", "\"bert\" is an encoder (it sees the whole text): a causal language model is \"gpt\"");
                break;
        }
        if (m.Kind == "gpt" && d.NextToken && m.Outputs > 0 && m.Outputs != d.Vocabulary)
            yield return ("model.outputs", $"{m.Outputs} differs from the {d.Vocabulary} ids of tokenizer \"{d.Tokenizer}\": a language model's outputs are its vocabulary (tied to the token embedding)");
        if (m.Kind == "gpt" && d.Features > (m.MaxPositions > 0 ? m.MaxPositions : d.Features))
            yield return ("model.max_positions", $"{m.MaxPositions} is fewer than data.context {d.Features}: the model would have no position for the last tokens");
        if (m.Kind == "bert" && d.Features > (m.MaxPositions > 0 ? m.MaxPositions : BertShape.AllMiniLmL6V2.MaxPositions))
            yield return ("data.context", $"{d.Features} is more than the BERT's {(m.MaxPositions > 0 ? m.MaxPositions : BertShape.AllMiniLmL6V2.MaxPositions)} positions");
        var width = m.Width > 0 ? m.Width : m.Kind == "bert" ? (int)BertShape.AllMiniLmL6V2.Width : 256;
        var heads = m.Heads > 0 ? m.Heads : m.Kind == "bert" ? (int)BertShape.AllMiniLmL6V2.Heads : 4;
        if (m.Kind is "gpt" or "bert" && width % heads != 0)
            yield return ("model.heads", $"{heads} heads do not divide the width {width}");
        if (PublishedName(m.InitFrom) is { } published)
        {
            if ((published == PublishedModels.MiniLM) != (m.Kind == "bert") || (published == PublishedModels.ResNet18) != (m.Kind == "resnet"))
                yield return ("model.init_from", $"\"{published}\" is a {(published == PublishedModels.MiniLM ? "bert" : "resnet")}, and model.kind is \"{m.Kind}\"");
            else if (published == PublishedModels.MiniLM && d.Tokenizer != "wordpiece")
                yield return ("data.tokenizer", $"\"{d.Tokenizer}\": {published} reads the ids of its own vocabulary, tokenizer \"wordpiece\"");
        }
    }

    /// <summary>The published model <c>init_from</c> names, if it names one.</summary>
    public static string? PublishedName(string initFrom) => PublishedModels.All.FirstOrDefault(p => p.Name == initFrom)?.Name;

    /// <summary>The folder published models are unpacked into: <c>models_dir</c> (relative to the config file), else the default.</summary>
    public static string ModelsDir(ModelSection m, string configFile) => m.ModelsDir.Length > 0
        ? Path.GetFullPath(m.ModelsDir, Path.GetDirectoryName(Path.GetFullPath(configFile))!)
        : PublishedModels.DefaultFolder();

    /// <summary>
    /// The file <c>init_from</c> names, resolved: a published model's weights (unpacked into the models folder), else the
    /// path relative to the config file's folder, then to the working directory. Empty when there is none.
    /// </summary>
    public static string InitPath(ModelSection m, string configFile)
    {
        if (m.InitFrom.Length == 0) return "";
        if (PublishedName(m.InitFrom) is { } name)
            return PublishedModels.Fetch(name, ModelsDir(m, configFile)).File(PublishedModels.WeightsFile(name));
        var path = Path.GetFullPath(m.InitFrom, Path.GetDirectoryName(Path.GetFullPath(configFile))!);
        return File.Exists(path) || Directory.Exists(path) ? path : Path.GetFullPath(m.InitFrom);
    }

    /// <summary>The ResNet stages: <c>blocks</c>, else those of the ONNX file <c>init_from</c> names, else ResNet-18's.</summary>
    public static IReadOnlyList<int> ResNetBlocks(ModelSection m, string initPath)
    {
        if (m.Blocks.Length > 0) return m.Blocks;
        if (initPath.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase))
        {
            using var weights = ResNetOnnx.Read(initPath);
            return weights.Blocks;
        }
        return ResNet.ResNet18Blocks;
    }

    /// <summary>
    /// A model of the config's kind and shape, every value drawn from <paramref name="generator"/> (each kind's reference
    /// initialisation: PyTorch's Linear/Conv default for mlp and cnn, GPT-2's, BERT's, torchvision's ResNet).
    /// </summary>
    public static nn.Module<Tensor, Tensor> Create(ModelSection m, DataShape d, ModelTarget target, IReadOnlyList<int>? blocks, Generator generator)
    {
        var outputs = m.Outputs > 0 ? m.Outputs : target.Outputs;
        switch (m.Kind)
        {
            case "mlp":
            {
                var mlp = new Mlp(target.Features, m.Hidden, outputs);
                Init.LinearDefault(mlp, generator);
                return mlp;
            }
            case "cnn": return Cnn.Create(outputs, generator);
            case "gpt": return Gpt.Create(GptShapeOf(m, d), generator, m.Dropout, classes: d.NextToken ? 0 : outputs);
            case "bert": return Bert.Create(BertShapeOf(m, d), generator, outputs);
            case "resnet":
            {
                var resnet = ResNet.Create(blocks ?? ResNet.ResNet18Blocks, outputs, generator);
                resnet.GreyInputSide = m.ImageSide;
                resnet.FreezeBatchNormStatistics = m.BatchNorm == "frozen";
                return resnet;
            }
            default: throw new ArgumentException($"unknown model kind '{m.Kind}'");
        }
    }

    /// <summary>
    /// Loads <paramref name="path"/> into <paramref name="model"/> by its format: an ONNX file into a bert or a resnet (the
    /// body, strictly; the head stays new), a GPT-2 <c>transformer.*</c> safetensors file into a gpt (strictly, the head
    /// new), otherwise our own names (<see cref="WeightFile.Load"/>, strict or not, <c>reinit</c> prefixes may be absent).
    /// Returns what was loaded, for the run's log.
    /// </summary>
    public static string Load(nn.Module<Tensor, Tensor> model, string path, ModelSection m)
    {
        var onnx = path.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase);
        var head = model.named_parameters().Any(p => p.name.StartsWith("head.")) ? "; head new (not in the file)" : "";
        switch (model)
        {
            case Bert bert when onnx:
            {
                var report = bert.LoadOnnx(OnnxWeights.Read(path));
                return $"init_from {path} (ONNX): {report.Sources.Count} tensors into the BERT body, {report.Ignored.Count} initializers left out{head}";
            }
            case ResNet resnet when onnx:
            {
                using var weights = ResNetOnnx.Read(path);
                resnet.LoadPretrained(weights.Tensors, path, weights.Origins);
                return $"init_from {path} (ONNX): {weights.Tensors.Count} tensors into ResNet [{string.Join(", ", resnet.Blocks)}]{head}";
            }
            case Gpt gpt when !onnx && Gpt2Layout.IsGpt2File(path):
                Gpt2Layout.Load(gpt, path);
                return $"init_from {path} (GPT-2 layout): every body tensor loaded{head}";
        }
        if (onnx) throw new InvalidDataException($"init_from {path}: an ONNX file is read into a bert or a resnet, not a {m.Kind}");
        var loaded = WeightFile.Load(model, path, m.Strict, m.Reinit);
        var summary = $"init_from {path}: loaded {loaded.Loaded.Count} tensors";
        if (!loaded.IsComplete)
            summary += $"; missing: [{string.Join(", ", loaded.Missing)}]; unexpected: [{string.Join(", ", loaded.Unexpected)}]" +
                       (loaded.ShapeMismatch.Count > 0 ? $"; shape mismatch: [{string.Join(", ", loaded.ShapeMismatch)}]" : "");
        return summary;
    }

    /// <summary>
    /// Re-initialises the parameters and buffers under <paramref name="prefixes"/> as a fresh model of the same config
    /// would have them, taken from a model <paramref name="fresh"/> builds (each kind's own initialisation, not a generic one).
    /// </summary>
    public static void Reinitialise(nn.Module<Tensor, Tensor> model, Func<nn.Module<Tensor, Tensor>> fresh, IReadOnlyCollection<string> prefixes)
    {
        using var source = fresh();
        var values = source.state_dict();
        using var _ = no_grad();
        foreach (var (name, target) in model.state_dict())
            if (prefixes.Any(p => name == p || name.StartsWith(p + ".")))
                target.copy_(values[name]);
    }
}
