namespace Research.Core.Data;

/// <summary>A task's data: training split, the held-out validation split (for every model selection), and test.</summary>
/// <param name="HeadClasses">Task-incremental studies: the classes of the task's head (logits outside them are masked);
/// null when the task uses every output.</param>
public sealed record TaskData(string Name, TensorDataset Train, TensorDataset Validation, TensorDataset Test, int[]? HeadClasses = null) : IDisposable
{
    public void Dispose() { Train.Dispose(); Validation.Dispose(); Test.Dispose(); }

    /// <summary>
    /// A task from a source's splits, whatever the source: the classes of <c>data.classes</c>, the first
    /// <c>train_limit</c> training items, and — unless the source drew its own — the validation holdout of
    /// <c>validation_fraction</c>, seeded by (<paramref name="seed"/>, "validation-split"). The splits stay the caller's.
    /// </summary>
    public static TaskData From(string name, LoadedSplits splits, DataSection d, long seed)
    {
        using var filtered = splits.Train.WithClasses(d.Classes);
        if (splits.Validation is { } own)
            return new TaskData(name, filtered.Take(d.TrainLimit), own.WithClasses(d.Classes), splits.Test.WithClasses(d.Classes));
        using var limited = filtered.Take(d.TrainLimit);
        var (train, val) = limited.Holdout(d.ValidationFraction, Seeds.Generator(seed, "validation-split"));
        return new TaskData(name, train, val, splits.Test.WithClasses(d.Classes));
    }
}
