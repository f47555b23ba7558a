using Research.Abstractions;
using Research.Core.Config;
using Research.Core.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Models.Kinds;

/// <summary><c>[model] kind = "mlp"</c>: the keys an MLP reads.</summary>
[ModelOptions("mlp")]
public sealed record MlpOptions
{
    /// <summary>Widths of the hidden layers, each Linear then ReLU (<c>layers.{i}.*</c>), before the <c>head</c>.</summary>
    [Option(Min = 1, Max = 1_000_000)]
    public int[] Hidden { get; init; } = [256, 256];
}

/// <summary>
/// A multi-layer perceptron (<see cref="Mlp"/>) on flat feature vectors, PyTorch's Linear initialisation drawn from the seed.
/// Its head is <c>head</c>, and its representation the last hidden layer's output.
/// </summary>
public sealed class MlpKind : ModelKind<MlpOptions>
{
    public override string Summary => "Linear-ReLU layers on feature vectors or flattened images (layers.{i}, head)";

    public override IEnumerable<OptionError> Check(MlpOptions options, ModelKeys model, DataShape data)
    {
        if (data.IsText) yield return new("model.kind", $"\"{Name}\" reads images or feature vectors, and data.dataset \"{data.Source}\" is text: use gpt or bert");
    }

    public override nn.Module<Tensor, Tensor> Create(MlpOptions options, ModelContext context, Generator generator)
    {
        var mlp = new Mlp(context.Target.Features, options.Hidden, context.Outputs);
        Init.LinearDefault(mlp, generator);
        return mlp;
    }
}
