using static TorchSharp.torch;

namespace Research.Core.Data;

/// <summary>
/// Gaussian class clusters for fast tests: class c has a mean μ_c ~ N(0, 4·I) in D dimensions and items
/// x ~ N(μ_c, I); labels are balanced. Train and test come from the same distribution and one generator.
/// </summary>
public static class SyntheticClusters
{
    public static (TensorDataset Train, TensorDataset Test) Make(int samples, int features, int classes, Generator generator)
    {
        using var _ = NewDisposeScope();
        var means = randn([classes, features], generator: generator).mul_(2);
        TensorDataset Draw(int n)
        {
            var y = arange(n, dtype: ScalarType.Int64).remainder_(classes);
            var x = means.index_select(0, y).add_(randn([n, features], generator: generator));
            return new TensorDataset(x.DetachFromDisposeScope(), y.DetachFromDisposeScope(), classes);
        }
        return (Draw(samples), Draw(Math.Max(samples / 4, classes)));
    }
}
