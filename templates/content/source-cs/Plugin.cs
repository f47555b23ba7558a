using Research.Abstractions;
using static TorchSharp.torch;

namespace ResearchPlugin1;

/// <summary>The source's keys of [data], beside the core's (classes, batch_size, validation_fraction, …):
/// <code>[data]
/// dataset = "research-plugin-1"
/// ring_items = 2000
/// ring_classes = 4</code></summary>
public sealed record Options
{
    /// <summary>Training items (the test split has a quarter as many).</summary>
    [Option(Min = 8, Max = 10_000_000)]
    public int RingItems { get; init; } = 1000;

    /// <summary>Classes: class k is the ring k ≤ C·‖x‖ &lt; k + 1 of the unit disc.</summary>
    [Option(Min = 2, Max = 64)]
    public int RingClasses { get; init; } = 4;

    /// <summary>Noise features appended to the two coordinates (standard deviation 0.1).</summary>
    [Option(Min = 0, Max = 1024)]
    public int RingNoise { get; init; } = 2;
}

/// <summary>
/// A data source: points of the unit disc labelled by their ring. It says what its items are without loading them
/// (<see cref="Shape"/>) and loads its splits as named tensors (<see cref="Load"/>): <c>input</c> [N, D] float32 and
/// <c>targets</c> [N] int64. The core does the rest — the class filter, the training limit, the seeded validation
/// holdout, batching, a study's tasks (split-class works on any classes), replay. Every draw comes from the request's
/// named stream, so every process of a run, and a resumed run, sees the same items.
/// </summary>
public sealed class Plugin : DataSource<Options>
{
    public override string Name => "research-plugin-1";
    public override string Summary => "points of the unit disc labelled by their ring";
    public override IReadOnlyList<string> Streams => ["research-plugin-1"];

    public override DataShape Shape(DataRequest request)
    {
        var o = OptionsOf(request);
        return new(Name, InputKind.Vectors, 2 + o.RingNoise, o.RingClasses);
    }

    /// <summary>Rules between this source's keys and the core's, checked when the config is read.</summary>
    protected override IEnumerable<OptionError> Validate(DataKeys data, Options o)
    {
        if (data.Classes.Any(c => c >= o.RingClasses))
            yield return new("data.classes", $"names a class beyond the {o.RingClasses} rings (ring_classes)");
    }

    public override DataSplits Load(DataRequest request)
    {
        var o = OptionsOf(request);
        using var g = request.Stream("research-plugin-1");
        Batch Draw(int n)
        {
            // r = √u is uniform over the disc's area; the ring is ⌊C·r⌋.
            var r = rand(n, generator: g).sqrt();
            var angle = rand(n, generator: g).mul(2 * Math.PI);
            var x = cat([stack([r.mul(angle.cos()), r.mul(angle.sin())], 1), randn(n, o.RingNoise, generator: g).mul(0.1)], 1);
            var y = r.mul(o.RingClasses).floor().clamp_max(o.RingClasses - 1).to_type(ScalarType.Int64);
            return new Batch(x, y);
        }
        // The splits become the core's when Load returns: it frees them.
        return new DataSplits(Draw(o.RingItems), Draw(o.RingItems / 4));
    }
}
