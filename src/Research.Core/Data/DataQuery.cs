using Research.Abstractions;
using static TorchSharp.torch;

namespace Research.Core.Data;

/// <summary>A source's splits as the core holds them: datasets that own their tensors. A null <see cref="Validation"/>
/// means the core holds one out of <see cref="Train"/>.</summary>
public sealed record LoadedSplits(TensorDataset Train, TensorDataset Test, TensorDataset? Validation = null) : IDisposable
{
    public void Dispose() { Train.Dispose(); Test.Dispose(); Validation?.Dispose(); }

    /// <summary>The contract's splits of datasets the caller hands over (a built-in source's): the tensors move, nothing
    /// is copied.</summary>
    public static DataSplits Handover(TensorDataset train, TensorDataset test, TensorDataset? validation = null) =>
        new(new Batch(train.Tensors), new Batch(test.Tensors), validation is null ? null : new Batch(validation.Tensors))
        {
            TrainUtf8Bytes = train.Utf8Bytes, TestUtf8Bytes = test.Utf8Bytes, ValidationUtf8Bytes = validation?.Utf8Bytes ?? 0,
        };
}

/// <summary>
/// What the core asks a source with: [data] (the source's options and the core's keys), the run's root seed, and how to
/// find a published model's file. <see cref="Request"/> is the contract's view of it, what the source receives.
/// </summary>
public sealed record DataQuery(DataSection Data, long Seed)
{
    /// <summary>The source <see cref="DataSection.Dataset"/> names.</summary>
    public IDataSource Source => DataSources.Get(Data.Dataset);

    /// <summary>The path of a file of a published model (model name, file name), unpacked where the run keeps them.</summary>
    public Func<string, string, string> PublishedFile { get; init; } = (model, file) =>
        throw new InvalidOperationException($"no published models here: {file} of {model} cannot be read");

    /// <summary>A study over several text datasets: the tokenizer every task reads, [data]'s own dataset's (null: the
    /// source's own).</summary>
    public ITextTokenizer? Tokenizer { get; init; }

    /// <summary>The resolved <c>model.init_from</c> (<see cref="DataRequest.InitFrom"/>; empty: none).</summary>
    public string InitFrom { get; init; } = "";

    /// <summary>The request the source receives.</summary>
    public DataRequest Request => new(Data.Keys, Data.Options, Seed)
    {
        PublishedFile = PublishedFile, Tokenizer = Tokenizer, InitFrom = InitFrom, Stream = name => Seeds.Generator(Seed, name),
    };

    /// <summary>The same query for another source, with its options from the same [data] table.</summary>
    public DataQuery For(string dataset) => this with { Data = Data with { Dataset = dataset } };

    /// <summary>The source's shape.</summary>
    public DataShape Shape() => Source.Shape(Request);

    /// <summary>The source's splits, checked against its shape (the same rows in every tensor of a split; targets int64
    /// within the classes), as datasets that own the tensors.</summary>
    public LoadedSplits Load()
    {
        var source = Source;
        var shape = source.Shape(Request);
        var splits = source.Load(Request) ?? throw new InvalidDataException($"data source '{source.Name}' returned no splits from Load");
        TensorDataset? train = null, test = null;
        try
        {
            train = Dataset(source, "train", splits.Train, shape, splits.TrainUtf8Bytes);
            test = Dataset(source, "test", splits.Test, shape, splits.TestUtf8Bytes);
            var validation = splits.Validation is { } v ? Dataset(source, "validation", v, shape, splits.ValidationUtf8Bytes) : null;
            return new LoadedSplits(train, test, validation);
        }
        catch
        {
            if (train is null) splits.Train?.DisposeTensors();
            if (test is null) splits.Test?.DisposeTensors();
            splits.Validation?.DisposeTensors();
            train?.Dispose(); test?.Dispose();
            throw;
        }
    }

    static TensorDataset Dataset(IDataSource source, string split, Batch? items, DataShape shape, long utf8Bytes)
    {
        if (items is null) throw new InvalidDataException($"data source '{source.Name}' returned no {split} split from Load");
        if (!items.ContainsKey(Batch.Targets))
            throw new InvalidDataException($"data source '{source.Name}': its {split} split has no '{Batch.Targets}' (it has: {string.Join(", ", items.Keys)})");
        var targets = items[Batch.Targets];
        if (targets.dtype != ScalarType.Int64)
            throw new InvalidDataException($"data source '{source.Name}': its {split} split's targets are {targets.dtype}, not Int64 class or token ids");
        return new TensorDataset(items, shape.Classes, utf8Bytes);
    }

    /// <summary>The data of one task named <paramref name="name"/>: the source's splits with the core's class filter,
    /// training limit and validation holdout (<see cref="TaskData.From"/>), seeded by <paramref name="seed"/>.</summary>
    public TaskData Task(string name, long seed)
    {
        using var splits = Load();
        return TaskData.From(name, splits, Data, seed);
    }
}
