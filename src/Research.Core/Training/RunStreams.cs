using Research.Core.Config;

namespace Research.Core.Training;

/// <summary>What a run is made of, as a dry run prints it and the run record keeps it: the resolved config, the data and
/// steps, the parameter groups, the plugins, and the names of its random streams.</summary>
public static class RunStreams
{
    /// <summary>The resolved config (every default, plugin options included), the data, the steps and the groups.</summary>
    public static IEnumerable<string> DryRun(RunComponents run)
    {
        var c = run.Config;
        yield return $"# {c.File}, resolved (every default filled in, plugin options included); identity {run.Identity}";
        yield return ResolvedConfig.Toml(run.Canonical);
        foreach (var (t, i) in run.Tasks.Select((t, i) => (t, i)))
            yield return $"# {(run.Kind == RunKind.Study ? $"task {i} ({t.Name}): " : "")}{t.Train.Count} training items, " +
                         $"{t.Validation.Count} validation, {t.Test.Count} test; {run.StepsOf(i)} optimizer steps " +
                         $"({run.EpochsOf(i)} epochs × {run.StepsPerEpoch(i)})";
        if (run.LoadSummary != null) yield return run.LoadSummary;
        var (optimizer, table) = RunBuilder.Optimizer(c.Optimizer, run.Model, c.File);
        optimizer.Dispose();
        foreach (var line in table) yield return line;
        foreach (var p in run.Plugins) yield return $"# {p.Role} '{p.Name}': {p.Path} (version {p.Version}, SHA-256 {p.Sha256})";
    }

    /// <summary>The random streams of a run, by name (recorded with their derived seeds).</summary>
    public static IEnumerable<string> Names(RunComponents run)
    {
        var c = run.Config;
        yield return "init";
        foreach (var stream in run.Data.Source.Streams) yield return stream;
        if (c.Model.Reinit.Length > 0) yield return "reinit";
        if (run.Kind == RunKind.Train) yield return "validation-split";
        for (int t = 0; t < run.Tasks.Count; t++)
        {
            if (run.Kind == RunKind.Study)
            {
                yield return $"task-{t}";
                if (c.Study.Benchmark == "permuted" && t > 0) yield return $"permutation/{t}";
                yield return $"fisher/task-{t}";
                if (c.Study.ConsolidationItems > 0) yield return $"consolidation/task-{t}";
            }
            for (int e = 0; e < run.EpochsOf(t); e++) yield return DataOrder(run, t, e);
        }
    }

    /// <summary>The data order of an epoch depends only on (seed, phase, epoch): a resumed run sees the same batches.</summary>
    public static string DataOrder(RunComponents run, int phase, int epoch) =>
        run.Kind == RunKind.Study ? $"task-{phase}/data-order/epoch-{epoch}" : $"data-order/epoch-{epoch}";
}
