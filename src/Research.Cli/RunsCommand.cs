using System.CommandLine;
using System.Globalization;
using Research.Core.Config;
using Research.Core.Files;
using Research.Core.Tracking;

namespace Research.Cli;

/// <summary>
/// <c>research runs list|show|export</c>: reads the run stores (one <c>run.sqlite</c> per run directory) under a folder.
/// </summary>
static class RunsCommand
{
    static Argument<string> Folder() => Cli.Argument("DIR", "A folder of run folders (searched two levels down)", "runs");

    public static Command RunsGroup() => Cli.Group("runs", "The runs stored under a folder",
        Cli.Command("list", "One line per run: status (a run whose process is gone shows as killed), seed, last accuracies",
            a => List(a.Positional[0]), Folder()),
        Cli.Command("show", "A run's record: config, identity, seeds, versions, plugins; its evaluations, metrics and checkpoints",
            a => Show(a.Positional[0]), Cli.Argument("RUN_DIR", "The run's folder")),
        Cli.Command("compare", "Finished runs grouped by config without the seed: mean ± 95% interval (Student t) per group",
            a => Compare(a.Positional[0], Commands.LoadPlugins(a.All("--plugins"))), Folder(), Cli.Plugins()),
        Cli.Command("export", "Every metric and evaluation as CSV, long format: run,kind,step,key,value",
            a => Export(a.Positional[0], a.One("--output")), Folder(),
            Cli.Value("--output", "FILE.csv", "Write there instead of standard output", aliases: ["-o"])));

    /// <summary>
    /// <c>research metrics RUN_DIR... [--set metrics=[…]] [--plugins DIR] [--save]</c>: the forgetting metrics of stored
    /// studies computed again from their stores alone — the test matrices, task names and probes — without training.
    /// The metrics are those of each run's recorded config (the standard seven and its <c>[[metrics]]</c>), which
    /// <c>--set</c> overrides; <c>--save</c> writes the values into the run's store. Without <c>--plugins</c>, the metric
    /// DLLs the run recorded outside the built-in folder are loaded from their recorded paths, each refused if it moved
    /// or its SHA-256 changed.
    /// </summary>
    public static Command MetricsCommand() => Cli.Command("metrics",
        "Compute stored studies' forgetting metrics again from their stores alone (matrices, task names, probes), without training",
        Metrics,
        Cli.Arguments("RUN_DIR", "A study's run folder, or a folder of them"),
        Cli.Repeated("--set", "KEY=VALUE", "Override the recorded config, e.g. --set metrics=[{name=\"bwt\"}] (repeatable)"),
        Cli.Plugins(),
        Cli.Flag("--save", "Write the values into each run's store"));

    static int Metrics(Parsed a)
    {
        var hosts = new Dictionary<string, Research.Core.Plugins.PluginHost>();
        Research.Core.Plugins.PluginHost? builtIn = null;
        int studies = 0, failed = 0;
        foreach (var path in a.Positional.SelectMany(Stores))
        {
            // Read-only unless the values are to be saved into it.
            using var store = a.Flag("--save") ? new RunStore(path) : null;
            using var readOnly = store is null ? RunReader.Open(path) : null;
            var reader = store?.Reader ?? readOnly!;
            foreach (var run in reader.Runs())
            {
                var id = run.Id;
                if (Research.Core.Studies.StudyRecord.Load(reader, id) is not { } record) continue;
                // Read as the file it was recorded from, so its [plugins] dirs resolve as they did for the study.
                var config = ConfigLoader.Parse(run.ConfigToml ?? "", run.ConfigFile ?? Path.Combine(Path.GetDirectoryName(path)!, "config.toml"), a.All("--set"));
                var dirs = a.All("--plugins").Concat(config.PluginDirs).ToList();
                // Without --plugins, the DLLs the run recorded of the metrics chosen now, each checked to be the file that
                // computed them.
                var chosen = config.Metrics.Select(m => m.Name).ToHashSet(StringComparer.Ordinal);
                var files = a.All("--plugins").Count > 0 ? []
                    : Research.Core.Training.RecordedPlugins.MetricFiles(
                        Research.Core.Training.RecordedPlugins.Parse(run.Plugins).Where(r => chosen.Contains(r.Name)),
                        name => (builtIn ??= Research.Core.Plugins.PluginHost.Load([])).Lookup("metrics", name) is not null, id);
                var key = string.Join("\n", dirs.Concat(files));
                if (!hosts.TryGetValue(key, out var host)) hosts[key] = host = Commands.LoadPlugins(dirs, files);
                var metrics = Research.Core.Training.RunBuilder.Metrics(config, host);
                var (values, failures) = Research.Core.Training.GuardedMetric.ComputeAll(metrics, record, a.Flag("--save") ? store : null, id);
                Console.WriteLine($"{id} ({record.Tasks.Count} tasks)");
                Commands.PrintMetrics(values);
                foreach (var f in failures) Console.Error.WriteLine($"metric failed: {f}");
                studies++;
                failed += failures.Count;
            }
        }
        if (studies == 0) throw new UsageException($"no finished study under {string.Join(", ", a.Positional)}");
        return failed == 0 ? 0 : 1;
    }

    /// <summary>Run directories under <paramref name="root"/> (the folder itself, or one or two levels down).</summary>
    static IEnumerable<string> Stores(string root)
    {
        if (!Directory.Exists(root)) throw new UsageException($"no such folder: {root}");
        return Directory.EnumerateFiles(root, RunStore.FileName, new EnumerationOptions { RecurseSubdirectories = true, MaxRecursionDepth = 2 })
            .Order(StringComparer.Ordinal);
    }

    static int List(string root)
    {
        var stores = Stores(root).ToList();
        var table = Tables.Create(new("run"), new("status"), new("seed", true), new("val acc", true), new("test acc", true), new("study avg acc", true),
            new("error / stop reason"));
        foreach (var path in stores)
        {
            using var store = RunReader.Open(path);
            foreach (var run in store.Runs())
            {
                // A training run's last evaluation; a study's mean over the tasks after its last task (its matrix).
                double? Last(string split) => store.Final(run.Id, split);
                Tables.Row(table, run.Id, run.Status, Convert.ToString(run.Seed, CultureInfo.InvariantCulture) ?? "",
                    F(Last("val")), F(Last("test")), F(store.StudyMetric(run.Id, "average-accuracy")), run.Error ?? run.StopReason ?? "");
            }
        }
        Tables.Write(table);
        return 0;
    }

    /// <summary><c>research plot matrix RUN_DIR</c>: a study's test-accuracy matrix as a heatmap.</summary>
    public static Command PlotMatrixCommand() => Cli.Command("matrix", "A study's accuracy matrix R[i][j] as a heatmap", PlotMatrix,
        Cli.Argument("RUN_DIR", "The study's run folder"),
        Cli.Value("--split", "test|val", "Which matrix", "test"),
        Cli.Value("--output", "FILE.png", "Where to write the figure", "matrix.png", ["-o"]));

    static int PlotMatrix(Parsed a)
    {
        var path = Path.Combine(a.Positional[0], RunStore.FileName);
        if (!File.Exists(path)) throw new UsageException($"{a.Positional[0]} holds no {RunStore.FileName}");
        using var store = RunReader.Open(path);
        var split = a.One("--split")!;
        if (split is not ("test" or "val")) throw new UsageException($"--split must be test or val, not '{split}'");
        var (name, matrix) = store.Runs().Select(r => (r.Name, Matrix: store.Matrix(r.Id, split))).LastOrDefault(r => r.Matrix != null);
        if (matrix is null) throw new UsageException($"{a.Positional[0]} is not a study (no {split} matrix)");
        var output = a.One("--output")!;
        Research.Reporting.StudyPlot.WriteMatrix(output, $"{name}: {split} accuracy", matrix.Accuracy);
        Console.Error.WriteLine($"wrote {Path.GetFullPath(output)}");
        return 0;
    }

    /// <summary><c>research plot curves RUN_DIR... [--key train_loss]</c>: a metric against the step for several runs.</summary>
    public static Command PlotCurvesCommand() => Cli.Command("curves", "A stored metric against the step, one line per run", PlotCurves,
        Cli.Arguments("RUN_DIR", "Run folders"),
        Cli.Value("--key", "METRIC", "The metric (train_loss, lr, grad_norm, …; log:PLUGIN/NAME for a plugin's logged value)", "train_loss"),
        Cli.Value("--output", "FILE.png", "Where to write the figure", "curves.png", ["-o"]));

    static int PlotCurves(Parsed a)
    {
        var key = a.One("--key")!;
        var runs = new List<(string, double[], double[])>();
        foreach (var dir in a.Positional)
        {
            var path = Path.Combine(dir, RunStore.FileName);
            if (!File.Exists(path)) throw new UsageException($"{dir} holds no {RunStore.FileName}");
            using var store = RunReader.Open(path);
            var points = store.Metric(null, key.StartsWith("log:", StringComparison.Ordinal) ? Research.Core.Training.RunSignals.Key(key[4..]) : key);
            if (points.Count == 0) throw new UsageException($"{dir} has no metric '{key}'");
            runs.Add((Path.GetFileName(Path.GetFullPath(dir).TrimEnd('/')), points.Select(p => (double)p.Step).ToArray(), points.Select(p => p.Value).ToArray()));
        }
        var output = a.One("--output")!;
        Research.Reporting.StudyPlot.WriteCurves(output, key, key, runs);
        Console.Error.WriteLine($"wrote {Path.GetFullPath(output)}");
        return 0;
    }

    /// <summary>
    /// Groups finished runs whose resolved configs differ only in the seed (and where they ran: name, output folder,
    /// threads) — <see cref="ResolvedConfig.SeedGroup"/>, the run's identity without its seed — and reports
    /// per group the mean over seeds ± the 95% interval (Student t with n − 1 degrees of freedom, MathNet) of the
    /// final validation and test accuracy — for a study, the average accuracy over all tasks after the last. The
    /// plugins' options types say which of their options count (<see cref="ResolvedConfig.SeedGroupOfJson"/>).
    /// </summary>
    static int Compare(string root, Research.Core.Plugins.PluginHost host)
    {
        var groups = new Dictionary<string, List<(string Name, long Seed, double Val, double Test)>>();
        foreach (var path in Stores(root))
        {
            using var store = RunReader.Open(path);
            foreach (var run in store.Runs().Where(r => r.Status == "finished"))
            {
                if (store.Final(run.Id, "val") is not { } val || store.Final(run.Id, "test") is not { } test) continue;
                // A run recorded without its resolved config is a group of its own.
                var key = run.ResolvedJson is { } json ? ResolvedConfig.SeedGroupOfJson(json, host) : "run:" + run.Id;
                if (!groups.TryGetValue(key, out var list)) groups[key] = list = [];
                list.Add((run.Name, run.Seed ?? 0, val, test));
            }
        }
        var table = Tables.Create(new("group (runs differing only in seed)"), new("seeds", true), new("val acc", true), new("test acc", true));
        foreach (var g in groups.Values.OrderBy(g => g[0].Name, StringComparer.Ordinal))
        {
            var label = System.Text.RegularExpressions.Regex.Replace(g[0].Name, @"-s\d+$", "");
            Tables.Row(table, label, g.Count.ToString(CultureInfo.InvariantCulture), MeanCi(g.Select(x => x.Val).ToList()), MeanCi(g.Select(x => x.Test).ToList()));
        }
        Tables.Write(table);
        return 0;
    }

    /// <summary>mean ± t₀.₉₇₅,ₙ₋₁ · s/√n (<see cref="RunResults.MeanCi"/>); a single run has no interval.</summary>
    static string MeanCi(IReadOnlyList<double> xs)
    {
        var (mean, half, _) = RunResults.MeanCi(xs);
        var m = mean.ToString("F4", CultureInfo.InvariantCulture);
        return double.IsNaN(half) ? m : $"{m} ± {half.ToString("F4", CultureInfo.InvariantCulture)}";
    }

    static string F(double? v) => v is { } x ? x.ToString("F4", CultureInfo.InvariantCulture) : "–";

    static int Show(string dir)
    {
        var path = Path.Combine(dir, RunStore.FileName);
        if (!File.Exists(path)) throw new UsageException($"{dir} holds no {RunStore.FileName}");
        using var store = RunReader.Open(path);
        var runs = store.Runs();
        foreach (var r in runs)
            foreach (var (label, value) in new (string, object?)[]
                     {
                         ("id", r.Id), ("name", r.Name), ("status", r.Status), ("started_utc", r.StartedUtc), ("ended_utc", r.EndedUtc),
                         ("config_file", r.ConfigFile), ("identity", r.Identity), ("seed", r.Seed), ("derived_seeds", r.DerivedSeeds),
                         ("code_version", r.CodeVersion), ("packages", r.Packages), ("plugins", r.Plugins), ("threads", r.Threads),
                         ("device", r.Device), ("stop_reason", r.StopReason), ("error", r.Error),
                     })
                if (value is { } v) Console.WriteLine($"{label,-14} {Convert.ToString(v, CultureInfo.InvariantCulture)}");
        Console.WriteLine();
        Console.WriteLine("evaluations:");
        var evaluations = Tables.Create(new("step", true), new("phase"), new("epoch", true), new("split"), new("loss", true), new("accuracy", true), new("items", true));
        string S(object? v) => Convert.ToString(v, CultureInfo.InvariantCulture) ?? "";
        foreach (var e in store.Evaluations())
            Tables.Row(evaluations, S(e.Step), e.Phase, S(e.Epoch), e.Split, F(e.Loss), F(e.Accuracy), S(e.Items));
        Tables.Write(evaluations);
        foreach (var r in runs) ShowLogged(store, r.Id);
        foreach (var r in runs) ShowStudy(store, r.Id);
        var checkpoints = Path.Combine(dir, "checkpoints");
        if (Directory.Exists(checkpoints))
            Console.WriteLine("checkpoints: " + string.Join(", ", Directory.GetDirectories(checkpoints).Select(Path.GetFileName).Order(StringComparer.Ordinal)));
        return 0;
    }

    /// <summary>What the run's plugins logged (<c>plugin/NAME/…</c>): each name's last value and its step.</summary>
    static void ShowLogged(RunReader store, string runId)
    {
        var logged = store.LastMetrics(runId, Research.Core.Training.RunSignals.Key(""));
        if (logged.Count == 0) return;
        Console.WriteLine();
        Console.WriteLine("logged by plugins (last value):");
        var table = Tables.Create(new("key"), new("step", true), new("value", true));
        foreach (var m in logged)
            Tables.Row(table, m.Key, m.Step.ToString(CultureInfo.InvariantCulture), m.Value is { } v ? v.ToString("G6", CultureInfo.InvariantCulture) : "–");
        Tables.Write(table);
    }

    /// <summary>A study's record: its accuracy and loss matrices of each split, its probes (each a matrix, a row per task
    /// end) and its forgetting metrics, a failed one with its reason. Nothing for a training run.</summary>
    static void ShowStudy(RunReader store, string runId)
    {
        var matrices = new[] { "test", "val" }.Select(split => (split, Matrix: store.Matrix(runId, split))).Where(m => m.Matrix != null).ToList();
        if (matrices.Count == 0) return;
        int tasks = matrices[0].Matrix!.Accuracy[0].Length;
        foreach (var (split, m) in matrices)
        {
            Tables.WriteMatrix($"{split} accuracy R", m!.Accuracy, "F4", tasks);
            Tables.WriteMatrix($"{split} loss L", m.Loss, "F3", tasks);
        }
        foreach (var (name, probe) in store.Probes(runId).OrderBy(p => p.Key, StringComparer.Ordinal))
            Tables.WriteMatrix($"probe {name}", probe, "G6", tasks);
        var metrics = store.StudyMetrics(runId);
        if (metrics.Count == 0) return;
        Console.WriteLine();
        var table = Tables.Create(new("metric"), new("value", true), new("per task"), new("error"));
        foreach (var m in metrics)
            Tables.Row(table, m.Name, F(m.Value), m.PerTask is { } xs ? string.Join(" ", xs.Select(x => F(double.IsNaN(x) ? null : x))) : "", m.Error ?? "");
        Tables.Write(table);
    }

    /// <summary>Every metric and evaluation of every run, long format: run, kind, step, key, value.</summary>
    static int Export(string root, string? output)
    {
        IEnumerable<IEnumerable<string>> Rows()
        {
            foreach (var path in Stores(root))
            {
                using var store = RunReader.Open(path);
                foreach (var m in store.Metrics())
                    yield return Row(m.RunId, "metric", m.Step, m.Key, m.Value);
                foreach (var e in store.Evaluations())
                {
                    yield return Row(e.RunId, "evaluation", e.Step, $"{e.Split}_loss", e.Loss);
                    yield return Row(e.RunId, "evaluation", e.Step, $"{e.Split}_accuracy", e.Accuracy);
                }
            }
        }
        string[] header = ["run", "kind", "step", "key", "value"];
        if (output is null) Csv.Write(Console.Out, header, Rows());
        else
        {
            // A store that fails halfway leaves no half file under the name asked for (OutputFile renames a whole one).
            OutputFile.WriteStream(output, stream =>
            {
                using var writer = new StreamWriter(stream);
                Csv.Write(writer, header, Rows());
            });
            Console.Error.WriteLine($"wrote {Path.GetFullPath(output)}");
        }
        return 0;
    }

    static string[] Row(string run, string kind, long step, string key, double? value) =>
        [run, kind, step.ToString(CultureInfo.InvariantCulture), key, Csv.Number(value)];
}
