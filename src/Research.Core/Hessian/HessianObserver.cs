using Research.Abstractions;
using Research.Core.Checkpoints;
using Research.Core.Config;
using Research.Core.Data;
using Research.Core.Tracking;
using Research.Core.Training;

namespace Research.Core.Hessian;

/// <summary><c>[study] hessian</c>: the forgetting decomposition at each task end (<see cref="ForgettingDecomposition"/>), with
/// the weights at <c>snapshots_along</c> points inside each later task saved as it trains.</summary>
public sealed class HessianObserverFactory : IRunObserverFactory
{
    public int Order => 20;

    public IEnumerable<ConfigError> Check(RunConfig config, RunKind kind, DataShape shape) =>
        kind == RunKind.Study ? ForgettingDecomposition.Check(config, shape) : [];

    public IRunObserver? Create(RunComponents run) =>
        run.Kind == RunKind.Study && run.Config.Study.Hessian.Enabled ? new HessianObserver() : null;
}

/// <summary>
/// One task end of the decomposition: task i's curvature (saved for the later tasks), then every earlier task's
/// decomposition at task i's end and at the points saved inside it, as row i's probes. A study runs it at each task end;
/// <c>research analyze hessian</c> runs it over a finished study's snapshots (<see cref="Analyze"/>).
/// </summary>
public sealed class HessianObserver : IRunObserver
{
    ForgettingDecomposition? _analysis;
    int _alongPhase = -1;
    HashSet<long> _along = [];

    ForgettingDecomposition Analysis(IRunLoop loop) => _analysis ??= new(loop.Run, loop.Layout, loop.Message);

    public void RunStarted(IRunLoop loop, bool resumed) =>
        loop.Message(Analysis(loop).Cost(loop.Run.Tasks.Count, loop.Run.Config.Study.Hessian.Samples));

    /// <summary><c>snapshots_along = m</c>: the weights at m − 1 evenly spaced steps of each task after the first trained
    /// one (its end is the m-th), named by the steps since the task began.</summary>
    public void StepApplied(IRunLoop loop)
    {
        if (_alongPhase != loop.Phase) (_alongPhase, _along) = (loop.Phase, AlongSteps(loop.Run, loop.Phase));
        long inTask = loop.Step - loop.PhaseStartStep;
        if (_along.Contains(inTask)) WeightFile.Save(loop.ModelState(), loop.Layout.AlongWeights(loop.Phase, inTask));
    }

    static HashSet<long> AlongSteps(RunComponents run, int phase)
    {
        int m = run.Config.Study.Hessian.SnapshotsAlong;
        if (m < 2 || phase == 0) return [];
        long planned = run.StepsOf(phase);
        return Enumerable.Range(1, m - 1).Select(k => (long)Math.Round((double)k * planned / m)).Where(s => s > 0 && s < planned).ToHashSet();
    }

    public void TaskEnded(IRunLoop loop)
    {
        var (row, points, eigenvalues) = TaskEnd(Analysis(loop), loop.Run, loop.Phase);
        foreach (var p in points.Where(p => p.Step < 0))
            loop.Message($"task {p.Earlier} after task {p.Later}: loss +{p.Measured:F4} measured (test +{p.MeasuredTest:F4}), " +
                         $"predicted {p.Predicted:F4} = first order {p.FirstOrder:F4} + quadratic {p.Quadratic:F4}; top-{eigenvalues.Count} " +
                         $"share of the quadratic term {p.TopKQuadraticShare:F3}; " +
                         string.Join(", ", p.FisherQuadratic.Select(f => $"{f.Key} Fisher {f.Value:F4}")));
        loop.AddProbes(loop.Phase, row);
    }

    /// <summary>Task i's end: its own curvature, the decomposition points of the earlier tasks, and row i's probes.</summary>
    static (Dictionary<string, double[]> Row, IReadOnlyList<DecompositionPoint> Points, IReadOnlyList<double> Eigenvalues) TaskEnd(
        ForgettingDecomposition analysis, RunComponents run, int i)
    {
        using var own = analysis.Curvature(i);
        var points = analysis.Pairs(i);
        var row = DecompositionProbes.Row(i, run.Tasks.Count, Math.Max(1, run.Config.Study.Hessian.SnapshotsAlong), points, own);
        return (row, points, own.Eigenvalues);
    }

    /// <summary>The task ends of a finished study, from its snapshots: the rows a study with <c>[study] hessian</c> adds to
    /// its record, every decomposition point and each task's top eigenvalues.</summary>
    public static (IReadOnlyList<IReadOnlyDictionary<string, double[]>?> Rows, IReadOnlyList<DecompositionPoint> Points,
        IReadOnlyList<(int Task, IReadOnlyList<double> Eigenvalues)> Spectra) Analyze(RunComponents run, RunLayout layout, Action<string> message)
    {
        var analysis = new ForgettingDecomposition(run, layout, message);
        message(analysis.Cost(run.Tasks.Count, run.Config.Study.Hessian.Samples));
        var rows = new List<IReadOnlyDictionary<string, double[]>?>();
        var points = new List<DecompositionPoint>();
        var spectra = new List<(int, IReadOnlyList<double>)>();
        for (int i = 0; i < run.Tasks.Count; i++)
        {
            var (row, pairs, eigenvalues) = TaskEnd(analysis, run, i);
            rows.Add(row);
            points.AddRange(pairs);
            spectra.Add((i, eigenvalues));
        }
        return (rows, points, spectra);
    }
}
