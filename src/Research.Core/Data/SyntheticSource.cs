using Research.Abstractions;

namespace Research.Core.Data;

/// <summary>[data] keys of <c>synthetic</c>.</summary>
public sealed record SyntheticOptions
{
    /// <summary>Synthetic data: number of training items.</summary>
    [Option(Min = 1, Max = 10_000_000)]
    public int SyntheticSamples { get; init; } = 2000;
    /// <summary>Synthetic data: input features.</summary>
    [Option(Min = 1, Max = 100_000)]
    public int SyntheticFeatures { get; init; } = 16;
    /// <summary>Synthetic data: number of classes.</summary>
    [Option(Min = 2, Max = 10_000)]
    public int SyntheticClasses { get; init; } = 4;
}

/// <summary><c>synthetic</c>: Gaussian class clusters (<see cref="SyntheticClusters"/>) drawn from the seed stream
/// "synthetic-data": small, fast, and the same for the same seed.</summary>
public sealed class SyntheticSource : DataSource<SyntheticOptions>
{
    public const string Stream = "synthetic-data";

    public override string Name => "synthetic";
    public override string Summary => "Gaussian class clusters drawn from the seed, for fast tests (a test set of a quarter the size)";
    public override IReadOnlyList<string> Streams => [Stream];

    public override DataShape Shape(DataRequest request)
    {
        var o = OptionsOf(request);
        return new(Name, InputKind.Vectors, o.SyntheticFeatures, o.SyntheticClasses);
    }

    public override DataSplits Load(DataRequest request)
    {
        var o = OptionsOf(request);
        using var generator = request.Stream(Stream);
        var (train, test) = SyntheticClusters.Make(o.SyntheticSamples, o.SyntheticFeatures, o.SyntheticClasses, generator);
        return LoadedSplits.Handover(train, test);
    }
}
