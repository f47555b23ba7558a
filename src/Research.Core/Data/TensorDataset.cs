using Research.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Data;

/// <summary>Inputs X (N × D, float32) and integer class labels Y (N, int64), held in memory.</summary>
public sealed class TensorDataset(Tensor inputs, Tensor targets, int numClasses) : IDisposable
{
    public Tensor Inputs { get; } = inputs;
    public Tensor Targets { get; } = targets;
    /// <summary>Number of classes of the label space (labels keep their ids when classes are filtered).</summary>
    public int NumClasses { get; } = numClasses;
    public long Count => Targets.shape[0];
    public long Features => Inputs.shape[1];

    public TensorDataset Select(Tensor indices) =>
        new(Inputs.index_select(0, indices).DetachFromDisposeScope(), Targets.index_select(0, indices).DetachFromDisposeScope(), NumClasses);

    /// <summary>The items whose label is one of <paramref name="classes"/> (all when empty).</summary>
    public TensorDataset WithClasses(IReadOnlyCollection<int> classes)
    {
        if (classes.Count == 0) { using var all = arange(Count); return Select(all); }
        using var _ = NewDisposeScope();
        var mask = isin(Targets, tensor(classes.Select(c => (long)c).ToArray()));
        return Select(nonzero(mask).squeeze(1));
    }

    /// <summary>The items of several datasets in one (joint training on all tasks seen so far).</summary>
    public static TensorDataset Concat(IReadOnlyList<TensorDataset> parts)
    {
        using var _ = NewDisposeScope();
        return new TensorDataset(cat(parts.Select(p => p.Inputs).ToList(), 0).DetachFromDisposeScope(),
            cat(parts.Select(p => p.Targets).ToList(), 0).DetachFromDisposeScope(), parts.Max(p => p.NumClasses));
    }

    /// <summary>A copy whose features are permuted: x' = x[:, π] (permuted-MNIST-style tasks).</summary>
    public TensorDataset PermuteFeatures(Tensor permutation) =>
        new(Inputs.index_select(1, permutation).DetachFromDisposeScope(), Targets.clone().DetachFromDisposeScope(), NumClasses);

    public TensorDataset Take(long n)
    {
        using var first = arange(n <= 0 || n >= Count ? Count : n);
        return Select(first);
    }

    /// <summary>
    /// Splits off a held-out fraction, seeded: a permutation from <paramref name="generator"/>; the first
    /// ⌈fraction·N⌉ items of it form the validation split, the rest the training split (both in original order).
    /// </summary>
    public (TensorDataset Train, TensorDataset Validation) Holdout(double fraction, Generator generator)
    {
        using var _ = NewDisposeScope();
        var n = Count;
        var nVal = (long)Math.Ceiling(fraction * n);
        var perm = randperm(n, generator: generator);
        var val = perm.narrow(0, 0, nVal).sort().Values;
        var train = perm.narrow(0, nVal, n - nVal).sort().Values;
        return (Select(train), Select(val));
    }

    /// <summary>
    /// Accumulation windows of up to <paramref name="microBatches"/> shuffled micro-batches each (one seeded permutation
    /// per call); the last window of an epoch holds what is left (it is not dropped). A window's tensors live until the
    /// consumer asks for the next one (or stops): keep nothing beyond one iteration, so an epoch holds no more than one
    /// window in native memory, whatever dispose scopes the consumer opens.
    /// </summary>
    /// <param name="skipWindows">Windows to pass over without materialising them (a resumed epoch).</param>
    public IEnumerable<IReadOnlyList<Batch>> ShuffledWindows(int batchSize, int microBatches, Generator generator, long skipWindows = 0)
    {
        using var perm = randperm(Count, generator: generator).DetachFromDisposeScope();
        foreach (var w in Windows(batchSize, microBatches, skipWindows * microBatches * (long)batchSize, (start, len) =>
        {
            using var idx = perm.narrow(0, start, len);
            return new Batch(Inputs.index_select(0, idx).DetachFromDisposeScope(), Targets.index_select(0, idx).DetachFromDisposeScope());
        }))
            yield return w;
    }

    /// <summary>Mini-batches in stored order (evaluation), with the lifetime of <see cref="ShuffledWindows"/>.</summary>
    public IEnumerable<Batch> InOrder(int batchSize) =>
        Windows(batchSize, 1, 0, (start, len) =>
            new Batch(Inputs.narrow(0, start, len).DetachFromDisposeScope(), Targets.narrow(0, start, len).DetachFromDisposeScope())).Select(w => w[0]);

    /// <summary>Number of windows of <paramref name="microBatches"/> batches of <paramref name="batchSize"/> in one epoch.</summary>
    public long WindowsPerEpoch(int batchSize, int microBatches) => ((Count + batchSize - 1) / batchSize + microBatches - 1) / microBatches;

    IEnumerable<IReadOnlyList<Batch>> Windows(int batchSize, int microBatches, long first, Func<long, long, Batch> make)
    {
        var window = new List<Batch>(microBatches);
        void Release()
        {
            foreach (var b in window) b.DisposeTensors();
            window.Clear();
        }
        try
        {
            long start = first;
            while (start < Count)
            {
                Release();
                for (int i = 0; i < microBatches && start < Count; i++, start += batchSize)
                {
                    window.Add(make(start, Math.Min(batchSize, Count - start)));
                }
                yield return window.ToArray();
            }
        }
        finally { Release(); }
    }

    public void Dispose() { Inputs.Dispose(); Targets.Dispose(); }
}
