using System.Globalization;
using System.Text;
using Research.Core.Config;
using Research.Core.Tracking;

namespace Research.Cli;

/// <summary>
/// <c>research runs list|show|export</c>: reads the run stores (one <c>run.sqlite</c> per run directory) under a folder.
/// </summary>
static class RunsCommand
{
    public static int Run(string[] argv)
    {
        var a = new Args(argv, ["-o", "--output"], []);
        return a.Positional switch
        {
            ["list", .. var rest] => List(rest.Count > 0 ? rest[0] : "runs"),
            ["show", var dir] => Show(dir),
            ["compare", .. var rest] => Compare(rest.Count > 0 ? rest[0] : "runs"),
            ["export", .. var rest] => Export(rest.Count > 0 ? rest[0] : "runs", a.One("-o") ?? a.One("--output")),
            _ => throw new UsageException("runs list [DIR] | runs show RUN_DIR | runs compare [DIR] | runs export [DIR] [-o FILE.csv]"),
        };
    }

    /// <summary>
    /// <c>research metrics RUN_DIR... [--set metrics=[…]] [--plugins DIR] [--save]</c>: the forgetting metrics of stored
    /// studies computed again from their stores alone — the test matrices, task names and probes — without training.
    /// The metrics are those of each run's recorded config (its <c>[[metrics]]</c>, or the default set), which
    /// <c>--set</c> overrides; <c>--save</c> writes the values into the run's store.
    /// </summary>
    public static int Metrics(string[] argv)
    {
        var a = new Args(argv, ["--set", "--plugins"], ["--save"]);
        if (a.Positional.Count == 0) throw new UsageException("metrics needs at least one RUN_DIR (a study's run directory, or a folder of them)");
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
        Console.WriteLine($"{"run",-44} {"status",-9} {"seed",5}  {"val acc",8} {"test acc",8}  {"study avg acc",13}");
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
                Console.WriteLine($"{id,-44} {status,-9} {r[2],5}  {F(Last("val")),8} {F(Last("test")),8}  {F(study),13}");
            }
        }
        return 0;
    }

    /// <summary><c>research plot matrix RUN_DIR</c>: a study's test-accuracy matrix as a heatmap.</summary>
    public static int PlotMatrix(string[] argv)
    {
        var a = new Args(argv, ["-o", "--output", "--split"], []);
        if (a.Positional.Count != 1) throw new UsageException("plot matrix needs one study RUN_DIR");
        var path = Path.Combine(a.Positional[0], RunStore.FileName);
        if (!File.Exists(path)) throw new UsageException($"{a.Positional[0]} holds no {RunStore.FileName}");
        using var store = RunStore.OpenReadOnly(path);
        var split = a.One("--split") ?? "test";
        if (split is not ("test" or "val")) throw new UsageException($"--split must be test or val, not '{split}'");
        var cells = store.Query("SELECT after_task, on_task, accuracy FROM study_matrix WHERE split = $s", ("$s", split));
        if (cells.Count == 0) throw new UsageException($"{a.Positional[0]} is not a study (no {split} matrix)");
        int T = cells.Max(c => Convert.ToInt32(c[0])) + 1;
        var accuracy = Enumerable.Range(0, T).Select(_ => new double[T]).ToArray();
        foreach (var c in cells) accuracy[Convert.ToInt32(c[0])][Convert.ToInt32(c[1])] = c[2] as double? ?? double.NaN;
        var output = a.One("-o") ?? a.One("--output") ?? "matrix.png";
        var name = store.Query("SELECT name FROM runs").FirstOrDefault()?[0] as string ?? "study";
        Research.Core.Plotting.StudyPlot.WriteMatrix(output, $"{name}: {split} accuracy", accuracy);
        Console.Error.WriteLine($"wrote {Path.GetFullPath(output)}");
        return 0;
    }

    /// <summary><c>research plot curves RUN_DIR... [--key train_loss]</c>: a metric against the step for several runs.</summary>
    public static int PlotCurves(string[] argv)
    {
        var a = new Args(argv, ["-o", "--output", "--key"], []);
        if (a.Positional.Count == 0) throw new UsageException("plot curves needs at least one RUN_DIR");
        var key = a.One("--key") ?? "train_loss";
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
        var output = a.One("-o") ?? a.One("--output") ?? "curves.png";
        Research.Core.Plotting.StudyPlot.WriteCurves(output, key, key, runs);
        Console.Error.WriteLine($"wrote {Path.GetFullPath(output)}");
        return 0;
    }

    /// <summary>
    /// Groups finished runs whose resolved configs differ only in the seed (and where they ran: name, output folder,
    /// threads) — <see cref="ResolvedConfig.SeedGroup"/>, the run's identity without its seed — and reports
    /// per group the mean over seeds ± the 95% interval (Student t with n − 1 degrees of freedom, MathNet) of the
    /// final validation and test accuracy — for a study, the average accuracy over all tasks after the last.
    /// </summary>
    static int Compare(string root)
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
                var key = r[3] is string json ? ResolvedConfig.SeedGroupOfJson(json) : "run:" + id;
                if (!groups.TryGetValue(key, out var list)) groups[key] = list = [];
                list.Add(((string)r[1]!, (long)r[2]!, val, test));
            }
        }
        Console.WriteLine($"{"group (runs differing only in seed)",-40} {"seeds",5}  {"val acc",16}  {"test acc",16}");
        foreach (var g in groups.Values.OrderBy(g => g[0].Name, StringComparer.Ordinal))
        {
            var label = System.Text.RegularExpressions.Regex.Replace(g[0].Name, @"-s\d+$", "");
            Console.WriteLine($"{label,-40} {g.Count,5}  {MeanCi(g.Select(x => x.Val).ToList()),16}  {MeanCi(g.Select(x => x.Test).ToList()),16}");
        }
        return 0;
    }

    /// <summary>mean ± t₀.₉₇₅,ₙ₋₁ · s/√n (<see cref="RunResults.MeanCi"/>); a single run has no interval.</summary>
    static string MeanCi(IReadOnlyList<double> xs)
    {
        var (mean, half, _) = RunResults.MeanCi(xs);
        var m = mean.ToString("F4", CultureInfo.InvariantCulture);
        return double.IsNaN(half) ? m + "        " : $"{m} ± {half.ToString("F4", CultureInfo.InvariantCulture)}";
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
        Console.WriteLine("evaluations (step, phase, epoch, split, loss, accuracy, items):");
        foreach (var r in store.Query("SELECT step, phase, epoch, split, loss, accuracy, items FROM evaluations ORDER BY step, split"))
            Console.WriteLine($"  {r[0],7} {r[1],-7} {r[2],4} {r[3],-10} {F(r[4] as double?),8} {F(r[5] as double?),8} {r[6],7}");
        foreach (var r in store.Query("SELECT name, value FROM study_values WHERE kind = 'metric' ORDER BY name"))
            Console.WriteLine($"  {r[0],-20} {F(r[1] as double?)}");
        var checkpoints = Path.Combine(dir, "checkpoints");
        if (Directory.Exists(checkpoints))
            Console.WriteLine("checkpoints: " + string.Join(", ", Directory.GetDirectories(checkpoints).Select(Path.GetFileName).Order(StringComparer.Ordinal)));
        return 0;
    }

    /// <summary>Every metric and evaluation of every run, long format: run, kind, step, key, value.</summary>
    static int Export(string root, string? output)
    {
        var csv = new StringBuilder("run,kind,step,key,value\n");
        foreach (var path in Stores(root))
        {
            using var store = RunStore.OpenReadOnly(path);
            foreach (var r in store.Query("SELECT run_id, step, key, value FROM metrics ORDER BY run_id, step, key"))
                csv.Append(Row(r[0], "metric", r[1], r[2], r[3]));
            foreach (var r in store.Query("SELECT run_id, step, split, loss, accuracy FROM evaluations ORDER BY run_id, step, split"))
            {
                csv.Append(Row(r[0], "evaluation", r[1], $"{r[2]}_loss", r[3]));
                csv.Append(Row(r[0], "evaluation", r[1], $"{r[2]}_accuracy", r[4]));
            }
        }
        if (output is null) Console.Write(csv);
        else
        {
            File.WriteAllText(output, csv.ToString());
            Console.Error.WriteLine($"wrote {Path.GetFullPath(output)}");
        }
        return 0;
    }

    static string Row(object? run, string kind, object? step, object? key, object? value) =>
        string.Join(',', run, kind, step, key, value is double d ? d.ToString("R", CultureInfo.InvariantCulture) : "") + "\n";
}
