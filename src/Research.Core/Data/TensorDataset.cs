using Research.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Data;

/// <summary>
/// Items held in memory as named tensors whose first dimension is the item: <c>targets</c> (int64, [N] class ids or
/// [N, T] token ids) and whatever the model reads — <c>input</c> (N × D float features) for images and vectors,
/// <c>input_ids</c> and <c>attention_mask</c> ([N, T] int64) for text. A batch carries the same names
/// (<see cref="Batch"/>), so a new kind of input needs no change here.
/// </summary>
public sealed class TensorDataset : IDisposable
{
    readonly Dictionary<string, Tensor> _tensors;

    /// <summary>Items of named tensors, one of them <c>targets</c>; all agree on N.</summary>
    /// <param name="utf8Bytes">Language modelling: the UTF-8 bytes of the counted target tokens (for bits per byte).</param>
    public TensorDataset(IEnumerable<KeyValuePair<string, Tensor>> tensors, int numClasses, long utf8Bytes = 0)
    {
        _tensors = new Dictionary<string, Tensor>(tensors, StringComparer.Ordinal);
        if (!_tensors.ContainsKey(Batch.Targets)) throw new ArgumentException("a dataset needs a 'targets' tensor", nameof(tensors));
        var n = _tensors[Batch.Targets].shape[0];
        if (_tensors.FirstOrDefault(kv => kv.Value.shape[0] != n) is { Key: not null } other)
            throw new ArgumentException($"dataset tensors disagree on the item count: targets has {n}, '{other.Key}' has {other.Value.shape[0]}");
        NumClasses = numClasses;
        Utf8Bytes = utf8Bytes;
    }

    /// <summary>Inputs X (N × D, float32) and integer class labels Y (N, int64).</summary>
    public TensorDataset(Tensor inputs, Tensor targets, int numClasses) : this([new(Batch.Input, inputs), new(Batch.Targets, targets)], numClasses) { }

    /// <summary>The named tensors (the names a batch of these items carries).</summary>
    public IReadOnlyDictionary<string, Tensor> Tensors => _tensors;
    /// <summary><c>input</c>: the float features of image and vector datasets.</summary>
    public Tensor Inputs => _tensors.TryGetValue(Batch.Input, out var x) ? x
        : throw new InvalidOperationException($"the dataset has no '{Batch.Input}' tensor (it has: {string.Join(", ", _tensors.Keys)})");
    public Tensor Targets => _tensors[Batch.Targets];
    /// <summary>Number of classes of the label space (labels keep their ids when classes are filtered); the vocabulary for a language model.</summary>
    public int NumClasses { get; }
    /// <summary>Language modelling: UTF-8 bytes of the counted target tokens, so that bits per byte = Σ loss / (ln 2 · bytes); 0 otherwise.</summary>
    public long Utf8Bytes { get; }
    public long Count => Targets.shape[0];
    /// <summary>D of <c>input</c> [N, D]; for token data the sequence length T.</summary>
    public long Features => _tensors.TryGetValue(Batch.Input, out var x) ? x.shape[1] : _tensors.TryGetValue(Batch.InputIds, out var ids) ? ids.shape[1] : 0;

    TensorDataset Map(Func<string, Tensor, Tensor> f, long utf8Bytes) =>
        new(_tensors.Select(kv => KeyValuePair.Create(kv.Key, f(kv.Key, kv.Value).DetachFromDisposeScope())), NumClasses, utf8Bytes);

    /// <summary>The items at <paramref name="indices"/>. A subset carries no byte count (0: no bits per byte), only the whole
    /// set does: the language-model splits are built whole, and only a training limit takes a subset.</summary>
    public TensorDataset Select(Tensor indices) => Map((_, t) => t.index_select(0, indices), indices.shape[0] == Count ? Utf8Bytes : 0);

    /// <summary>min(n, Count) items, the first of a permutation drawn from <paramref name="generator"/> (a seeded subset).</summary>
    public TensorDataset Sample(long n, Generator generator)
    {
        using var order = randperm(Count, generator: generator);
        using var first = order.narrow(0, 0, Math.Min(n, Count));
        return Select(first);
    }

    /// <summary>The name of each item's class [N] (int64) when its targets are a sequence (a caption of an image): what
    /// <see cref="WithClasses"/> selects by there.</summary>
    public const string Labels = "labels";

    /// <summary>Each item's class [N]: the targets, or the <see cref="Labels"/> of items whose targets are sequences.</summary>
    public Tensor ClassLabels => Targets.dim() == 1 ? Targets : _tensors.TryGetValue(Labels, out var l) ? l
        : throw new InvalidOperationException($"classes pick items by their one label; these targets are sequences and there is no '{Labels}' tensor");

    /// <summary>The name of <see cref="ClassLabels"/> among the tensors.</summary>
    public string ClassLabelsName => Targets.dim() == 1 ? Batch.Targets : Labels;

    /// <summary>The items whose label is one of <paramref name="classes"/> (all when empty): the targets [N], or the
    /// <see cref="Labels"/> of items whose targets are sequences.</summary>
    public TensorDataset WithClasses(IReadOnlyCollection<int> classes)
    {
        if (classes.Count == 0) return Map((_, t) => t.clone(), Utf8Bytes);
        var labels = ClassLabels;
        using var _ = NewDisposeScope();
        var mask = isin(labels, tensor(classes.Select(c => (long)c).ToArray()));
        return Select(nonzero(mask).squeeze(1));
    }

    /// <summary>The items of several datasets in one (joint training on all tasks seen so far); token sequences of
    /// different lengths are right-padded as <see cref="Batch.Concat"/> does.</summary>
    public static TensorDataset Concat(IReadOnlyList<TensorDataset> parts)
    {
        var joined = Batch.Concat(parts.Select(p => new Batch(p._tensors)).ToList());
        return new TensorDataset(joined.Select(kv => KeyValuePair.Create(kv.Key, kv.Value.DetachFromDisposeScope())),
            parts.Max(p => p.NumClasses), parts.Sum(p => p.Utf8Bytes));
    }

    /// <summary>A copy whose features are permuted: x' = x[:, π] (permuted-MNIST-style tasks).</summary>
    public TensorDataset PermuteFeatures(Tensor permutation) =>
        Map((name, t) => name == Batch.Input ? t.index_select(1, permutation) : t.clone(), Utf8Bytes);

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
            return new Batch(_tensors.Select(kv => KeyValuePair.Create(kv.Key, kv.Value.index_select(0, idx).DetachFromDisposeScope())));
        }))
            yield return w;
    }

    /// <summary>Mini-batches in stored order (evaluation), with the lifetime of <see cref="ShuffledWindows"/>.</summary>
    public IEnumerable<Batch> InOrder(int batchSize) =>
        Windows(batchSize, 1, 0, (start, len) =>
            new Batch(_tensors.Select(kv => KeyValuePair.Create(kv.Key, kv.Value.narrow(0, start, len).DetachFromDisposeScope())))).Select(w => w[0]);

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

    public void Dispose() { foreach (var t in _tensors.Values) t.Dispose(); }
}
