using System.Globalization;
using System.Reflection;
using System.CommandLine;
using Research.Abstractions;
using Research.Core.Config;
using Research.Core.Data;
using Research.Reporting;
using Research.Core.Plugins;
using Research.Core.Training;
using Tomlyn.Model;

namespace Research.Cli;

static class Commands
{
    /// <summary>What the command adds to a run's record beside the core's: TensorBoard images.</summary>
    static IReadOnlyList<IRunObserver> Reporters() => [new TensorBoardImages()];

    /// <summary>Loads the built-in plugins and the given folders. A folder the user named that does not exist
    /// is an error; other problems are warnings now and errors only when the run asks for that plugin.</summary>
    public static PluginHost LoadPlugins(IEnumerable<string> dirs, IEnumerable<string>? files = null)
    {
        var host = PluginHost.Load(dirs, files: files);
        var missing = host.MissingFolders.ToList();
        if (missing.Count > 0) throw new PluginException(string.Join("; ", missing));
        foreach (var p in host.Problems) Console.Error.WriteLine($"warning: {p}");
        return host;
    }

    /// <summary>
    /// A config and its plugins, the plugins first: a data source or model kind they bring is bound by [data] and [model].
    /// The config's existing <c>[plugins] dirs</c> are loaded before it is read; after it is read (its own mistakes reported
    /// first, naming the file), the folders it ends up naming — <c>--set plugins.dirs</c> included — are loaded as always,
    /// so a missing one is the usual error.
    /// </summary>
    public static (RunConfig Config, PluginHost Host) ConfigWithPlugins(string path, IReadOnlyList<string> sets, IReadOnlyList<string> cliDirs)
    {
        var early = ConfigLoader.PluginDirs(path).Where(Directory.Exists).ToList();
        var host = LoadPlugins(cliDirs.Concat(early));
        var config = ConfigLoader.Load(path, sets);
        if (config.PluginDirs.Except(early).Any()) host = LoadPlugins(cliDirs.Concat(config.PluginDirs));
        return (config, host);
    }

    public static Command TrainCommand() => RunCommand(RunKind.Train,
        "Train one model from a CONFIG file: checkpoints, evaluations and metrics go to a run folder with its own store");

    /// <summary><c>research study CONFIG</c>: a sequence of tasks, the accuracy and loss matrices, the forgetting metrics.</summary>
    public static Command StudyCommand() => RunCommand(RunKind.Study,
        "Train on a sequence of tasks from a CONFIG file: the accuracy and loss matrices and the forgetting metrics");

    static Command RunCommand(RunKind kind, string description) => Cli.Command(RunBuilder.Command(kind), description, a => Run(a, kind),
        Cli.Argument("CONFIG", "The run's TOML config (research config schema lists every key)"),
        Cli.Set(), Cli.Plugins(),
        Cli.Value("--resume", "RUN_DIR", "Continue the run in RUN_DIR from its last good checkpoint, bit for bit"),
        Cli.Flag("--dry-run", "Check the config, load the data and build the model and optimizer, then stop before training"));

    /// <summary><c>research train|study CONFIG</c>: one loop for both; <c>--resume RUN_DIR</c> continues either.</summary>
    static int Run(Parsed a, RunKind kind)
    {
        var (config, host) = ConfigWithPlugins(a.Positional[0], a.All("--set"), a.All("--plugins"));
        var resume = a.One("--resume");
        if (resume != null && !Directory.Exists(resume)) throw new UsageException($"--resume {resume}: no such run directory");
        var observer = new ConsoleObserver();
        if (a.Flag("--dry-run"))
        {
            Trainer.Run(config, host, observer, dryRun: true, kind: kind);
            return 0;
        }
        var outcome = observer.Run(config.Run.Name, o => Trainer.Run(config, host, o, resumeDir: resume, kind: kind, reporters: Reporters()));
        if (kind == RunKind.Study) return PrintStudy(outcome);
        Console.WriteLine($"finished: {outcome.RunDir}");
        foreach (var (split, r) in outcome.Final) Console.WriteLine(Figures(split, r, perplexity: r.IsLanguageModel));
        return 0;
    }

    /// <summary>
    /// <c>research eval CHECKPOINT</c>: the weights of a checkpoint evaluated on the validation and test splits of
    /// its run's config (or another config), with <c>--set data.classes=[...]</c> to evaluate other data.
    /// </summary>
    public static Command EvalCommand() => Cli.Command("eval",
        "Evaluate a checkpoint's weights on the validation and test splits of its run's config (or another config)", Eval,
        Cli.Argument("CHECKPOINT", "A checkpoint folder (RUN/checkpoints/NAME) or a .safetensors file"),
        Cli.Value("--config", "CONFIG", "The config whose data and model to use; default: the config.toml of the checkpoint's run"),
        Cli.Set());

    static int Eval(Parsed a)
    {
        var checkpoint = Path.GetFullPath(a.Positional[0]);
        if (!Directory.Exists(checkpoint) && !File.Exists(checkpoint))
            throw new FileNotFoundException($"eval: no checkpoint at {checkpoint} (a checkpoint directory or .safetensors file)");
        // The weights are read through init_from, which verifies the checkpoint's manifest (once).
        // A checkpoint lives in RUN/checkpoints/NAME; the run's config is RUN/config.toml.
        var runDir = Path.GetDirectoryName(Path.GetDirectoryName(checkpoint.TrimEnd('/')) ?? "");
        var configPath = a.One("--config") ?? (runDir is null ? null : Path.Combine(runDir, "config.toml"))
                         ?? throw new UsageException($"eval: {checkpoint} is not inside a run (RUN/checkpoints/NAME); give its config with --config");
        // What the run read beside its original init_from (a Hugging Face folder's tokenizer.json and config.json) it keeps.
        var kept = CheckpointRebuild.Overrides(ConfigLoader.Load(configPath, a.All("--set")));
        var overrides = a.All("--set").Append($"model.init_from=\"{checkpoint}\"").Append("model.strict=true").Append("model.reinit=[]").Concat(kept);
        var config = ConfigLoader.Load(configPath, overrides);
        var shape = RunBuilder.CheckModel(config, RunKind.Train);
        RunBuilder.CheckClasses(config, RunKind.Train, shape);
        using var task = RunBuilder.SingleData(config);
        var (model, summary, precision) = RunBuilder.PreparedModel(config, shape, task.Train.Features);
        using var _model = model;
        Console.WriteLine(summary);
        foreach (var (split, r) in Evaluation.All(model, task, [], config.Data.EvalBatchSize, precision, RunBuilder.OutputTaskOf(shape)))
            Console.WriteLine(Figures(split, r, perplexity: true));
        return 0;
    }

    /// <summary>A split's final figures: loss and accuracy (a language model's: next-token accuracy), perplexity, and a
    /// language model's bits per byte.</summary>
    static string Figures(string split, EvalResult r, bool perplexity) =>
        $"  {split,-6} loss {r.Loss:F4}  accuracy {r.Accuracy:F4}" + (perplexity ? $"  perplexity {r.Perplexity:F3}" : "") +
        (r.IsLanguageModel ? $"  bits/byte {r.BitsPerByte:F4}" : "") + $"  ({r.Items} items)";

    /// <summary>The matrices, the metrics, and the metrics that failed (exit code 1: the study's record is stored, a metric is missing).</summary>
    static int PrintStudy(RunOutcome outcome)
    {
        var r = outcome.Record!;
        Tables.WriteMatrix("Test accuracy R", r.Accuracy, "F4", r.Tasks.Count);
        Tables.WriteMatrix("Test loss L", r.Loss, "F3", r.Tasks.Count);
        Console.WriteLine();
        PrintMetrics(outcome.Metrics);
        Console.WriteLine($"run: {outcome.RunDir}");
        foreach (var failure in outcome.MetricFailures) Console.Error.WriteLine($"metric failed: {failure}");
        return outcome.MetricFailures.Count == 0 ? 0 : 1;
    }

    /// <summary>One line per metric: its value and, where it has them, its per-task values (– where undefined).</summary>
    public static void PrintMetrics(IEnumerable<(string Name, MetricValue Value)> metrics)
    {
        var table = Tables.Create(new("metric"), new("value", Right: true), new("per task"));
        foreach (var (name, value) in metrics)
            Tables.Row(table, name, value.Value.ToString("F4", CultureInfo.InvariantCulture), value.PerTask is { } per
                ? string.Join(" ", per.Select(v => double.IsNaN(v) ? "–" : v.ToString("F3", CultureInfo.InvariantCulture))) : "");
        Tables.Write(table);
    }

    static string Embedded(string name)
    {
        using var s = Assembly.GetExecutingAssembly().GetManifestResourceStream(name)
            ?? throw new InvalidOperationException($"embedded config {name} is missing from the build");
        return new StreamReader(s).ReadToEnd();
    }

    /// <summary>
    /// Catastrophic forgetting on the embedded default: pre-train on Fashion-MNIST classes 0–4, fully fine-tune
    /// on 5–9, and evaluate both halves of the test set after each phase.
    /// </summary>
    public static Command DemoCommand() => Cli.Command("demo",
        "Catastrophic forgetting on the embedded default: pre-train on Fashion-MNIST 0–4, fine-tune on 5–9, then a 5-task study of four methods",
        Demo, Cli.Set(), Cli.Plugins(), Cli.Flag("--no-study", "Stop after the two phases; skip the permuted Fashion-MNIST study"));

    static int Demo(Parsed a)
    {
        var pretrain = ConfigLoader.Parse(Embedded("demo-pretrain.toml"), "experiments/configs/demo-pretrain.toml (embedded)", a.All("--set"));
        var host = LoadPlugins(a.All("--plugins").Concat(pretrain.PluginDirs));

        using var data = RunBuilder.Data(pretrain).Load();
        var fullTest = data.Test;
        using var first = fullTest.WithClasses([0, 1, 2, 3, 4]);
        using var second = fullTest.WithClasses([5, 6, 7, 8, 9]);
        IReadOnlyList<(string, TensorDataset)> halves = [("test_0_4", first), ("test_5_9", second)];

        var observer = new ConsoleObserver();
        Console.WriteLine("Phase 1: pre-train on classes 0–4 (" + string.Join(", ", FashionMnist.ClassNames[..5]) + ")");
        var p1 = observer.Run("pre-train 0–4", o => Trainer.Run(pretrain, host, o, halves, reporters: Reporters()));
        var finetune = ConfigLoader.Parse(Embedded("demo-finetune.toml"), "experiments/configs/demo-finetune.toml (embedded)",
            a.All("--set").Append($"model.init_from=\"{p1.WeightsPath}\""));
        Console.WriteLine("Phase 2: fully fine-tune on classes 5–9 (" + string.Join(", ", FashionMnist.ClassNames[5..]) + ")");
        var p2 = observer.Run("fine-tune 5–9", o => Trainer.Run(finetune, host, o, halves, reporters: Reporters()));

        Console.WriteLine();
        Console.WriteLine("Test accuracy            classes 0–4   classes 5–9");
        Console.WriteLine($"after pre-training 0–4   {p1.Final["test_0_4"].Accuracy,11:F4}   {p1.Final["test_5_9"].Accuracy,11:F4}");
        Console.WriteLine($"after fine-tuning 5–9    {p2.Final["test_0_4"].Accuracy,11:F4}   {p2.Final["test_5_9"].Accuracy,11:F4}");
        var drop = p1.Final["test_0_4"].Accuracy - p2.Final["test_0_4"].Accuracy;
        var lossIncrease = p2.Final["test_0_4"].Loss - p1.Final["test_0_4"].Loss;
        Console.WriteLine($"forgetting on classes 0–4: accuracy drop {drop * 100:F1} points; loss increase ΔL = {lossIncrease:F3} nats/item");
        Console.WriteLine($"runs: {p1.RunDir}  {p2.RunDir}");
        if (!a.Flag("--no-study")) DemoStudy(host, a.All("--set"));
        return 0;
    }

    /// <summary>
    /// Part 2 of the demo: a forgetting study (permuted Fashion-MNIST, 5 tasks) with plain fine-tuning, EWC, L2
    /// toward the previous weights and joint training; the matrices and metrics side by side, and the figures.
    /// </summary>
    static void DemoStudy(PluginHost host, IReadOnlyList<string> overrides)
    {
        var text = Embedded("demo-study.toml");
        // λ and α as chosen on validation accuracy by the 3-seed sweep reported in the README.
        (string Arm, string Slug, string Extra)[] arms =
        [
            ("fine-tuning", "finetune", ""),
            ("EWC (exact Fisher, λ = 10)", "ewc", "\n[[methods]]\nname = \"ewc\"\nlambda = 10.0\nfisher = \"exact\"\n"),
            ("L2 to previous (α = 0.01)", "l2", "\n[[methods]]\nname = \"l2-sp\"\nanchor = \"previous-task\"\nalpha = 0.01\n"),
            ("joint (upper bound)", "joint", ""),
        ];
        Console.WriteLine();
        Console.WriteLine("Part 2: a forgetting study — permuted Fashion-MNIST, 5 tasks, one epoch each, four arms");
        var outcomes = new List<(string Arm, RunOutcome Outcome)>();
        foreach (var (arm, slug, extra) in arms)
        {
            var config = ConfigLoader.Parse(text + extra, "experiments/configs/demo-study.toml (embedded)",
                overrides.Append($"run.name=\"demo-study-{slug}\"").Append($"study.joint={(slug == "joint" ? "true" : "false")}"));
            Console.WriteLine($"  {arm} …");
            outcomes.Add((arm, Trainer.Run(config, host, new SilentObserver(), kind: RunKind.Study, reporters: Reporters())));
        }
        foreach (var (arm, o) in outcomes)
        {
            Console.WriteLine();
            Console.WriteLine($"{arm}: test accuracy R[i][j] after task i (rows) on task j (columns)");
            foreach (var row in o.Record!.Accuracy)
                Console.WriteLine("   " + string.Join(" ", row.Select(v => v.ToString("F3", CultureInfo.InvariantCulture))));
        }
        Console.WriteLine();
        var metricNames = new[] { "average-accuracy", "average-forgetting", "bwt", "fwt", "loss-increase" };
        Console.WriteLine($"{"metric",-20}" + string.Join("", outcomes.Select(o => o.Arm.Split(' ')[0].PadLeft(14))));
        foreach (var name in metricNames)
            Console.WriteLine($"{name,-20}" + string.Join("", outcomes.Select(o =>
                o.Outcome.Metrics.First(m => m.Name == name).Value.Value.ToString("F4", CultureInfo.InvariantCulture).PadLeft(14))));
        var figures = Path.GetFullPath(Path.Combine("runs", "demo-figures"));
        foreach (var ((arm, o), slug) in outcomes.Zip(arms.Select(x => x.Slug)))
            StudyPlot.WriteTaskAccuracy(Path.Combine(figures, $"accuracy-{slug}.png"), $"{arm}: each task's accuracy as tasks are added", o.Record!);
        StudyPlot.WriteAverageAccuracy(Path.Combine(figures, "average-accuracy.png"), "Average accuracy on the tasks seen so far",
            outcomes.Select(o => (o.Arm, o.Outcome.Record!)).ToList());
        Console.WriteLine($"figures: {figures}");
    }

    public static Command PluginsGroup() => Cli.Group("plugins", "The plugins there are",
        Cli.Command("list", "Every plugin by role: its name, summary, options with defaults, aliases and DLL", PluginsList, Cli.Plugins()));

    static int PluginsList(Parsed a)
    {
        var host = LoadPlugins(a.All("--plugins"));
        foreach (var role in Enum.GetValues<PluginRole>())
        {
            var ps = host.Plugins.Where(p => p.Role == role).OrderBy(p => p.Name, StringComparer.Ordinal).ToList();
            if (ps.Count == 0) continue;
            Console.WriteLine($"{PluginHost.RoleName(role)}s:");
            foreach (var p in ps)
            {
                Console.WriteLine($"  {p.Name,-22} {p.Summary}");
                // One broken plugin does not stop the list: its line says what is wrong with it. Defaults are spelled as a
                // config writes them (enums in kebab case, as the binder reads them).
                string optionsLine;
                try { optionsLine = string.Join(", ", PluginHost.OptionDefaults(p).Select(o => $"{o.Key} = {ConfigValue.Text(o.Default)}")); }
                catch (PluginException e) { optionsLine = $"(cannot be read: {e.Message})"; }
                if (optionsLine.Length > 0) Console.WriteLine($"  {"",-22} options: {optionsLine}");
                if (p.Aliases.Count > 0) Console.WriteLine($"  {"",-22} also named: {string.Join(", ", p.Aliases)}");
                if (role == PluginRole.Method) Console.WriteLine($"  {"",-22} roles: {string.Join(", ", PluginHost.MethodRoles(p.Type))}");
                Console.WriteLine($"  {"",-22} {p.AssemblyPath}");
            }
        }
        return 0;
    }

    /// <summary>Draws schedules side by side by calling each pure schedule at every step t = 0…T.</summary>
    public static Command PlotScheduleCommand() => Cli.Command("schedule",
        "Learning-rate schedules side by side, each called at every step t = 0…T: a PNG, or CSV with --csv", PlotSchedule,
        Cli.Arguments("NAME", "Schedule plugin names or aliases (research plugins list)"),
        Cli.Value("--steps", "T", "The horizon T, in optimizer steps", "1000"),
        Cli.Value("--warmup", "W", "warmup_steps for every schedule that has that option", "0"),
        Cli.Value("--lr", "PEAK", "The peak learning rate the multipliers scale", "1e-3"),
        Cli.Value("--steps-per-epoch", "N", "Steps per epoch, for schedules that count epochs; default: T"),
        Cli.Repeated("--set", "NAME.KEY=VALUE", "An option of one schedule, e.g. --set cosine.min_lr_ratio=0.1 (repeatable)"),
        Cli.Plugins(),
        Cli.Value("--output", "FILE.png", "Where to write the plot; default schedules.png, none with --csv", aliases: ["-o"]),
        Cli.Flag("--csv", "Write step,name₁,name₂,… to standard output (η·f(t) in round-trip format)"));

    static int PlotSchedule(Parsed a)
    {
        // A plot holds one value per step: ten million is far beyond any run here and still fits in memory.
        long steps = a.Long("--steps", 1, 10_000_000), warmup = a.Long("--warmup", 0, 10_000_000);
        var peak = a.Double("--lr", 0, 100);
        var host = LoadPlugins(a.All("--plugins"));
        var series = new List<(string Name, double[] Values)>();
        foreach (var name in a.Positional)
        {
            var descriptor = host.Find(PluginRole.Schedule, name);
            var options = new TomlTable();
            if (warmup > 0 && descriptor.OptionsType != null && OptionsBinder.Keys(descriptor.OptionsType).ContainsKey("warmup_steps"))
                options["warmup_steps"] = warmup;
            var root = new TomlTable { [name] = options };
            foreach (var s in a.All("--set").Where(s => s.StartsWith(name + ".", StringComparison.Ordinal)))
                ConfigLoader.ApplyOverride(root, s, "--set");
            var schedule = (ISchedule)PluginHost.Instantiate(descriptor, options, "--set", name);
            var values = new double[steps + 1];
            var spe = a.One("--steps-per-epoch") is null ? steps : a.Long("--steps-per-epoch", 1, long.MaxValue);
            for (long t = 0; t <= steps; t++) values[t] = schedule.Multiplier(new ScheduleContext(t, steps, spe, []));
            series.Add((name, values));
        }
        if (a.Flag("--csv")) Console.Write(SchedulePlot.ToCsv(series, peak));
        var output = a.One("--output") ?? (a.Flag("--csv") ? null : "schedules.png");
        if (output != null)
        {
            SchedulePlot.WritePng(output, series, peak);
            Console.Error.WriteLine($"wrote {Path.GetFullPath(output)}");
        }
        return 0;
    }
}
