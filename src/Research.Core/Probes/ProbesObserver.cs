using Research.Abstractions;
using Research.Core.Config;
using Research.Core.Data;
using Research.Core.Training;

namespace Research.Core.Probes;

/// <summary><c>[probes]</c>: the start's features and linear-probe accuracy when the run starts; the probes after each of a
/// study's tasks (row i of its record) or at a single run's end, stored as metrics at the run's step.</summary>
public sealed class ProbesObserverFactory : IRunObserverFactory
{
    public int Order => 10;
    public IEnumerable<ConfigError> Check(RunConfig config, RunKind kind, DataShape shape) => RunProbes.Check(config, shape);
    public IRunObserver? Create(RunComponents run) =>
        RunProbes.Create(run.Config, run.Data, run.Tasks, run.Precision) is { } probes ? new ProbesObserver(probes) : null;
}

sealed class ProbesObserver(RunProbes probes) : IRunObserver
{
    public void RunStarted(IRunLoop loop, bool resumed) => probes.Start(loop.Run.Model, loop.Layout.Probes, resumed, loop.Message);

    public void TaskEnded(IRunLoop loop) => Measure(loop, study: true);

    public void TrainingEnded(IRunLoop loop) => Measure(loop, study: false);

    void Measure(IRunLoop loop, bool study)
    {
        var values = probes.Measure(loop.Run.Model, loop.Message);
        foreach (var (name, v) in values) loop.Store.Metric(loop.RunId, loop.Step, name, v);
        loop.Message((study ? $"after task {loop.Phase}: " : "") + string.Join("  ", values.Select(kv => $"{kv.Key} {kv.Value:F4}")));
        loop.AddProbes(loop.Phase, values.ToDictionary(kv => kv.Key, kv => new[] { kv.Value }));
    }

    public void Dispose() => probes.Dispose();
}
