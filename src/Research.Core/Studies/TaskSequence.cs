using Research.Core.Config;
using Research.Core.Data;
using Research.Core.Models;
using Research.Core.Text;
using Research.Core.Training;
using static TorchSharp.torch;

namespace Research.Core.Studies;

/// <summary>
/// The standard continual-learning benchmarks on Fashion-MNIST (or the synthetic clusters, for tests), each task
/// with its own validation split held out (seeded) from its training data.
/// </summary>
public static class TaskSequence
{
    public static IReadOnlyList<TaskData> Build(RunConfig c)
    {
        var (study, data, seed) = (c.Study, c.Data, c.Run.Seed);
        if (study.Benchmark == "datasets") return Datasets(c);
        var (fullTrain, fullTest) = RunBuilder.LoadDataset(data, seed);
        using var _train = fullTrain; using var _test = fullTest;
        return study.Benchmark switch
        {
            "permuted" => Enumerable.Range(0, study.Tasks).Select(t => Permuted(t, fullTrain, fullTest, data, seed)).ToList(),
            _ => Enumerable.Range(0, fullTrain.NumClasses / study.ClassesPerTask).Select(t =>
            {
                var classes = Enumerable.Range(study.ClassesPerTask * t, study.ClassesPerTask).ToArray();
                var task = RunBuilder.Task($"classes {classes[0]}-{classes[^1]}", fullTrain, fullTest, data with { Classes = classes }, Seeds.Derive(seed, $"task-{t}"));
                return study.Benchmark == "split-task" ? task with { HeadClasses = classes } : task;
            }).ToList(),
        };
    }

    /// <summary>
    /// One task per entry of <c>study.datasets</c>: [data] with that dataset (its classes, limits and splits, seeded as a
    /// single run's). Text tasks are tokenized by the tokenizer of [data]'s own dataset — fitted to its training split for
    /// <c>gpt2-8192</c> — as a model pre-trained on one corpus keeps its vocabulary when it moves to the next (German
    /// through an English-fitted vocabulary falls back to bytes more often; bits per byte stay comparable).
    /// </summary>
    static IReadOnlyList<TaskData> Datasets(RunConfig c)
    {
        var tasks = new List<TaskData>();
        try
        {
            if (c.Data.IsText)
            {
                var modelsDir = ModelFactory.ModelsDir(c.Model, c.File);
                var tokenizer = TextTasks.Tokenizer(c.Data, TextTasks.Split(c.Data, c.Run.Seed), modelsDir);
                foreach (var d in c.Study.Datasets)
                    tasks.Add(TextTasks.Build(d, c.Data with { Dataset = d }, c.Run.Seed, modelsDir, tokenizer).Data);
            }
            else
                foreach (var d in c.Study.Datasets)
                {
                    var data = c.Data with { Dataset = d };
                    var (fullTrain, fullTest) = RunBuilder.LoadDataset(data, c.Run.Seed);
                    using var _train = fullTrain; using var _test = fullTest;
                    tasks.Add(RunBuilder.Task(d, fullTrain, fullTest, data, c.Run.Seed));
                }
            return tasks;
        }
        catch
        {
            foreach (var t in tasks) t.Dispose();
            throw;
        }
    }

    /// <summary>Task t sees the pixels through a fixed permutation π_t drawn from (seed, "permutation/t"); task 0 sees them as they are.</summary>
    static TaskData Permuted(int t, TensorDataset fullTrain, TensorDataset fullTest, DataSection data, long seed)
    {
        using var task = RunBuilder.Task($"permutation {t}", fullTrain, fullTest, data, Seeds.Derive(seed, $"task-{t}"));
        using var g = Seeds.Generator(seed, $"permutation/{t}");
        using var pi = t == 0 ? arange(fullTrain.Features) : randperm(fullTrain.Features, generator: g);
        return new TaskData(task.Name, task.Train.PermuteFeatures(pi), task.Validation.PermuteFeatures(pi), task.Test.PermuteFeatures(pi));
    }
}
