using System.CommandLine;
using System.Globalization;
using Research.Core.Config;
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
    /// The metrics are those of each run's recorded config (its <c>[[metrics]]</c>, or the default set), which
    /// <c>--set</c> overrides; <c>--save</c> writes the values into the run's store.
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
        int studies = 0, failed = 0;
        foreach (var path in a.Positional.SelectMany(Stores))
        {
            // Read-only unless the values are to be saved into it.
            using var store = a.Flag("--save") ? new RunStore(path) : RunStore.OpenReadOnly(path);
            foreach (var r in store.Query("SELECT id, config_toml, config_file FROM runs ORDER BY started_utc"))
            {
                var id = (string)r[0]!;
                if (Research.Core.Studies.StudyRecord.Load(store, id) is not { } record) continue;
                // Read as the file it was recorded from, so its [plugins] dirs resolve as they did for the study.
                var config = ConfigLoader.Parse((string?)r[1] ?? "", (string?)r[2] ?? Path.Combine(Path.GetDirectoryName(path)!, "config.toml"), a.All("--set"));
                var dirs = a.All("--plugins").Concat(config.PluginDirs).ToList();
                var key = string.Join("\n", dirs);
                if (!hosts.TryGetValue(key, out var host)) hosts[key] = host = Commands.LoadPlugins(dirs);
                var metrics = Research.Core.Training.RunBuilder.Metrics(config, host);
                var (values, failures) = Research.Core.Studies.StudyRecord.ComputeMetrics(metrics, record, a.Flag("--save") ? store : null, id);
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
        var table = Tables.Create(new("run"), new("status"), new("seed", true), new("val acc", true), new("test acc", true), new("study avg acc", true));
        foreach (var path in stores)
        {
            using var store = RunStore.OpenReadOnly(path);
            foreach (var r in store.Query("SELECT id, status, seed, host, pid, heartbeat_utc FROM runs"))
            {
                var status = RunStore.Liveness((string)r[1]!, r[3] as string, r[4] as long?, r[5] as string, TimeSpan.FromMinutes(10));
                var id = (string)r[0]!;
                // A training run's last evaluation; a study's mean over the tasks after its last task (its matrix).
                double? Last(string split) => RunResults.Final(store, id, split);
                var study = store.Query("SELECT value FROM study_values WHERE run_id = $r AND kind = 'metric' AND name = 'average-accuracy'",
                    ("$r", id)).FirstOrDefault()?[0] as double?;
                Tables.Row(table, id, status, Convert.ToString(r[2], CultureInfo.InvariantCulture) ?? "", F(Last("val")), F(Last("test")), F(study));
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
        using var store = RunStore.OpenReadOnly(path);
        var split = a.One("--split")!;
        if (split is not ("test" or "val")) throw new UsageException($"--split must be test or val, not '{split}'");
        var cells = store.Query("SELECT after_task, on_task, accuracy FROM study_matrix WHERE split = $s", ("$s", split));
        if (cells.Count == 0) throw new UsageException($"{a.Positional[0]} is not a study (no {split} matrix)");
        int T = cells.Max(c => Convert.ToInt32(c[0])) + 1;
        var accuracy = Enumerable.Range(0, T).Select(_ => new double[T]).ToArray();
        foreach (var c in cells) accuracy[Convert.ToInt32(c[0])][Convert.ToInt32(c[1])] = c[2] as double? ?? double.NaN;
        var output = a.One("--output")!;
        var name = store.Query("SELECT name FROM runs").FirstOrDefault()?[0] as string ?? "study";
        Research.Reporting.StudyPlot.WriteMatrix(output, $"{name}: {split} accuracy", accuracy);
        Console.Error.WriteLine($"wrote {Path.GetFullPath(output)}");
        return 0;
    }

    /// <summary><c>research plot curves RUN_DIR... [--key train_loss]</c>: a metric against the step for several runs.</summary>
    public static Command PlotCurvesCommand() => Cli.Command("curves", "A stored metric against the step, one line per run", PlotCurves,
        Cli.Arguments("RUN_DIR", "Run folders"),
        Cli.Value("--key", "METRIC", "The metric (train_loss, lr, grad_norm, …)", "train_loss"),
        Cli.Value("--output", "FILE.png", "Where to write the figure", "curves.png", ["-o"]));

    static int PlotCurves(Parsed a)
    {
        var key = a.One("--key")!;
        var runs = new List<(string, double[], double[])>();
        foreach (var dir in a.Positional)
        {
            var path = Path.Combine(dir, RunStore.FileName);
            if (!File.Exists(path)) throw new UsageException($"{dir} holds no {RunStore.FileName}");
            using var store = RunStore.OpenReadOnly(path);
            var rows = store.Query("SELECT step, value FROM metrics WHERE key = $k AND value IS NOT NULL ORDER BY step", ("$k", key));
            if (rows.Count == 0) throw new UsageException($"{dir} has no metric '{key}'");
            runs.Add((Path.GetFileName(Path.GetFullPath(dir).TrimEnd('/')), rows.Select(r => Convert.ToDouble(r[0])).ToArray(),
                rows.Select(r => (double)r[1]!).ToArray()));
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
            using var store = RunStore.OpenReadOnly(path);
            foreach (var r in store.Query("SELECT id, name, seed, resolved_json FROM runs WHERE status = 'finished'"))
            {
                var id = (string)r[0]!;
                if (RunResults.Final(store, id, "val") is not { } val || RunResults.Final(store, id, "test") is not { } test) continue;
                // A run recorded without its resolved config is a group of its own.
                var key = r[3] is string json ? ResolvedConfig.SeedGroupOfJson(json, host) : "run:" + id;
                if (!groups.TryGetValue(key, out var list)) groups[key] = list = [];
                list.Add(((string)r[1]!, (long)r[2]!, val, test));
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
        using var store = RunStore.OpenReadOnly(path);
        var columns = new[] { "id", "name", "status", "started_utc", "ended_utc", "config_file", "identity", "seed", "derived_seeds",
            "code_version", "packages", "plugins", "threads", "device", "stop_reason", "error" };
        foreach (var r in store.Query($"SELECT {string.Join(", ", columns)} FROM runs"))
            for (int i = 0; i < columns.Length; i++)
                if (r[i] is { } v) Console.WriteLine($"{columns[i],-14} {Convert.ToString(v, CultureInfo.InvariantCulture)}");
        Console.WriteLine();
        Console.WriteLine("evaluations:");
        var evaluations = Tables.Create(new("step", true), new("phase"), new("epoch", true), new("split"), new("loss", true), new("accuracy", true), new("items", true));
        string S(object? v) => Convert.ToString(v, CultureInfo.InvariantCulture) ?? "";
        foreach (var r in store.Query("SELECT step, phase, epoch, split, loss, accuracy, items FROM evaluations ORDER BY step, split"))
            Tables.Row(evaluations, S(r[0]), S(r[1]), S(r[2]), S(r[3]), F(r[4] as double?), F(r[5] as double?), S(r[6]));
        Tables.Write(evaluations);
        var metrics = store.Query("SELECT name, value FROM study_values WHERE kind = 'metric' ORDER BY name");
        if (metrics.Count > 0)
        {
            Console.WriteLine();
            var table = Tables.Create(new("metric"), new("value", true));
            foreach (var r in metrics) Tables.Row(table, S(r[0]), F(r[1] as double?));
            Tables.Write(table);
        }
        var checkpoints = Path.Combine(dir, "checkpoints");
        if (Directory.Exists(checkpoints))
            Console.WriteLine("checkpoints: " + string.Join(", ", Directory.GetDirectories(checkpoints).Select(Path.GetFileName).Order(StringComparer.Ordinal)));
        return 0;
    }

    /// <summary>Every metric and evaluation of every run, long format: run, kind, step, key, value.</summary>
    static int Export(string root, string? output)
    {
        IEnumerable<IEnumerable<string>> Rows()
        {
            foreach (var path in Stores(root))
            {
                using var store = RunStore.OpenReadOnly(path);
                foreach (var r in store.Query("SELECT run_id, step, key, value FROM metrics ORDER BY run_id, step, key"))
                    yield return Row(r[0], "metric", r[1], r[2], r[3]);
                foreach (var r in store.Query("SELECT run_id, step, split, loss, accuracy FROM evaluations ORDER BY run_id, step, split"))
                {
                    yield return Row(r[0], "evaluation", r[1], $"{r[2]}_loss", r[3]);
                    yield return Row(r[0], "evaluation", r[1], $"{r[2]}_accuracy", r[4]);
                }
            }
        }
        string[] header = ["run", "kind", "step", "key", "value"];
        if (output is null) Csv.Write(Console.Out, header, Rows());
        else
        {
            // Written beside, then renamed: a folder that fails halfway leaves no half file under the name asked for.
            var tmp = output + ".tmp";
            using (var writer = new StreamWriter(tmp)) Csv.Write(writer, header, Rows());
            File.Move(tmp, output, overwrite: true);
            Console.Error.WriteLine($"wrote {Path.GetFullPath(output)}");
        }
        return 0;
    }

    static string[] Row(object? run, string kind, object? step, object? key, object? value) =>
        [Convert.ToString(run, CultureInfo.InvariantCulture) ?? "", kind, Convert.ToString(step, CultureInfo.InvariantCulture) ?? "",
         Convert.ToString(key, CultureInfo.InvariantCulture) ?? "", Csv.Number(value as double?)];
}
