using Research.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace ResearchPlugin1;

/// <summary>The kind's keys of [model], beside the keys every kind shares (outputs, init_from, strict, reinit):
/// <code>[model]
/// kind = "research-plugin-1"
/// width = 64</code></summary>
[ModelOptions("research-plugin-1")]
public sealed record Options
{
    /// <summary>Width of each of the two hidden layers.</summary>
    [Option(Min = 1, Max = 65_536)]
    public int Width { get; init; } = 32;
}

/// <summary>features → body (Linear, tanh, Linear, tanh) → head (Linear). The head's input is the representation the
/// probes read (<see cref="ModelKind.Representation"/>: "head" by default).</summary>
public sealed class Network : nn.Module<Tensor, Tensor>
{
    readonly nn.Module<Tensor, Tensor> body;
    readonly nn.Module<Tensor, Tensor> head;

    public Network(long features, long width, long outputs) : base("research-plugin-1")
    {
        body = nn.Sequential(nn.Linear(features, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh());
        head = nn.Linear(width, outputs);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => head.call(body.call(x));
}

/// <summary>
/// A model kind: its checks against the data, and a model made from a seeded generator. Loading and saving weights
/// (by parameter name), the head ("head"), the probes' representation (the head's input) and the memory shape (none)
/// are the defaults; override them for a published layout or a transformer.
/// </summary>
public sealed class Plugin : ModelKind<Options>
{
    public override string Summary => "a two-layer tanh network with a linear head";

    public override IEnumerable<OptionError> Check(Options o, ModelKeys model, DataShape data)
    {
        if (data.Input != InputKind.Vectors && data.Input != InputKind.Images)
            yield return new("model.kind", $"\"{Name}\" reads feature vectors or flattened images, not {data.Input} of \"{data.Source}\"");
    }

    public override nn.Module<Tensor, Tensor> Create(Options o, ModelContext context, Generator generator)
    {
        var model = new Network(context.Target.Features, o.Width, context.Outputs);
        // Every value from the generator (the same model in every process of a run): U(−1/√fan_in, 1/√fan_in), the
        // default of nn.Linear, drawn in parameter order.
        using (no_grad())
        {
            long fanIn = 1;
            foreach (var (_, p) in model.named_parameters())
            {
                if (p.dim() == 2) fanIn = p.shape[1];
                var bound = 1.0 / Math.Sqrt(fanIn);
                p.copy_(rand(p.shape, generator: generator).mul(2 * bound).sub(bound));
            }
        }
        return model;
    }
}
