using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;
using Research.Abstractions;
using Research.Core.Config;
using Research.Core.Data;
using Research.Core.Models;
using Research.Core.Optim;
using Research.Core.Plugins;
using Research.Core.Studies;
using Research.Core.Tasks;
using Research.Core.Tracking;
using Research.Core.Precision;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Training;

/// <summary>What a run is: one phase of training (<c>research train</c>) or a study, a phase per task with the task × task
/// evaluation and consolidation between phases (<c>research study</c>).</summary>
public enum RunKind { Train, Study }

/// <summary>A plugin DLL a run used, as the run record keeps it.</summary>
public sealed record PluginRecord(string Role, string Name, string Path, string Version, string Sha256);

/// <summary>
/// Everything a run is built from, made once from a bound config by <see cref="RunBuilder.Build"/>: its identity, its
/// tasks (a single run has one), the model, the precision policy and the plugins. The optimizer is made per phase
/// (<see cref="RunBuilder.Optimizer"/>), since a study may reset it at each task.
/// </summary>
public sealed class RunComponents : IDisposable
{
    public required RunConfig Config { get; init; }
    public required RunKind Kind { get; init; }
    /// <summary>The canonical resolved config (<see cref="ResolvedConfig"/>) and its SHA-256, the run's identity.</summary>
    public required JsonObject Canonical { get; init; }
    public required string Identity { get; init; }
    public required IReadOnlyList<TaskData> Tasks { get; init; }
    /// <summary>[data]'s own source and options, as its tasks were loaded (the probes load it again).</summary>
    public required DataQuery Data { get; init; }
    /// <summary>What the model reads and predicts (<see cref="IDataSource.Shape"/>).</summary>
    public required DataShape Shape { get; init; }
    /// <summary>What the outputs predict: classification (with task-incremental heads in a <c>split-task</c> study), or
    /// causal language modelling.</summary>
    public required OutputTask Task { get; init; }
    public required nn.Module<Tensor, Tensor> Model { get; init; }
    /// <summary>How the model was made: its kind (which parameters are its head, where its representation is read), its
    /// resolved options, what it is built for.</summary>
    public required ModelPlan ModelPlan { get; init; }
    /// <summary>A second fp32 instance of the model for logits with weights a method keeps (made on first use).</summary>
    public required ShadowModel Shadow { get; init; }
    /// <summary>A fresh fp32 instance of the model's architecture (values to be overwritten): the shadow's, and the Hessian
    /// analysis's models of task-end snapshots.</summary>
    public required Func<nn.Module<Tensor, Tensor>> NewModel { get; init; }
    public string? LoadSummary { get; init; }
    public required PrecisionPolicy Precision { get; init; }
    public required GuardedSchedule Schedule { get; init; }
    public required MethodSet Methods { get; init; }
    public required IReadOnlyList<GuardedMetric> Metrics { get; init; }
    public required IReadOnlyList<PluginRecord> Plugins { get; init; }

    public int NumClasses => Shape.Classes;

    /// <summary>Phase i trains on task i, or on tasks 0..i under joint training (the items grow).</summary>
    public bool JointAt(int phase) => Kind == RunKind.Study && Config.Study.Joint && phase > 0;

    /// <summary>Epochs of phase i: <c>study.epochs[i]</c> when the study sets them, else <c>train.epochs</c> (0: not trained).</summary>
    public int EpochsOf(int phase) => Kind == RunKind.Study && Config.Study.Epochs.Length > 0 ? Config.Study.Epochs[phase] : Config.Train.Epochs;

    /// <summary>Optimizer steps of one epoch of phase i: ⌈⌈N/B⌉/k⌉ over the phase's training items N.</summary>
    public long StepsPerEpoch(int phase)
    {
        long items = JointAt(phase) ? Tasks.Take(phase + 1).Sum(t => t.Train.Count) : Tasks[phase].Train.Count;
        long microBatches = (items + Config.Data.BatchSize - 1) / Config.Data.BatchSize;
        return (microBatches + Config.Train.GradAccum - 1) / Config.Train.GradAccum;
    }

    /// <summary>Optimizer steps of phase i: epochs × steps per epoch.</summary>
    public long StepsOf(int phase) => EpochsOf(phase) * StepsPerEpoch(phase);

    /// <summary>Optimizer steps of the whole run (no early stopping).</summary>
    public long TotalSteps => Enumerable.Range(0, Tasks.Count).Sum(StepsOf);

    /// <summary>Whether the schedule restarts with each phase: always in a single run, and in a study with
    /// <c>reset_schedule</c> (t then counts the task's steps); otherwise it spans the study.</summary>
    public bool ScheduleRestarts => Kind == RunKind.Train || Config.Study.ResetSchedule;

    /// <summary>T, the schedule's length during phase i: the phase's steps when it restarts, else the run's.</summary>
    public long ScheduleLength(int phase) => ScheduleRestarts ? StepsOf(phase) : TotalSteps;

    AddedParameterSet? _added;
    /// <summary>The parameters methods add at task starts (<see cref="TaskStartContext.AddParameters"/>), trained beside the
    /// model's optimizer, kept across a study's optimizer resets; empty until a method adds some.</summary>
    public AddedParameterSet Added => _added ??= RunBuilder.Added(this);

    public void Dispose()
    {
        _added?.Dispose();
        foreach (var t in Tasks) t.Dispose();
        (Task as ClassificationTask)?.Heads?.Dispose();
        Shadow.Dispose();
        Model.Dispose();
    }
}

/// <summary>
/// The one builder of run components: data, model, precision, optimizer, plugins, identity. The training loop, the
/// <c>eval</c> and <c>memory</c> commands and the sweeps' identity all build through it.
/// </summary>
public static class RunBuilder
{
    public static string Command(RunKind kind) => kind == RunKind.Study ? "study" : "train";

    /// <summary>
    /// Builds a run's components: plugins first (a mistake in their options is reported before any data loads), the
    /// identity, the tasks, the model (after <c>init_from</c> and <c>reinit</c>) prepared for the precision policy.
    /// </summary>
    public static RunComponents Build(RunConfig c, PluginHost host, RunKind kind)
    {
        // A single run has no task × task matrix: metrics chosen for it would be bound and never computed.
        if (kind == RunKind.Train && c.ChosenMetrics is not null)
            throw new ConfigException(c.File, "metrics", "[[metrics]] are computed by research study from its task × task matrices; " +
                "research train runs a single run and computes none: remove them, or run the config with research study");
        var (schedule, methods) = Plugins(c, host);
        var metrics = kind == RunKind.Study ? Metrics(c, host) : [];
        var canonical = ResolvedConfig.Canonical(c, host, Command(kind));
        var data = Data(c);
        var shape = CheckModel(c, kind, data);
        CheckClasses(c, kind, shape);
        if (c.Run.Threads > 0) torch.set_num_threads(c.Run.Threads);
        IReadOnlyList<TaskData> tasks = kind == RunKind.Study ? TaskSequence.Build(c, data) : [data.Task(c.Run.Name, c.Run.Seed)];
        try
        {
            var numClasses = shape.Classes;
            CheckTasks(c, kind, tasks, numClasses);
            var heads = kind == RunKind.Study && c.Study.Benchmark == "split-task"
                ? new TaskHeads(tasks.Select(t => t.HeadClasses!).ToList(), numClasses) : null;
            var plan = ModelPlan.Of(c, shape, tasks[0].Train.Features);
            var (model, summary, precision) = PreparedModel(c, plan);
            // A next-token target is a token id (a caption's targets are tokens while its classes are the images').
            methods.TargetIds = heads is not null ? numClasses : shape.NextToken && shape.Vocabulary > 0 ? (int)shape.Vocabulary : plan.Context.Outputs;
            var records = new[] { (PluginRole.Schedule, schedule.Descriptor) }
                .Concat(methods.All.Select(m => (PluginRole.Method, m.Descriptor)))
                .Concat(metrics.Select(m => (PluginRole.ForgettingMetric, m.Descriptor)))
                .Select(x => Record(x.Descriptor)).ToList();
            return new RunComponents
            {
                Config = c, Kind = kind, Canonical = canonical, Identity = ResolvedConfig.Identity(canonical, host), Tasks = tasks,
                Data = data, Shape = shape, Task = OutputTaskOf(shape, heads), Model = model, ModelPlan = plan,
                Shadow = new ShadowModel(() => NewModel(c, plan)),
                NewModel = () => NewModel(c, plan),
                LoadSummary = summary, Precision = precision, Schedule = schedule, Methods = methods.With(metrics.Select(m => m.Observer).OfType<GuardedMethod>()),
                Metrics = metrics, Plugins = records,
            };
        }
        catch
        {
            foreach (var t in tasks) t.Dispose();
            throw;
        }
    }

    /// <summary>[data]'s own source and options, with the run's seed, its published models' folder and the resolved
    /// <c>model.init_from</c> (a published model's name is not resolved: it ships no tokenizer.json).</summary>
    public static DataQuery Data(RunConfig c)
    {
        var modelsDir = ModelFactory.ModelsDir(c.Model, c.File);
        return new DataQuery(c.Data, c.Run.Seed)
        {
            PublishedFile = (model, file) => PublishedModels.Fetch(model, modelsDir).File(file),
            InitFrom = ModelFactory.PublishedName(c.Model.InitFrom) is null ? ModelFactory.InitPath(c.Model, c.File) : "",
        };
    }

    /// <summary>The shape of a config's data (<see cref="IDataSource.Shape"/>), without loading it.</summary>
    public static DataShape Shape(RunConfig c) => Data(c).Shape();

    /// <summary>
    /// What the data source can refuse before anything loads (<see cref="IDataSource.Check"/>: a missing folder, unknown
    /// topics), then the model and data pairing (<see cref="ModelKinds.Check"/>), the probes, and the study benchmarks
    /// the source cannot make: every problem with its key and the file. Returns the data's shape.
    /// </summary>
    public static DataShape CheckModel(RunConfig c, RunKind kind, DataQuery? data = null)
    {
        data ??= Data(c);
        var source = data.Source;
        var errors = source.Check(data.Request).Select(e => new ConfigError(c.File, e.Key, e.Message)).ToList();
        if (errors.Count > 0) throw new ConfigException(errors);
        var shape = data.Shape();
        errors.AddRange(ModelKinds.Check(c.Model, shape).Select(e => new ConfigError(c.File, e.Key, e.Message)));
        // Every observer's section (probes, the Hessian decomposition, …) is checked here, before a run folder exists.
        errors.AddRange(RunObservers.Check(c, kind, shape));
        if (c.Model.HeadInit == "linear-probe" && shape.NextToken)
            errors.Add(new(c.File, "model.head_init", "\"linear-probe\" fits a classifier's head; a causal language model predicts tokens through its tied embedding"));
        if (kind == RunKind.Study)
        {
            errors.AddRange(source.StudyErrors(data.Request, c.Study.Benchmark).Select(e => new ConfigError(c.File, e.Key, e.Message)));
            if (c.Study.Benchmark == "datasets")
                foreach (var d in c.Study.Datasets.Where(d => data.For(d).Shape().IsText != shape.IsText))
                    errors.Add(new(c.File, "study.datasets", $"\"{d}\" is {(shape.IsText ? "not text" : "text")}, while data.dataset \"{c.Data.Dataset}\" is {(shape.IsText ? "text" : "not")}: every task of a study feeds the same model"));
        }
        if (errors.Count > 0) throw new ConfigException(errors);
        return shape;
    }

    /// <summary>
    /// What needs the data's number of classes, checked before any data loads: <c>data.classes</c> names classes the
    /// source has, and an explicit <c>model.outputs</c> covers every label the run trains or evaluates (a label past the
    /// head would stop the first step with a native error). A language model's outputs are its vocabulary
    /// (<see cref="ModelKinds.Check"/>).
    /// </summary>
    public static void CheckClasses(RunConfig c, RunKind kind, DataShape shape)
    {
        if (shape.NextToken) return;
        var classes = shape.Classes;
        var outside = c.Data.Classes.Where(k => k >= classes).ToList();
        if (outside.Count > 0)
            throw new ConfigException(c.File, "data.classes",
                $"[{string.Join(", ", c.Data.Classes)}] names class {outside[0]}, which the dataset does not have (classes 0–{classes - 1})");
        // Labels keep their ids: a single run (or a permuted study) on classes [3, 7] needs 8 outputs; a split study uses them all.
        bool split = kind == RunKind.Study && c.Study.Benchmark != "permuted";
        int needed = c.Data.Classes.Length > 0 && !split ? c.Data.Classes.Max() + 1 : classes;
        if (c.Model.Outputs > 0 && c.Model.Outputs < needed)
            throw new ConfigException(c.File, "model.outputs",
                $"{c.Model.Outputs} is fewer than the {needed} outputs the labels need (label ids run to {needed - 1}; 0: one per class of the dataset)");
    }

    /// <summary>A phase with no training items would train nothing and still finish; a study needs two tasks to measure forgetting.</summary>
    static void CheckTasks(RunConfig c, RunKind kind, IReadOnlyList<TaskData> tasks, int numClasses)
    {
        if (tasks.FirstOrDefault(t => t.Train.Count == 0) is { } empty)
            throw new ConfigException(c.File, "data",
                $"{(kind == RunKind.Study ? $"task '{empty.Name}'" : "the run")} has no training items: data.classes " +
                $"[{string.Join(", ", c.Data.Classes)}], data.train_limit {c.Data.TrainLimit} and data.validation_fraction " +
                $"{c.Data.ValidationFraction.ToString(System.Globalization.CultureInfo.InvariantCulture)} (which holds out {empty.Validation.Count}) leave none");
        if (tasks.Select(t => t.Train.Features).Distinct().Count() > 1)
            throw new ConfigException(c.File, "study.datasets",
                $"the tasks' items differ in shape ({string.Join(", ", tasks.Select(t => $"{t.Name}: {t.Train.Features}"))}); one model reads them all");
        if (kind == RunKind.Study && c.Study.Epochs.Length > 0 && c.Study.Epochs.Length != tasks.Count)
            throw new ConfigException(c.File, "study.epochs",
                $"has {c.Study.Epochs.Length} entries for the study's {tasks.Count} tasks ({string.Join(", ", tasks.Select(t => t.Name))})");
        if (kind == RunKind.Study && tasks.Count < 2)
            throw new ConfigException(c.File, "study.benchmark",
                $"\"{c.Study.Benchmark}\" makes {tasks.Count} task of {c.Study.ClassesPerTask} classes from the dataset's {numClasses} classes; a study needs at least 2 tasks");
    }

    /// <summary>The data of a single run: [data]'s source with the class filter, size limit and validation holdout.</summary>
    public static TaskData SingleData(RunConfig c) => Data(c).Task(c.Run.Name, c.Run.Seed);

    /// <summary>What a config's outputs predict: the next token or a class (with a study's task heads).</summary>
    public static OutputTask OutputTaskOf(DataShape shape, TaskHeads? heads = null) =>
        shape.NextToken ? new CausalLmTask() : new ClassificationTask(heads);

    /// <summary>The model a config describes, prepared for its precision, with the optimizer over it: the model state of a
    /// run without its data (for <c>research memory</c>).</summary>
    public static (nn.Module<Tensor, Tensor> Model, PrecisionPolicy Precision, Optimizer Optimizer, IReadOnlyList<string> Table) ModelState(RunConfig c)
    {
        var shape = CheckModel(c, RunKind.Train);
        var (model, _, precision) = PreparedModel(c, shape);
        var (optimizer, table) = Optimizer(c.Optimizer, model, c.File);
        return (model, precision, optimizer, table);
    }

    /// <summary>The model (initialised, <c>init_from</c> and <c>reinit</c> applied) cast for the config's precision policy,
    /// with the summary of what was loaded.</summary>
    /// <param name="features">The items' D (or T) as loaded; default: the shape's.</param>
    public static (nn.Module<Tensor, Tensor> Model, string? LoadSummary, PrecisionPolicy Precision) PreparedModel(RunConfig c, DataShape shape, long features = 0) =>
        PreparedModel(c, ModelPlan.Of(c, shape, features));

    /// <summary>The model of a plan, prepared for the config's precision policy.</summary>
    public static (nn.Module<Tensor, Tensor> Model, string? LoadSummary, PrecisionPolicy Precision) PreparedModel(RunConfig c, ModelPlan plan)
    {
        var (model, summary) = Model(c, plan);
        var precision = Precision(c.Precision);
        precision.Prepare(model);
        return (model, summary, precision);
    }

    static PluginRecord Record(PluginDescriptor d)
    {
        var version = AssemblyName.GetAssemblyName(d.AssemblyPath).Version?.ToString() ?? "?";
        return new PluginRecord(PluginHost.RoleName(d.Role), d.Name, d.AssemblyPath, version, RecordedPlugins.Sha256(d.AssemblyPath));
    }

    /// <summary>The forgetting metrics a study computes (<see cref="RunConfig.Metrics"/>), created with their options and guarded.</summary>
    /// A metric is stored by its name, so each may be chosen once.
    public static IReadOnlyList<GuardedMetric> Metrics(RunConfig c, PluginHost host)
    {
        var twice = c.Metrics.GroupBy(m => m.Name).FirstOrDefault(g => g.Count() > 1);
        if (twice != null)
            throw new ConfigException(c.File, $"{twice.Last().Key}.name", $"\"{twice.Key}\" is chosen twice: a study stores each metric by its name");
        return c.Metrics.Select(m => new GuardedMetric(host.Create<IForgettingMetric>(PluginRole.ForgettingMetric, m, c.File),
            host.Find(PluginRole.ForgettingMetric, m.Name))).ToList();
    }

    /// <summary>An fp32 model of the plan's shape whose values are about to be overwritten (the shadow model's instance).</summary>
    public static nn.Module<Tensor, Tensor> NewModel(RunConfig c, ModelPlan plan)
    {
        using var generator = Seeds.Generator(c.Run.Seed, "shadow");
        var model = plan.Create(generator);
        foreach (var (_, p) in model.named_parameters()) p.DetachFromDisposeScope();
        return model;
    }

    /// <summary>Builds the model (initialised from the seed stream "init"), then applies init_from (each kind reads its own
    /// layouts: <see cref="ModelKind.Load"/>) and reinit (stream "reinit").</summary>
    /// <param name="features">The items' D (or T) as loaded; 0: the shape's.</param>
    public static (nn.Module<Tensor, Tensor> Model, string? LoadSummary) Model(RunConfig c, DataShape shape, long features = 0) =>
        Model(c, ModelPlan.Of(c, shape, features));

    /// <summary>The model of a plan: initialised from the seed stream "init", then init_from and reinit applied.</summary>
    public static (nn.Module<Tensor, Tensor> Model, string? LoadSummary) Model(RunConfig c, ModelPlan plan)
    {
        var m = c.Model;
        nn.Module<Tensor, Tensor> model;
        using (var init = Seeds.Generator(c.Run.Seed, "init")) model = plan.Create(init);
        try
        {
            CheckReinit(c, model, plan.LoadsWeights);
            if (!plan.LoadsWeights) return (model, null);
            var summary = plan.Load(model);
            if (m.Reinit.Length > 0)
            {
                ModelFactory.Reinitialise(model, () =>
                {
                    using var generator = Seeds.Generator(c.Run.Seed, "reinit");
                    return plan.Create(generator);
                }, m.Reinit);
                summary += $"; re-initialised: [{string.Join(", ", m.Reinit)}]";
            }
            return (model, summary);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary><c>model.reinit</c> draws again what <c>init_from</c> loaded: each prefix must name parameters (or buffers)
    /// of the model, by the kind's own names, and there must be weights loaded for it to replace.</summary>
    static void CheckReinit(RunConfig c, nn.Module<Tensor, Tensor> model, bool loads)
    {
        var reinit = c.Model.Reinit;
        if (reinit.Length == 0) return;
        if (!loads)
            throw new ConfigException(c.File, "model.reinit", $"{ConfigValue.Text(reinit)} re-initialises what model.init_from loads, and init_from " +
                "is not set: every parameter is drawn from the seed already");
        var names = model.state_dict().Keys.ToList();
        var unmatched = reinit.Where(p => !names.Any(n => n == p || n.StartsWith(p + ".", StringComparison.Ordinal))).ToList();
        if (unmatched.Count > 0)
            throw new ConfigException(c.File, "model.reinit", $"{string.Join(", ", unmatched.Select(p => ConfigValue.Text(p)))} " +
                $"{(unmatched.Count == 1 ? "matches" : "match")} no parameter of the {c.Model.Kind} model (its top-level names: " +
                $"{string.Join(", ", names.Select(n => n.Split('.')[0]).Distinct())})");
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
        var (trainable, frozen) = Groups(o, model, configFile);
        return (Make(o, trainable), ParameterGroups.Table(trainable, frozen, o.Lr).ToList());
    }

    /// <summary>The optimizer [optimizer] names over the given parameters.</summary>
    static Optimizer Make(OptimizerSection o, IReadOnlyList<OptimParameter> trainable) => o.Name switch
    {
        "adam" => Optim.Optimizer.AdamL2(trainable, o.Beta1, o.Beta2, o.Eps),
        "sgd" => Optim.Optimizer.Sgd(trainable, o.Momentum, o.Nesterov),
        _ => Optim.Optimizer.AdamW(trainable, o.Beta1, o.Beta2, o.Eps),
    };

    /// <summary>
    /// The run's set of added parameters: each block gets an optimizer of the run's kind; a name's group follows the plan
    /// of [optimizer] as a model parameter's would — decay (λ) for rank ≥ 2 outside the no_decay patterns, the learning
    /// rate of the component whose pattern matches (a frozen one is refused), the base rate under layer decay (a head is
    /// after the last layer, where the factor's power is 0).
    /// </summary>
    internal static AddedParameterSet Added(RunComponents run)
    {
        var o = run.Config.Optimizer;
        var plan = Plan(o);
        var names = run.Model.named_parameters().Select(p => p.name).ToHashSet(StringComparer.Ordinal);
        var device = run.Model.parameters().First().device;
        return new AddedParameterSet(ps => Make(o, ps), (name, t) =>
        {
            var component = (plan.Components ?? []).FirstOrDefault(c => System.Text.RegularExpressions.Regex.IsMatch(name, c.Pattern));
            if (component is { Frozen: true })
                throw new ArgumentException($"added parameter '{name}' matches [optimizer] component '{component.Name}', which is frozen: added parameters are trained");
            bool decays = plan.Decays(name, t);
            return new ParameterGroup(decays ? "added.decay" : "added.no_decay", component?.LrMultiplier ?? 1.0, decays ? plan.WeightDecay : 0.0);
        }, names.Contains, device);
    }

    /// <summary>The parameter groups of [optimizer] (components, layer decay, frozen parameters); a plan the model's
    /// names do not fit is a config error. Cheap (no buffer is made): a new run checks it before its folder exists.</summary>
    public static (IReadOnlyList<OptimParameter> Trainable, IReadOnlyList<(string, Tensor)> Frozen) Groups(OptimizerSection o, nn.Module model, string configFile)
    {
        IReadOnlyList<OptimParameter> trainable;
        IReadOnlyList<(string, Tensor)> frozen;
        try { (trainable, frozen) = ParameterGroups.Build(model.named_parameters().Select(p => (p.name, (Tensor)p.parameter)).ToList(), Plan(o)); }
        catch (InvalidOperationException e) { throw new ConfigException(configFile, "optimizer", e.Message); }
        if (trainable.Count == 0) throw new ConfigException(configFile, "optimizer.components", "every parameter is frozen: nothing to train");
        return (trainable, frozen);
    }

    /// <summary>The precision policy the [precision] section describes.</summary>
    public static PrecisionPolicy Precision(PrecisionSection p) => p.Mode switch
    {
        "bf16" => new PrecisionPolicy(PrecisionMode.Bf16),
        "fp16" => new PrecisionPolicy(PrecisionMode.Fp16, new DynamicLossScaler(p.InitialScale, growthInterval: p.GrowthInterval)),
        _ => PrecisionPolicy.Fp32,
    };

    /// <summary>The schedule and methods the config names, created by the plugin host and guarded. At most one data role
    /// of a run mixes memory items into the batches (mix ratio r &gt; 0); others only keep memories of their own. At most one
    /// method predicts (<see cref="IPredictor"/>).</summary>
    public static (GuardedSchedule Schedule, MethodSet Methods) Plugins(RunConfig c, PluginHost host)
    {
        var schedule = new GuardedSchedule(host.Create<ISchedule>(PluginRole.Schedule, c.Schedule, c.File), host.Find(PluginRole.Schedule, c.Schedule.Name),
            c.Optimizer.Lr);
        var methods = new MethodSet(c.Methods.Select(m =>
            new GuardedMethod(host.Create<object>(PluginRole.Method, m, c.File), host.Find(PluginRole.Method, m.Name))).ToList());
        var mixers = methods.DataRoles.Where(m => m.MixRatio > 0).ToList();
        if (mixers.Count > 1)
            throw new ConfigException(c.File, "methods", $"{string.Join(" and ", mixers.Select(m => $"'{m.Name}'"))} both mix memory items into the batches (mix ratio > 0); a run mixes from one memory");
        foreach (var m in mixers) m.CheckReplay();
        if (methods.Predictors.Count > 1)
            throw new ConfigException(c.File, "methods", $"{string.Join(" and ", methods.Predictors.Select(m => $"'{m.Name}'"))} both predict the classes evaluation scores (IPredictor); a run has one classifier, so at most one method predicts");
        return (schedule, methods);
    }

    /// <summary>
    /// Checks what needs the run's length (known once the data is loaded), before any training: a warmup longer than
    /// the schedule's T (a phase when the schedule restarts at each task, else the run) or a checkpoint interval longer
    /// than the run is a mistake, reported with the key, the value and the file.
    /// </summary>
    public static void CheckLength(RunComponents run)
    {
        var c = run.Config;
        var errors = new List<ConfigError>();
        // The schedule runs in the phases that train (a phase of 0 epochs takes no step).
        var trained = Enumerable.Range(0, run.Tasks.Count).Where(i => run.EpochsOf(i) > 0).ToList();
        long scheduleLength = trained.Count == 0 ? 0 : trained.Min(run.ScheduleLength);
        if (trained.Count > 0 && c.Schedule.Options.TryGetValue("warmup_steps", out var w) && w is long warmup && warmup > scheduleLength)
            errors.Add(new(c.File, $"{c.Schedule.Key}.warmup_steps", $"{warmup} is longer than training ({scheduleLength} optimizer steps)"));
        if (run.Kind == RunKind.Study && trained.Count == 0)
            errors.Add(new(c.File, c.Study.Epochs.Length > 0 ? "study.epochs" : "train.epochs", "leaves every task of the study untrained"));
        if (c.Checkpoint.Every > run.TotalSteps)
            errors.Add(new(c.File, "checkpoint.every", $"{c.Checkpoint.Every} is longer than training ({run.TotalSteps} optimizer steps): no periodic checkpoint would be written"));
        if (errors.Count > 0) throw new ConfigException(errors);
    }

    /// <summary>
    /// Creates a new run's directory (<c>&lt;output_dir&gt;/&lt;name&gt;-&lt;UTC time&gt;-&lt;random&gt;</c>) and its store, and records the run:
    /// the config as given and its canonical resolved form with the identity, the plugin DLLs (path, version, SHA-256),
    /// root and derived seeds, code and package versions, threads, device. The config as given is written as config.toml.
    /// </summary>
    /// <param name="streams">The names of the run's random streams, recorded with their derived seeds.</param>
    public static (string RunId, string RunDir, RunStore Store) StartRun(RunComponents run, IEnumerable<string> streams)
    {
        var c = run.Config;
        // The time orders runs; the random suffix keeps ids unique when runs of the same name start in the same
        // millisecond (trials of a sweep on several nodes), since a sweep's store keys runs by id.
        var runId = $"{c.Run.Name}-{DateTime.UtcNow:yyyyMMdd-HHmmss-fff}-{Guid.NewGuid().ToString("N")[..6]}";
        var runDir = Path.GetFullPath(Path.Combine(c.Run.OutputDir, runId));
        Directory.CreateDirectory(runDir);
        var configText = ConfigLoader.ToToml(c.Source);
        // Written before the run's row: once the store says "running", only the store itself can fail here.
        File.WriteAllText(Path.Combine(runDir, "config.toml"), configText);
        var store = new RunStore(Path.Combine(runDir, RunStore.FileName));
        store.BeginRun(new RunInfo(runId, c.Run.Name, c.File, configText, ResolvedConfig.Json(run.Canonical), run.Identity,
            JsonSerializer.Serialize(run.Plugins), c.Run.Seed, Provenance.CodeVersion(), Provenance.PackageVersions(), torch.get_num_threads(), "cpu"));
        store.DerivedSeeds(runId, JsonSerializer.Serialize(streams.Distinct().ToDictionary(n => n, n => Seeds.Derive(c.Run.Seed, n))));
        return (runId, runDir, store);
    }
}
