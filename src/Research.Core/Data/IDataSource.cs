using Research.Abstractions;
using Research.Core.Text;

namespace Research.Core.Data;

/// <summary>
/// A data source: one type per dataset, listed by <see cref="DataSources"/> under the name <c>[data] dataset</c> chooses.
/// It owns its keys of [data] (<see cref="OptionsType"/>), says what its items are without loading them
/// (<see cref="Shape"/>), and loads them as named tensors (<see cref="Load"/>). The core does the rest with any source's
/// items: the class filter, the training limit, the seeded validation holdout, batching, the study's tasks, replay.
/// </summary>
public interface IDataSource
{
    /// <summary>The name <c>data.dataset</c> and <c>study.datasets</c> use.</summary>
    string Name { get; }

    /// <summary>One line for <c>research config schema</c>.</summary>
    string Summary { get; }

    /// <summary>The record its keys of [data] bind to (defaults: a new instance), by the same binder as every section.</summary>
    Type OptionsType { get; }

    /// <summary>The random streams it draws from by name (recorded with the run's derived seeds).</summary>
    IReadOnlyList<string> Streams { get; }

    /// <summary>Rules between its options and the core's keys, checked when the config is read; keys are full
    /// (<c>data.test_fraction</c>).</summary>
    IEnumerable<OptionError> Validate(DataSection data, object options);

    /// <summary>What only its files can refuse (a folder that is missing, a topic it does not have), checked before
    /// anything loads; keys are full.</summary>
    IEnumerable<OptionError> Check(DataRequest request);

    /// <summary>Study benchmarks its items cannot make (<c>permuted</c> and the <c>split-*</c> benchmarks permute and
    /// split vectors by class; <c>datasets</c> gives each source its own task); keys are full.</summary>
    IEnumerable<OptionError> StudyErrors(DataRequest request, string benchmark);

    /// <summary>Its items' shape, without loading them.</summary>
    DataShape Shape(DataRequest request);

    /// <summary>Its training and test splits (and its own validation split, when it draws one itself).</summary>
    DataSplits Load(DataRequest request);

    /// <summary>The tokenizer that made its token ids (null for items that are not text): <c>research generate</c> reads
    /// it, and a study over several text datasets shares that of [data]'s own.</summary>
    ITextTokenizer? Tokenizer(DataRequest request);
}

/// <summary>What a model reads: feature vectors, square grey images (flattened, rows of <see cref="DataShape.ImageSide"/>
/// pixels), or token ids.</summary>
public enum InputKind { Vectors, Images, Tokens }

/// <summary>A source's items as a model sees them, known without loading them.</summary>
/// <param name="Source">The source's name (for messages).</param>
/// <param name="Features">D of <c>input</c> [N, D] (an image's pixels), or the tokens T of a row.</param>
/// <param name="Classes">C: labels are ids 0 … C − 1 (a language model's targets: its vocabulary).</param>
public sealed record DataShape(string Source, InputKind Input, long Features, int Classes)
{
    /// <summary>Targets are the next token at every position (causal language modelling), not one class per item.</summary>
    public bool NextToken { get; init; }
    /// <summary>Images: the side of the square grey image (<see cref="Features"/> = side²).</summary>
    public int ImageSide { get; init; }
    /// <summary>Token ids: the tokenizer's name (its vocabulary).</summary>
    public string Tokenizer { get; init; } = "";
    /// <summary>Token ids: how many ids there are (the token embedding's rows).</summary>
    public int Vocabulary { get; init; }

    /// <summary>The items are text.</summary>
    public bool IsText => Input == InputKind.Tokens;
}

/// <summary>A source's splits as loaded; a null <see cref="Validation"/> means the core holds one out of
/// <see cref="Train"/>. Owns its datasets.</summary>
public sealed record DataSplits(TensorDataset Train, TensorDataset Test, TensorDataset? Validation = null) : IDisposable
{
    public void Dispose() { Train.Dispose(); Test.Dispose(); Validation?.Dispose(); }
}

/// <summary>
/// What a source is asked with: [data] (its own options and the core's keys), the run's root seed, and how to find a
/// published model's file (a tokenizer's vocabulary ships with its model).
/// </summary>
public sealed record DataRequest(DataSection Data, long Seed)
{
    /// <summary>The source <see cref="DataSection.Dataset"/> names.</summary>
    public IDataSource Source => DataSources.Get(Data.Dataset);

    /// <summary>Its options.</summary>
    public object Options => Data.Options;

    /// <summary>The path of a file of a published model (model name, file name), unpacked where the run keeps them.</summary>
    public Func<string, string, string> PublishedFile { get; init; } = (model, file) =>
        throw new InvalidOperationException($"no published models here: {file} of {model} cannot be read");

    /// <summary>A study over several text datasets: the tokenizer every task reads, [data]'s own dataset's (null: the
    /// source's own).</summary>
    public ITextTokenizer? Tokenizer { get; init; }

    /// <summary>The same request for another source, with its options from the same [data] table.</summary>
    public DataRequest For(string dataset) => this with { Data = Data with { Dataset = dataset } };

    /// <summary>The source's shape.</summary>
    public DataShape Shape() => Source.Shape(this);

    /// <summary>The source's splits.</summary>
    public DataSplits Load() => Source.Load(this);

    /// <summary>The data of one task named <paramref name="name"/>: the source's splits with the core's class filter,
    /// training limit and validation holdout (<see cref="TaskData.From"/>), seeded by <paramref name="seed"/>.</summary>
    public TaskData Task(string name, long seed)
    {
        using var splits = Load();
        return TaskData.From(name, splits, Data, seed);
    }
}

/// <summary>A source written as its options record and the typed members of <see cref="IDataSource"/>; optional members
/// default to "nothing to say".</summary>
public abstract class DataSource<TOptions> : IDataSource where TOptions : class, new()
{
    public abstract string Name { get; }
    public abstract string Summary { get; }
    public Type OptionsType => typeof(TOptions);
    public virtual IReadOnlyList<string> Streams => [];

    /// <summary>The source's options in a request.</summary>
    protected static TOptions OptionsOf(DataRequest request) => (TOptions)request.Options;

    public IEnumerable<OptionError> Validate(DataSection data, object options) => Validate(data, (TOptions)options);
    protected virtual IEnumerable<OptionError> Validate(DataSection data, TOptions options) => [];
    public virtual IEnumerable<OptionError> Check(DataRequest request) => [];
    public virtual IEnumerable<OptionError> StudyErrors(DataRequest request, string benchmark) => [];
    public abstract DataShape Shape(DataRequest request);
    public abstract DataSplits Load(DataRequest request);
    public virtual ITextTokenizer? Tokenizer(DataRequest request) => null;
}
