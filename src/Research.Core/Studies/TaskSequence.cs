using Research.Core.Config;
using Research.Core.Data;
using static TorchSharp.torch;

namespace Research.Core.Studies;

/// <summary>
/// The standard continual-learning benchmarks over a data source's items (Fashion-MNIST, or the synthetic clusters for
/// tests), each task with its own validation split held out (seeded) from its training data; or one task per source.
/// </summary>
public static class TaskSequence
{
    /// <summary>The study's tasks from <paramref name="data"/>, the request of [data]'s own source.</summary>
    public static IReadOnlyList<TaskData> Build(RunConfig c, DataQuery data)
    {
        var (study, seed) = (c.Study, c.Run.Seed);
        if (study.Benchmark == "datasets") return Datasets(c, data);
        using var full = data.Load();
        return study.Benchmark switch
        {
            "permuted" => Enumerable.Range(0, study.Tasks).Select(t => Permuted(t, full, data.Data, seed)).ToList(),
            _ => Enumerable.Range(0, full.Train.NumClasses / study.ClassesPerTask).Select(t =>
            {
                var classes = Enumerable.Range(study.ClassesPerTask * t, study.ClassesPerTask).ToArray();
                var task = TaskData.From($"classes {classes[0]}-{classes[^1]}", full, data.Data with { Classes = classes }, Seeds.Derive(seed, $"task-{t}"));
                return study.Benchmark == "split-task" ? task with { HeadClasses = classes } : task;
            }).ToList(),
        };
    }

    /// <summary>
    /// One task per entry of <c>study.datasets</c>: [data] with that dataset (its classes, limits and splits, seeded as a
    /// single run's). What a source derives for every task from [data]'s own dataset is shared: text tasks are tokenized
    /// by the tokenizer of [data]'s own dataset — fitted to its training split for <c>gpt2-8192</c> — as a model
    /// pre-trained on one corpus keeps its vocabulary when it moves to the next (German through an English-fitted
    /// vocabulary falls back to bytes more often; bits per byte stay comparable).
    /// </summary>
    static IReadOnlyList<TaskData> Datasets(RunConfig c, DataQuery data)
    {
        var tasks = new List<TaskData>();
        try
        {
            var shared = data with { Tokenizer = data.Source.Tokenizer(data.Request) };
            foreach (var d in c.Study.Datasets) tasks.Add(shared.For(d).Task(d, c.Run.Seed));
            return tasks;
        }
        catch
        {
            foreach (var t in tasks) t.Dispose();
            throw;
        }
    }

    /// <summary>Task t sees the pixels through a fixed permutation π_t drawn from (seed, "permutation/t"); task 0 sees them as they are.</summary>
    static TaskData Permuted(int t, LoadedSplits full, DataSection data, long seed)
    {
        using var task = TaskData.From($"permutation {t}", full, data, Seeds.Derive(seed, $"task-{t}"));
        using var g = Seeds.Generator(seed, $"permutation/{t}");
        using var pi = t == 0 ? arange(full.Train.Features) : randperm(full.Train.Features, generator: g);
        return new TaskData(task.Name, task.Train.PermuteFeatures(pi), task.Validation.PermuteFeatures(pi), task.Test.PermuteFeatures(pi));
    }
}
