using Research.Abstractions;
using Research.Core.Config;
using Research.Core.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Models.Kinds;

/// <summary><c>[model] kind = "resnet"</c>: a ResNet's stages, input side and BatchNorm statistics.</summary>
[ModelOptions("resnet")]
public sealed record ResNetOptions : IValidatable
{
    /// <summary>Basic blocks per stage; empty: [2, 2, 2, 2] (ResNet-18), or the stages of the file <c>init_from</c> names
    /// (the published ImageNet ResNet-18 has [2, 2, 2, 3]).</summary>
    [Option(Min = 1, Max = 64)]
    public int[] Blocks { get; init; } = [];
    /// <summary>The side images are resized to (a multiple of 32); grey images fill all three channels on the published
    /// model's scale (0–255, less its BGR means).</summary>
    [Option(Min = 32, Max = 1024)]
    public int ImageSide { get; init; } = 64;
    /// <summary><c>update</c> (BatchNorm normalises with the batch's statistics in training and moves its running ones) or
    /// <c>frozen</c> (always the running statistics, left unchanged; scale and shift still learn).</summary>
    [Option(OneOf = ["update", "frozen"])]
    public string BatchNorm { get; init; } = "update";

    public IEnumerable<OptionError> Validate()
    {
        if (ImageSide % 32 != 0) yield return new("image_side", "is not a multiple of 32 (the ResNet halves the side five times)");
        if (Blocks.Length is not (0 or 4)) yield return new("blocks", $"has {Blocks.Length} entries; a ResNet has four stages");
    }
}

/// <summary>
/// A ResNet (<see cref="ResNet"/>) in torchvision's names on grey images resized to <c>image_side</c>; its representation is
/// the pooled 512-wide features the <c>head</c> reads. <c>init_from</c> reads an ONNX export such as the published
/// <see cref="PublishedModels.ResNet18"/> (the body, strictly; the head stays new; the stages are the file's) or this
/// framework's names.
/// </summary>
public sealed class ResNetKind : ModelKind<ResNetOptions>
{
    public override string Summary => "ResNet in torchvision's names (conv1, bn1, layer{s}.{b}.*; ResNet-18 by default) on images resized to image_side";

    public override IReadOnlyList<string> Published => [PublishedModels.ResNet18];

    public override bool ReadsOnnx => true;

    public override IEnumerable<OptionError> Check(ResNetOptions options, ModelKeys model, DataShape data)
    {
        if (data.IsText) yield return new("model.kind", $"\"{Name}\" reads images or feature vectors, and data.dataset \"{data.Source}\" is text: use gpt or bert");
        else if (data.Input != InputKind.Images || data.ImageSide != 28) yield return new("model.kind", $"\"{Name}\" reads 28×28 grey images (fashion-mnist), not \"{data.Source}\" features");
    }

    /// <summary>The stages: <c>blocks</c>, else those of the ONNX file <c>init_from</c> names, else ResNet-18's.</summary>
    public override ResNetOptions Resolve(ResNetOptions options, ModelContext context)
    {
        if (options.Blocks.Length > 0) return options;
        if (!context.InitPath.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase)) return options with { Blocks = [.. ResNet.ResNet18Blocks] };
        using var weights = ResNetOnnx.Read(context.InitPath);
        return options with { Blocks = [.. weights.Blocks] };
    }

    public override nn.Module<Tensor, Tensor> Create(ResNetOptions options, ModelContext context, Generator generator)
    {
        var resnet = ResNet.Create(options.Blocks.Length > 0 ? options.Blocks : ResNet.ResNet18Blocks, context.Outputs, generator);
        resnet.GreyInputSide = options.ImageSide;
        resnet.FreezeBatchNormStatistics = options.BatchNorm == "frozen";
        return resnet;
    }

    public override string Load(nn.Module<Tensor, Tensor> model, ResNetOptions options, ModelContext context)
    {
        var path = context.InitPath;
        if (!path.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase)) return context.Weights.LoadByName(model, context);
        var resnet = (ResNet)model;
        using var weights = ResNetOnnx.Read(path);
        resnet.LoadPretrained(weights.Tensors, path, weights.Origins);
        return $"init_from {path} (ONNX): {weights.Tensors.Count} tensors into ResNet [{string.Join(", ", resnet.Blocks)}]{NewHead(model, options, context)}";
    }
}
