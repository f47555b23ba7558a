using Research.Abstractions;

namespace Research.Core.Data;

/// <summary>[data] keys of <c>fashion-mnist</c>.</summary>
public sealed record FashionMnistOptions
{
    /// <summary>Folder of the four gzipped IDX files; empty: <c>$FASHION_MNIST_DIR</c>, then
    /// <c>/usr/share/datasets/fashion-mnist</c> (Debian package <c>dataset-fashion-mnist</c>). A relative path is from
    /// the working directory.</summary>
    public string Path { get; init; } = "";
}

/// <summary><c>fashion-mnist</c>: the 28×28 grey images of <see cref="FashionMnist"/>, 10 classes, flattened to 784
/// standardised features.</summary>
public sealed class FashionMnistSource : DataSource<FashionMnistOptions>
{
    public override string Name => "fashion-mnist";
    public override string Summary => "Fashion-MNIST: 60,000 + 10,000 grey 28×28 images of 10 classes of clothing (Debian package dataset-fashion-mnist)";

    public override DataShape Shape(DataRequest request) =>
        new(Name, InputKind.Images, FashionMnist.Side * FashionMnist.Side, FashionMnist.ClassNames.Length) { ImageSide = FashionMnist.Side };

    public override DataSplits Load(DataRequest request)
    {
        var (train, test) = FashionMnist.Load(FashionMnist.ResolveDirectory(OptionsOf(request).Path));
        return LoadedSplits.Handover(train, test);
    }
}
