using Research.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace Plugin.Open;

/// <summary>[data] keys of <c>rings</c>.</summary>
public sealed class RingsOptions
{
    /// <summary>Training items (the test split has a quarter as many).</summary>
    [Option(Min = 8)]
    public int RingItems { get; set; } = 800;
    /// <summary>Classes: class k is the ring k ≤ ‖x‖·C &lt; k + 1 of the unit disc.</summary>
    [Option(Min = 2, Max = 16)]
    public int RingClasses { get; set; } = 4;
    /// <summary>Noise features appended to the two coordinates.</summary>
    [Option(Min = 0, Max = 64)]
    public int RingNoise { get; set; } = 2;
}

/// <summary><c>rings</c>: points of the unit disc labelled by their ring, drawn from the stream "rings".</summary>
public sealed class RingsSource : DataSource<RingsOptions>
{
    public override string Name => "rings";
    public override string Summary => "points of the unit disc labelled by their ring (an outside plugin's source)";
    public override IReadOnlyList<string> Streams => ["rings"];

    public override DataShape Shape(DataRequest request) => new(Name, InputKind.Vectors, 2 + OptionsOf(request).RingNoise, OptionsOf(request).RingClasses);

    protected override IEnumerable<OptionError> Validate(DataKeys data, RingsOptions o)
    {
        if (data.Classes.Any(c => c >= o.RingClasses)) yield return new("data.classes", $"names a class beyond the {o.RingClasses} rings");
    }

    public override DataSplits Load(DataRequest request)
    {
        var o = OptionsOf(request);
        using var g = request.Stream("rings");
        Batch Draw(int n)
        {
            // Radius r = √u is uniform over the disc's area; the ring is ⌊r·C⌋.
            var r = rand(n, generator: g).sqrt();
            var angle = rand(n, generator: g).mul(2 * Math.PI);
            var x = cat([stack([r.mul(angle.cos()), r.mul(angle.sin())], 1), randn(n, o.RingNoise, generator: g).mul(0.1)], 1);
            var y = r.mul(o.RingClasses).floor().clamp_max(o.RingClasses - 1).to_type(ScalarType.Int64);
            return new Batch(x, y);
        }
        return new DataSplits(Draw(o.RingItems), Draw(o.RingItems / 4));
    }
}

/// <summary>[model] keys of <c>open-mlp</c>.</summary>
[ModelOptions("open-mlp")]
public sealed class OpenMlpOptions
{
    /// <summary>Width of each of the two hidden layers.</summary>
    [Option(Min = 1, Max = 4096)]
    public int OpenWidth { get; set; } = 32;
}

/// <summary>features → body (two Linear + tanh) → head.</summary>
public sealed class OpenMlp : nn.Module<Tensor, Tensor>
{
    readonly nn.Module<Tensor, Tensor> body;
    readonly nn.Module<Tensor, Tensor> head;

    public OpenMlp(long features, long width, long outputs) : base("open-mlp")
    {
        body = nn.Sequential(nn.Linear(features, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh());
        head = nn.Linear(width, outputs);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => head.call(body.call(x));
}

/// <summary><c>open-mlp</c>: a model kind from outside the core.</summary>
public sealed class OpenMlpKind : ModelKind<OpenMlpOptions>
{
    public override string Summary => "a two-layer tanh network (an outside plugin's kind)";

    public override IEnumerable<OptionError> Check(OpenMlpOptions o, ModelKeys model, DataShape data)
    {
        if (data.Input != InputKind.Vectors) yield return new("model.kind", $"\"{Name}\" reads feature vectors, not {data.Input} of \"{data.Source}\"");
    }

    public override nn.Module<Tensor, Tensor> Create(OpenMlpOptions o, ModelContext context, Generator generator)
    {
        var model = new OpenMlp(context.Target.Features, o.OpenWidth, context.Outputs);
        // Every value from the generator: U(−1/√fan_in, 1/√fan_in), as nn.Linear's default, drawn in parameter order.
        using (no_grad())
            foreach (var (name, p) in model.named_parameters())
            {
                var fanIn = p.dim() == 2 ? p.shape[1] : model.named_parameters().First(q => q.name == name[..^"bias".Length] + "weight").parameter.shape[1];
                var bound = 1.0 / Math.Sqrt(fanIn);
                p.copy_(rand(p.shape, generator: generator).mul(2 * bound).sub(bound));
            }
        return model;
    }
}
