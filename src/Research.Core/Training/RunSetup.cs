using System.Text.Json;
using Research.Abstractions;
using Research.Core.Config;
using Research.Core.Data;
using Research.Core.Models;
using Research.Core.Optim;
using Research.Core.Plugins;
using Research.Core.Tracking;
using Research.Core.Precision;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Training;

/// <summary>A task's data: training split, the held-out validation split (for every model selection), and test.</summary>
public sealed record TaskData(string Name, TensorDataset Train, TensorDataset Validation, TensorDataset Test) : IDisposable
{
    public void Dispose() { Train.Dispose(); Validation.Dispose(); Test.Dispose(); }
}

/// <summary>Turns a bound config into the objects a run needs: data, model, optimizer, plugins.</summary>
public static class RunSetup
{
    /// <summary>The dataset's train and test sets, before class filtering and splitting.</summary>
    public static (TensorDataset Train, TensorDataset Test) LoadDataset(DataSection d, long seed) => d.Dataset switch
    {
        "synthetic" => SyntheticClusters.Make(d.SyntheticSamples, d.SyntheticFeatures, d.SyntheticClasses, Seeds.Generator(seed, "synthetic-data")),
        _ => FashionMnist.Load(FashionMnist.ResolveDirectory(d.Path)),
    };

    /// <summary>(features, classes) of a dataset without loading it.</summary>
    public static (long Features, int Classes) DatasetShape(DataSection d) =>
        d.Dataset == "synthetic" ? (d.SyntheticFeatures, d.SyntheticClasses) : (784, 10);

    /// <summary>Class filter, size limit, and the seeded validation holdout (seed stream "validation-split").</summary>
    public static TaskData Task(string name, TensorDataset fullTrain, TensorDataset fullTest, DataSection d, long seed)
    {
        using var filtered = fullTrain.WithClasses(d.Classes);
        using var limited = filtered.Take(d.TrainLimit);
        var (train, val) = limited.Holdout(d.ValidationFraction, Seeds.Generator(seed, "validation-split"));
        return new TaskData(name, train, val, fullTest.WithClasses(d.Classes));
    }

    /// <summary>Builds the model (initialised from the seed stream "init"), then applies init_from and reinit.</summary>
    public static (Mlp Model, string? LoadSummary) Model(ModelSection m, long features, int numClasses, long seed, string configFile)
    {
        var model = new Mlp(features, m.Hidden, m.Outputs > 0 ? m.Outputs : numClasses);
        Init.LinearDefault(model, Seeds.Generator(seed, "init"));
        if (m.InitFrom.Length == 0) return (model, null);
        var path = Path.GetFullPath(m.InitFrom, Path.GetDirectoryName(Path.GetFullPath(configFile))!);
        if (!File.Exists(path) && !Directory.Exists(path)) path = Path.GetFullPath(m.InitFrom);
        var report = Checkpoints.WeightFile.Load(model, path, m.Strict, m.Reinit);
        if (m.Reinit.Length > 0) Init.LinearDefault(model, Seeds.Generator(seed, "reinit"), m.Reinit);
        var summary = $"init_from {path}: loaded {report.Loaded.Count} tensors";
        if (!report.IsComplete)
            summary += $"; missing: [{string.Join(", ", report.Missing)}]; unexpected: [{string.Join(", ", report.Unexpected)}]" +
                       (report.ShapeMismatch.Count > 0 ? $"; shape mismatch: [{string.Join(", ", report.ShapeMismatch)}]" : "");
        if (m.Reinit.Length > 0) summary += $"; re-initialised: [{string.Join(", ", m.Reinit)}]";
        return (model, summary);
    }

    /// <summary>The parameter-group plan the [optimizer] section describes.</summary>
    public static GroupPlan Plan(OptimizerSection o) => new(
        o.WeightDecay,
        o.Components.Select(c => new ComponentRule(c.Name, c.Match, c.Lr > 0 ? c.Lr / o.Lr : c.LrScale, c.Frozen)).ToList(),
        o.NoDecayPatterns,
        o.LayerDecay < 1 ? new LayerDecay(o.LayerDecay, o.LayerPattern) : null);

    /// <summary>Groups the model's parameters, freezes what the plan freezes, and builds the optimizer over
    /// the rest (after <see cref="PrecisionPolicy.Prepare"/>, so the flat buffer has the compute dtype).
    /// Returns the group table too.</summary>
    public static (Optimizer Optimizer, IReadOnlyList<string> Table) Optimizer(OptimizerSection o, nn.Module model, string configFile)
    {
        IReadOnlyList<OptimParameter> trainable;
        IReadOnlyList<(string, Tensor)> frozen;
        try { (trainable, frozen) = ParameterGroups.Build(model.named_parameters().Select(p => (p.name, (Tensor)p.parameter)).ToList(), Plan(o)); }
        catch (InvalidOperationException e) { throw new ConfigException(configFile, "optimizer", e.Message); }
        if (trainable.Count == 0) throw new ConfigException(configFile, "optimizer.components", "every parameter is frozen: nothing to train");
        var optimizer = o.Name switch
        {
            "adam" => Optim.Optimizer.AdamL2(trainable, o.Beta1, o.Beta2, o.Eps),
            "sgd" => Optim.Optimizer.Sgd(trainable, o.Momentum, o.Nesterov),
            _ => Optim.Optimizer.AdamW(trainable, o.Beta1, o.Beta2, o.Eps),
        };
        return (optimizer, ParameterGroups.Table(trainable, frozen, o.Lr).ToList());
    }

    /// <summary>The precision policy the [precision] section describes.</summary>
    public static PrecisionPolicy Precision(PrecisionSection p) => p.Mode switch
    {
        "bf16" => new PrecisionPolicy(PrecisionMode.Bf16),
        "fp16" => new PrecisionPolicy(PrecisionMode.Fp16, new DynamicLossScaler(p.InitialScale, growthInterval: p.GrowthInterval)),
        _ => PrecisionPolicy.Fp32,
    };

    /// <summary>The schedule and regularizers the config names, created by the plugin host and guarded.</summary>
    public static (GuardedSchedule Schedule, IReadOnlyList<GuardedRegularizer> Regularizers) Plugins(RunConfig c, PluginHost host)
    {
        var schedule = new GuardedSchedule(host.Create<ISchedule>(PluginRole.Schedule, c.Schedule, c.File), host.Find(PluginRole.Schedule, c.Schedule.Name));
        var regs = c.Regularizers.Select(r =>
            new GuardedRegularizer(host.Create<IRegularizer>(PluginRole.Regularizer, r, c.File), host.Find(PluginRole.Regularizer, r.Name))).ToList();
        return (schedule, regs);
    }

    /// <summary>
    /// Checks what needs the run's length T (known once the data is loaded), before any training: a warmup or a
    /// checkpoint interval longer than training is a mistake, reported with the key, the value and the file.
    /// </summary>
    public static void CheckLength(RunConfig c, long totalSteps)
    {
        var errors = new List<ConfigError>();
        if (c.Schedule.Options.TryGetValue("warmup_steps", out var w) && w is long warmup && warmup > totalSteps)
            errors.Add(new(c.File, $"{c.Schedule.Key}.warmup_steps", $"{warmup} is longer than training ({totalSteps} optimizer steps)"));
        if (c.Checkpoint.Every > totalSteps)
            errors.Add(new(c.File, "checkpoint.every", $"{c.Checkpoint.Every} is longer than training ({totalSteps} optimizer steps): no periodic checkpoint would be written"));
        if (errors.Count > 0) throw new ConfigException(errors);
    }

    /// <summary>The resolved config as TOML: every section with every key, defaults included; plugin tables as given.</summary>
    public static string ResolvedToml(RunConfig c)
    {
        var root = new Tomlyn.Model.TomlTable
        {
            ["run"] = Table(c.Run), ["data"] = Table(c.Data), ["model"] = Table(c.Model), ["optimizer"] = Table(c.Optimizer),
            ["precision"] = Table(c.Precision), ["checkpoint"] = Table(c.Checkpoint), ["study"] = Table(c.Study), ["train"] = Table(c.Train),
        };
        var schedule = new Tomlyn.Model.TomlTable { ["name"] = c.Schedule.Name };
        foreach (var (k, v) in c.Schedule.Options) schedule[k] = v;
        root["schedule"] = schedule;
        if (c.Regularizers.Count > 0)
        {
            var regs = new Tomlyn.Model.TomlTableArray();
            foreach (var r in c.Regularizers) regs.Add(r.Options);
            root["regularizers"] = regs;
        }
        return ConfigLoader.ToToml(root);
    }

    /// <summary>An options record as a TOML table, by the binder's key names (the inverse of binding).</summary>
    static Tomlyn.Model.TomlTable Table(object options)
    {
        static object Value(object v) => v switch
        {
            int i => (long)i,
            float f => (double)f,
            Enum e => OptionsBinder.SnakeCase(e.ToString()).Replace('_', '-'),
            _ => v,
        };
        var table = new Tomlyn.Model.TomlTable();
        foreach (var (key, prop) in OptionsBinder.Keys(options.GetType()).OrderBy(k => k.Key, StringComparer.Ordinal))
        {
            switch (prop.GetValue(options))
            {
                case null: break;
                case string or bool or int or long or double or float or Enum: table[key] = Value(prop.GetValue(options)!); break;
                case Array a when a.GetType().GetElementType()!.IsClass && a.GetType().GetElementType() != typeof(string):
                    var tables = new Tomlyn.Model.TomlTableArray();
                    foreach (var item in a) tables.Add(Table(item!));
                    if (tables.Count > 0) table[key] = tables;
                    break;
                case Array a:
                    var array = new Tomlyn.Model.TomlArray();
                    foreach (var item in a) array.Add(Value(item!));
                    table[key] = array;
                    break;
            }
        }
        return table;
    }

    /// <summary>
    /// Creates a new run's directory (<c>&lt;output_dir&gt;/&lt;name&gt;-&lt;UTC time&gt;-&lt;random&gt;</c>) and its store, records the run
    /// (resolved config, root and derived seeds, code and package versions, threads, device) and writes the config as run.
    /// </summary>
    /// <param name="streams">The names of the run's random streams, recorded with their derived seeds.</param>
    public static (string RunId, string RunDir, RunStore Store) StartRun(RunConfig c, IEnumerable<string> streams)
    {
        // The time orders runs; the random suffix keeps ids unique when runs of the same name start in the same
        // millisecond (trials of a sweep on several nodes), since a sweep's store keys runs by id.
        var runId = $"{c.Run.Name}-{DateTime.UtcNow:yyyyMMdd-HHmmss-fff}-{Guid.NewGuid().ToString("N")[..6]}";
        var runDir = Path.GetFullPath(Path.Combine(c.Run.OutputDir, runId));
        Directory.CreateDirectory(runDir);
        var store = new RunStore(Path.Combine(runDir, RunStore.FileName));
        var configText = ConfigLoader.ToToml(c.Source);
        store.BeginRun(new RunInfo(runId, c.Run.Name, c.File, configText, ResolvedJson(c),
            c.Run.Seed, Provenance.CodeVersion(), Provenance.PackageVersions(), torch.get_num_threads(), "cpu"));
        store.DerivedSeeds(runId, JsonSerializer.Serialize(streams.Distinct().ToDictionary(n => n, n => Seeds.Derive(c.Run.Seed, n))));
        File.WriteAllText(Path.Combine(runDir, "config.toml"), configText);
        return (runId, runDir, store);
    }

    /// <summary>The random streams of a training run, by name.</summary>
    public static IEnumerable<string> TrainingStreams(RunConfig c)
    {
        yield return "validation-split";
        yield return "init";
        if (c.Data.Dataset == "synthetic") yield return "synthetic-data";
        if (c.Model.Reinit.Length > 0) yield return "reinit";
        for (int e = 0; e < c.Train.Epochs; e++) yield return $"data-order/epoch-{e}";
    }

    static Dictionary<string, object?> PluginTable(PluginChoice p)
    {
        var table = p.Options.ToDictionary(kv => kv.Key, kv => kv.Value is Tomlyn.Model.TomlArray a ? a.ToArray() : kv.Value);
        table["name"] = p.Name;
        return table;
    }

    /// <summary>The bound sections with every default filled in, as JSON (the "resolved config" of the record).</summary>
    public static string ResolvedJson(RunConfig c) => JsonSerializer.Serialize(new
    {
        run = c.Run, data = c.Data, model = c.Model, optimizer = c.Optimizer, train = c.Train, precision = c.Precision,
        checkpoint = c.Checkpoint, study = c.Study,
        // Plugin tables as given, name included: two runs with other plugin options must not look alike.
        schedule = PluginTable(c.Schedule), regularizers = c.Regularizers.Select(PluginTable),
    }, new JsonSerializerOptions { WriteIndented = false });
}
