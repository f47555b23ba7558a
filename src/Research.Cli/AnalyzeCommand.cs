using System.CommandLine;
using System.Globalization;
using Research.Abstractions;
using Research.Core.Config;
using Research.Core.Hessian;
using Research.Reporting;
using Research.Core.Tracking;
using Research.Core.Training;

namespace Research.Cli;

/// <summary>
/// <c>research analyze hessian RUN_DIR [--set study.hessian.KEY=VALUE]... [--plugins DIR]...</c>: the forgetting
/// decomposition of a finished study, from its task-end snapshots: the same computation <c>[study] hessian</c> runs at
/// task ends (<see cref="ForgettingDecomposition"/>), stored as probes of the study's record (replacing earlier ones of the
/// same names) and drawn as figures in <c>RUN_DIR/hessian/</c>.
/// </summary>
public static class AnalyzeCommand
{
    /// <summary>The draw the example uses when the study did not ask for the analysis.</summary>
    const int DefaultSamples = 2000;

    public static Command AnalyzeGroup() => Cli.Group("analyze", "Analyses of finished studies",
        Cli.Command("hessian",
            $"The forgetting decomposition ½ΔθᵀHΔθ of a finished study from its task-end snapshots: probes in its store, figures in RUN_DIR/hessian/ (study.hessian.samples = {DefaultSamples} when the study did not ask for it)",
            Run,
            Cli.Argument("RUN_DIR", "The study's run folder"),
            Cli.Repeated("--set", "study.hessian.KEY=VALUE", "Override the analysis' settings in the recorded config (repeatable)"),
            Cli.Plugins()));

    static int Run(Parsed a)
    {
        var runDir = Path.GetFullPath(a.Positional[0]);
        var configPath = Path.Combine(runDir, "config.toml");
        if (!File.Exists(configPath)) throw new UsageException($"{runDir} is not a run directory (it has no config.toml)");
        var storePath = Path.Combine(runDir, RunStore.FileName);
        if (!File.Exists(storePath)) throw new UsageException($"{runDir} has no run store ({RunStore.FileName})");

        // The analysis reads the study's snapshots: an override may change the analysis, not what the study computed.
        var changes = a.All("--set").Where(o => o.Contains('=')).Select(o => o.Split('=', 2)[0].Trim()).Where(k => !ResolvedConfig.OutsideIdentity(k))
            .Select(k => new ConfigError(configPath, k, "--set here may change only what a run's identity leaves out (study.hessian.*, run.threads): " +
                "this key changes what the finished study computed, and its snapshots are of the study as it ran")).ToList();
        if (changes.Count > 0) throw new ConfigException(changes);
        var (config, host) = Commands.ConfigWithPlugins(configPath, a.All("--set"), a.All("--plugins"));
        if (!config.Study.Hessian.Enabled)
            config = ConfigLoader.Load(configPath, a.All("--set").Prepend($"study.hessian.samples={DefaultSamples}"));
        using var store = new RunStore(storePath);
        var runId = store.Reader.LastFinished() ?? throw new UsageException($"{runDir} holds no finished run");
        var record = Research.Core.Studies.StudyRecord.Load(store.Reader, runId)
                     ?? throw new UsageException($"{runDir} is not a finished study (no complete task × task matrix): the analysis compares task ends");
        int T = record.Tasks.Count;
        for (int i = 0; i < T; i++)
        {
            var snapshot = RunLayout.At(runDir).TaskEndWeights(i);
            if (!File.Exists(snapshot)) throw new FileNotFoundException($"the study's snapshot of task {i} is missing: {snapshot}", snapshot);
        }

        using var run = RunBuilder.Build(config, host, RunKind.Study);
        if (config.Run.Threads > 0) TorchSharp.torch.set_num_threads(config.Run.Threads);
        // The same observer a study with [study] hessian runs at its task ends, over the stored snapshots.
        var (rows, points, spectra) = HessianObserver.Analyze(run, RunLayout.At(runDir), Console.WriteLine);
        var probes = Research.Core.Studies.StudyRecord.Matrices(rows);
        foreach (var (name, matrix) in probes) store.Probe(runId, name, matrix);

        Print(points);
        var dir = RunLayout.At(runDir).Hessian;
        Directory.CreateDirectory(dir);
        var title = Path.GetFileName(runDir);
        HessianPlot.WritePredictedAgainstMeasured(Path.Combine(dir, "predicted-vs-measured.png"), title, points);
        HessianPlot.WriteSpectrum(Path.Combine(dir, "spectrum.png"), title, spectra);
        HessianPlot.WriteOverlap(Path.Combine(dir, "overlap.png"), title, points);
        Console.WriteLine($"stored {probes.Count} probes in {storePath}; figures in {dir}");
        return 0;
    }

    static void Print(IReadOnlyList<DecompositionPoint> points)
    {
        if (points.Count == 0) { Console.WriteLine("one task: no later task to measure forgetting against"); return; }
        var variants = points.SelectMany(p => p.FisherQuadratic.Keys).Distinct().ToList();
        Console.WriteLine();
        var table = Tables.Create([new("task j", true), new("after", true), new("at", true), new("measured", true), new("test", true),
            new("predicted", true), new("1st order", true), new("quadratic", true), new("top-k q", true), new("top-k ‖·‖", true),
            .. variants.Select(v => new Tables.Column("F " + v, true))]);
        string F(double v, string format = "F4") => v.ToString(format, CultureInfo.InvariantCulture);
        foreach (var p in points)
            Tables.Row(table, [p.Earlier.ToString(CultureInfo.InvariantCulture), p.Later.ToString(CultureInfo.InvariantCulture),
                p.Step < 0 ? "end" : F(p.Fraction, "F2"), F(p.Measured), F(p.MeasuredTest), F(p.Predicted), F(p.FirstOrder), F(p.Quadratic),
                F(p.TopKQuadraticShare, "F3"), F(p.TopKNormShare), .. variants.Select(v => F(p.FisherQuadratic.GetValueOrDefault(v, double.NaN)))]);
        Tables.Write(table);
    }
}
