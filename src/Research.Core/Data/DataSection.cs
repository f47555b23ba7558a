using System.Collections.Immutable;
using Research.Abstractions;

namespace Research.Core.Data;

/// <summary>
/// [data]: which data source, and what the core does with any source's items — the classes kept, the training limit, the
/// validation holdout and the batch sizes. The source's own keys (a folder, a tokenizer, a synthetic size) are in the
/// same table and bind to the source's options record (<see cref="IDataSource.OptionsType"/>); <c>research config
/// schema</c> lists each source's keys.
/// </summary>
public sealed record DataSection
{
    /// <summary>The data source (<see cref="DataSources"/>): <c>fashion-mnist</c> (from <c>path</c>), <c>synthetic</c>
    /// (Gaussian class clusters, for tests), or text: <c>fortunes</c> (English) and <c>fortunes-de</c> (German), the
    /// Debian packages' epigrams, cleaned and deduplicated; your own files: <c>jsonl</c>, <c>csv</c> and <c>parquet</c> (text), <c>image-folder</c>; a source
    /// registered by the caller by its name.</summary>
    public string Dataset { get; init; } = "fashion-mnist";
    /// <summary>Classes kept for training and evaluation; empty keeps all. Labels keep their original ids.</summary>
    [Option(Min = 0)]
    public int[] Classes { get; init; } = [];
    /// <summary>Fraction of the training set held out (seeded) as the validation split for model selection.</summary>
    [Option(Min = 0, Max = 1, MaxExclusive = true)]
    public double ValidationFraction { get; init; } = 0.1;
    /// <summary>Items per optimizer step.</summary>
    [Option(Min = 1)]
    public int BatchSize { get; init; } = 128;
    /// <summary>Items per forward pass during evaluation (no gradients; larger is faster).</summary>
    [Option(Min = 1)]
    public int EvalBatchSize { get; init; } = 1000;
    /// <summary>Use only the first N training items after class filtering (0: all) — for quick runs.</summary>
    [Option(Min = 0)]
    public int TrainLimit { get; init; } = 0;

    // Not an option: the sources' records, bound from the same table (the options binder reads public setters only).
    ImmutableDictionary<string, object> _options = ImmutableDictionary.Create<string, object>(StringComparer.Ordinal);

    /// <summary>The options of <see cref="Dataset"/>'s source.</summary>
    public object Options => OptionsOf(Dataset);

    /// <summary>The options of a source the run reads, as bound from [data]; a source bound from no table (a section
    /// made in code) has its defaults.</summary>
    public object OptionsOf(string source) =>
        _options.TryGetValue(source, out var o) ? o : Activator.CreateInstance(DataSources.Get(source).OptionsType)!;

    /// <summary>The sources whose options this section holds: <see cref="Dataset"/>'s, and those of the datasets a study
    /// names (each task of a <c>datasets</c> study reads [data] as its own source's options).</summary>
    public IReadOnlyList<string> Sources => _options.Keys.Order(StringComparer.Ordinal).Prepend(Dataset).Distinct().ToList();

    /// <summary>The core's keys as a source sees them.</summary>
    public DataKeys Keys => new(Dataset, Classes, ValidationFraction, BatchSize, EvalBatchSize, TrainLimit);

    /// <summary>A copy holding <paramref name="options"/> as the source's options.</summary>
    public DataSection WithOptions(string source, object options) => this with { _options = _options.SetItem(source, options) };
}
