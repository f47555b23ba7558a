namespace Research.Abstractions;

/// <summary>What a model reads: feature vectors, images, token ids, or an image with token ids (captions).</summary>
public enum InputKind { Vectors, Images, Tokens, ImagesAndTokens }

/// <summary>A source's items as a model sees them, known without loading them: model kinds check against it.</summary>
/// <param name="Source">The source's name (for messages).</param>
/// <param name="Input">What the items are.</param>
/// <param name="Features">D of <c>input</c> [N, D] (an image's pixels, flattened), or the tokens T of a row.</param>
/// <param name="Classes">C: labels are ids 0 … C − 1 (a language model's targets: its vocabulary).</param>
public sealed record DataShape(string Source, InputKind Input, long Features, int Classes)
{
    /// <summary>Targets are the next token at every position (causal language modelling), not one class per item.</summary>
    public bool NextToken { get; init; }
    /// <summary>Images: channels (1 grey, 3 RGB).</summary>
    public int ImageChannels { get; init; } = 1;
    /// <summary>Images: height in pixels.</summary>
    public int ImageHeight { get; init; }
    /// <summary>Images: width in pixels.</summary>
    public int ImageWidth { get; init; }
    /// <summary>Images: the side of a square image (setting it sets <see cref="ImageHeight"/> and <see cref="ImageWidth"/>);
    /// 0 when the image is not square.</summary>
    public int ImageSide
    {
        get => ImageHeight == ImageWidth ? ImageHeight : 0;
        init { ImageHeight = value; ImageWidth = value; }
    }
    /// <summary>Token ids: the tokenizer's name (its vocabulary).</summary>
    public string Tokenizer { get; init; } = "";
    /// <summary>Token ids: how many ids there are (the token embedding's rows).</summary>
    public int Vocabulary { get; init; }

    /// <summary>The items are text.</summary>
    public bool IsText => Input == InputKind.Tokens;
}

/// <summary>
/// The core's keys of <c>[data]</c> as a source sees them (read only): what the core does with any source's items. The
/// source's own keys are its options record.
/// </summary>
/// <param name="Dataset">The source's name.</param>
/// <param name="Classes">Classes kept (empty: all).</param>
/// <param name="ValidationFraction">The share of the training split held out for validation.</param>
/// <param name="BatchSize">Items per optimizer step.</param>
/// <param name="EvalBatchSize">Items per forward pass in evaluation.</param>
/// <param name="TrainLimit">The first N training items only (0: all).</param>
public sealed record DataKeys(string Dataset, IReadOnlyList<int> Classes, double ValidationFraction, int BatchSize,
    int EvalBatchSize, int TrainLimit);

/// <summary>
/// A source's splits: each a <see cref="Batch"/> of all its N items (named tensors, the item first), on the CPU. When
/// <see cref="IDataSource.Load"/> returns they belong to the core, which frees them. A null <see cref="Validation"/>: the core holds
/// one out of <see cref="Train"/> (seeded, <c>validation_fraction</c>).
/// </summary>
public sealed record DataSplits(Batch Train, Batch Test, Batch? Validation = null)
{
    /// <summary>Text: the UTF-8 bytes behind the counted targets of each split, for bits per byte (0: not text).</summary>
    public long TrainUtf8Bytes { get; init; }
    /// <inheritdoc cref="TrainUtf8Bytes"/>
    public long TestUtf8Bytes { get; init; }
    /// <inheritdoc cref="TrainUtf8Bytes"/>
    public long ValidationUtf8Bytes { get; init; }
}

/// <summary>
/// What a source is asked with: the core's keys of [data], the source's options, the run's root seed, and how to find a
/// published model's file (a tokenizer's vocabulary ships with its model).
/// </summary>
/// <param name="Data">The core's [data] keys.</param>
/// <param name="Options">The source's options record, bound from [data].</param>
/// <param name="Seed">The run's root seed: derive every stream from it by name (<see cref="IDataSource.Streams"/>), so
/// every process of a run loads the same items.</param>
public sealed record DataRequest(DataKeys Data, object Options, long Seed)
{
    /// <summary>The path of a file of a published model (model name, file name), unpacked where the run keeps them.</summary>
    public Func<string, string, string> PublishedFile { get; init; } = (model, file) =>
        throw new InvalidOperationException($"no published models here: {file} of {model} cannot be read");

    /// <summary>A study over several text datasets: the tokenizer every task reads, [data]'s own dataset's (null: the
    /// source's own).</summary>
    public ITextTokenizer? Tokenizer { get; init; }

    /// <summary>The weights <c>model.init_from</c> names, resolved to a full path (a Hugging Face model folder or a file in
    /// one; empty: none, or a published model's name): a text source reads the model's own <c>tokenizer.json</c> beside
    /// them.</summary>
    public string InitFrom { get; init; } = "";

    /// <summary>A generator of the named stream, derived from <see cref="Seed"/> (the same in every process and after a
    /// resume). Owned by the caller.</summary>
    public Func<string, TorchSharp.torch.Generator> Stream { get; init; } = name =>
        throw new InvalidOperationException($"no random streams here: '{name}' cannot be drawn");
}

/// <summary>
/// A data source: one type per dataset, named by <c>[data] dataset</c>. It owns its keys of [data] (its options record),
/// says what its items are without loading them (<see cref="Shape"/>) and loads them as named tensors (<see cref="Load"/>).
/// The core does the rest with any source's items: the class filter, the training limit, the seeded validation holdout,
/// batching, the study's tasks, replay. Write one as a <see cref="DataSource{TOptions}"/>; a plugin DLL's public
/// non-abstract sources are found by type, as the built-in ones are.
/// </summary>
/// <remarks>Every member is a function of its request (options, keys, seed, files): every process of a run, and a resumed
/// run, gets the same items. A source never batches and never reads which process it is.</remarks>
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
    IEnumerable<OptionError> Validate(DataKeys data, object options);

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

/// <summary>A source written as its options record and the typed members of <see cref="IDataSource"/>; optional members
/// default to "nothing to say".</summary>
public abstract class DataSource<TOptions> : IDataSource where TOptions : class, new()
{
    public abstract string Name { get; }
    public abstract string Summary { get; }
    public Type OptionsType => typeof(TOptions);
    public virtual IReadOnlyList<string> Streams => [];

    /// <summary>The source's options in a request.</summary>
    protected static TOptions OptionsOf(DataRequest request) => request.Options as TOptions
        ?? throw new ArgumentException($"{request.Options.GetType().Name} are not the options of this source ({typeof(TOptions).Name})");

    public IEnumerable<OptionError> Validate(DataKeys data, object options) => Validate(data, (TOptions)options);
    protected virtual IEnumerable<OptionError> Validate(DataKeys data, TOptions options) => [];
    public virtual IEnumerable<OptionError> Check(DataRequest request) => [];
    public virtual IEnumerable<OptionError> StudyErrors(DataRequest request, string benchmark) => [];
    public abstract DataShape Shape(DataRequest request);
    public abstract DataSplits Load(DataRequest request);
    public virtual ITextTokenizer? Tokenizer(DataRequest request) => null;
}
