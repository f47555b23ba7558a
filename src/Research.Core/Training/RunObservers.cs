using Research.Abstractions;
using Research.Core.Checkpoints;
using Research.Core.Config;
using Research.Core.Data;
using Research.Core.Optim;
using Research.Core.Tracking;
using static TorchSharp.torch;

namespace Research.Core.Training;

/// <summary>
/// The loop as an observer sees it: the run's components, its folder and store, and where training is. Observers read
/// it; the only things they may add are probe rows of a study's record and messages.
/// </summary>
public interface IRunLoop
{
    RunComponents Run { get; }
    RunLayout Layout { get; }
    RunStore Store { get; }
    string RunId { get; }
    /// <summary>The phase (a study's task) the loop is in.</summary>
    int Phase { get; }
    /// <summary>Optimizer updates the run has applied.</summary>
    long Step { get; }
    /// <summary>The run's step when the current phase began.</summary>
    long PhaseStartStep { get; }
    Optimizer Optimizer { get; }
    /// <summary>A study's rows so far (row i after task i); empty in a single run.</summary>
    IReadOnlyList<StudyRow> StudyRows { get; }
    /// <summary>The whole model's state: the fp32 master weights, the frozen parameters and the buffers (what a
    /// snapshot holds).</summary>
    IEnumerable<(string Name, Tensor Value)> ModelState();
    /// <summary>Adds probe rows to row <paramref name="phase"/> of a study's record.</summary>
    void AddProbes(int phase, IReadOnlyDictionary<string, double[]> rows);
    void Message(string text);
}

/// <summary>
/// Something that happens beside training at fixed points of a run — probes, the Hessian decomposition, the methods'
/// consolidation, figures. The loop calls every observer at each point, in their factories' order, and knows none of
/// them by name. An observer computes from its own seeded streams and never changes the weights, so adding one changes
/// neither the training nor (unless its section is part of it) the run's identity.
/// </summary>
public interface IRunObserver : IDisposable
{
    /// <summary>The loop is ready: a new run has its starting weights (after <c>head_init</c>), or a resumed run its
    /// checkpoint's.</summary>
    void RunStarted(IRunLoop loop, bool resumed) { }
    /// <summary>An optimizer update was applied (a step the loss scaler skipped is not one).</summary>
    void StepApplied(IRunLoop loop) { }
    /// <summary>A study's task ended: row i of its matrices is evaluated and the task-end snapshot written.</summary>
    void TaskEnded(IRunLoop loop) { }
    /// <summary>A single run's training ended, after its final evaluation.</summary>
    void TrainingEnded(IRunLoop loop) { }
    void IDisposable.Dispose() { }
}

/// <summary>
/// Chooses an observer for a run from its config section. Every non-abstract implementation in the core is found by
/// type (as plugins are), so a new analysis is one file; they run in <see cref="Order"/>.
/// </summary>
public interface IRunObserverFactory
{
    /// <summary>Observers are called in ascending order (ties by type name).</summary>
    int Order { get; }
    /// <summary>What the section asks that the config cannot give, checked before a run folder exists.</summary>
    IEnumerable<ConfigError> Check(RunConfig config, RunKind kind, DataShape shape) => [];
    /// <summary>The observer this run's config asks for, or null.</summary>
    IRunObserver? Create(RunComponents run);
}

/// <summary>The core's observer factories, found once by type.</summary>
public static class RunObservers
{
    static readonly Lazy<IReadOnlyList<IRunObserverFactory>> _factories = new(() =>
        typeof(RunObservers).Assembly.GetTypes()
            .Where(t => typeof(IRunObserverFactory).IsAssignableFrom(t) && t is { IsAbstract: false, IsInterface: false }
                        && t.GetConstructor(Type.EmptyTypes) != null)
            .Select(t => (IRunObserverFactory)Activator.CreateInstance(t)!)
            .OrderBy(f => f.Order).ThenBy(f => f.GetType().FullName, StringComparer.Ordinal).ToList());

    public static IReadOnlyList<IRunObserverFactory> Factories => _factories.Value;

    /// <summary>Every factory's problems with the config.</summary>
    public static IEnumerable<ConfigError> Check(RunConfig config, RunKind kind, DataShape shape) => Factories.SelectMany(f => f.Check(config, kind, shape));

    /// <summary>The observers a run's config asks for; on failure the ones made so far are disposed.</summary>
    public static List<IRunObserver> Create(RunComponents run)
    {
        var made = new List<IRunObserver>();
        try
        {
            foreach (var f in Factories)
                if (f.Create(run) is { } o) made.Add(o);
            return made;
        }
        catch
        {
            foreach (var o in made) o.Dispose();
            throw;
        }
    }
}
