using Research.Abstractions;
using Research.Core.Config;
using Research.Core.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Models.Kinds;

/// <summary><c>[model] kind = "cnn"</c>: the network's shape is fixed, so it has no keys of its own.</summary>
[ModelOptions("cnn")]
public sealed record CnnOptions;

/// <summary>The small convolutional network of <see cref="Cnn"/> for 28×28 grey images; its representation is the 128-wide
/// dense layer's output that <c>head</c> reads.</summary>
public sealed class CnnKind : ModelKind<CnnOptions>
{
    public override string Summary => "two 3×3 convolutions and a dense layer for 28×28 grey images (conv1, conv2, fc, head)";

    public override IEnumerable<OptionError> Check(CnnOptions options, ModelKeys model, DataShape data)
    {
        if (data.IsText) yield return new("model.kind", $"\"{Name}\" reads images or feature vectors, and data.dataset \"{data.Source}\" is text: use gpt or bert");
        else if (data.Input != InputKind.Images || data.ImageSide != 28) yield return new("model.kind", $"\"{Name}\" reads 28×28 grey images (fashion-mnist), not \"{data.Source}\" features");
    }

    public override nn.Module<Tensor, Tensor> Create(CnnOptions options, ModelContext context, Generator generator) =>
        Cnn.Create(context.Outputs, generator);
}
