using Research.Core.Config;
using Research.Core.Data;
using Research.Core.Training;
using static TorchSharp.torch;

namespace Research.Core.Studies;

/// <summary>
/// The standard continual-learning benchmarks on Fashion-MNIST (or the synthetic clusters, for tests), each task
/// with its own validation split held out (seeded) from its training data.
/// </summary>
public static class TaskSequence
{
    public static IReadOnlyList<TaskData> Build(StudySection study, DataSection data, long seed)
    {
        var (fullTrain, fullTest) = RunBuilder.LoadDataset(data, seed);
        using var _train = fullTrain; using var _test = fullTest;
        return study.Benchmark switch
        {
            "permuted" => Enumerable.Range(0, study.Tasks).Select(t => Permuted(t, fullTrain, fullTest, data, seed)).ToList(),
            _ => Enumerable.Range(0, fullTrain.NumClasses / 2).Select(t =>
            {
                int[] classes = [2 * t, 2 * t + 1];
                var task = RunBuilder.Task($"classes {classes[0]}-{classes[1]}", fullTrain, fullTest, data with { Classes = classes }, Seeds.Derive(seed, $"task-{t}"));
                return study.Benchmark == "split-task" ? task with { HeadClasses = classes } : task;
            }).ToList(),
        };
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
