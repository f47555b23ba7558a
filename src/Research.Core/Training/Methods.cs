using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text.Json;
using Research.Abstractions;
using Research.Core.Plugins;
using Research.Core.Data;
using Research.Core.Checkpoints;
using Research.Core.Optim;
using static TorchSharp.torch;

namespace Research.Core.Training;

/// <summary>
/// A method plugin (one object that may play several roles) whose exceptions become <see cref="PluginFailureException"/>,
/// and whose tensors the host owns by one rule, so a plugin never calls a dispose-scope method: <b>what a plugin keeps is
/// what its <see cref="IStateful.StateDict"/> returns.</b> Each call runs in a dispose scope of its own. When it returns,
/// the tensors of the plugin's state are detached from every scope (they live until the plugin lets go of them), tensors it
/// kept before and no longer holds are disposed, and every other tensor the call created is freed with the scope; what it
/// returns (a penalty, a loss term, a sampled batch) moves to the caller's scope. <c>LoadStateDict</c> hands the plugin
/// tensors that become its own. State outside <c>StateDict</c> would not survive a resume either, so the rule also keeps
/// checkpoints complete.
/// </summary>
public sealed class GuardedMethod
{
    readonly object _inner;
    readonly IStateful? _state;
    readonly HashSet<Tensor> _kept = new(ReferenceEqualityComparer.Instance);

    public GuardedMethod(object inner, PluginDescriptor descriptor)
    {
        _inner = inner;
        Descriptor = descriptor;
        _state = inner as IStateful;
        Penalty = inner as IPenalty; LossTerm = inner as ILossTerm; Observer = inner as IStepObserver;
        Hook = inner as IGradientHook; TaskHooks = inner as ITaskHooks; Data = inner as IDataRole;
        Callback = inner as ICallback; Predictor = inner as IPredictor;
        _implements = CallbackDispatch.Implemented(inner.GetType());
    }

    public PluginDescriptor Descriptor { get; }
    public string Name => Descriptor.Name;
    // The roles the plugin plays (null where it does not); the host calls them through the methods below.
    internal IPenalty? Penalty { get; }
    internal ILossTerm? LossTerm { get; }
    internal IStepObserver? Observer { get; }
    internal IGradientHook? Hook { get; }
    internal ITaskHooks? TaskHooks { get; }
    internal IDataRole? Data { get; }
    internal ICallback? Callback { get; }
    internal IPredictor? Predictor { get; }
    public bool IsStateful => _state != null;

    // The ICallback members the class implements (asked once), its own log and control (bound when its method set is
    // made), and the call under way, which a wrong logged value names.
    readonly IReadOnlySet<string> _implements;
    internal IRunLog Log { get; private set; } = IRunLog.None;
    internal RunControl Control { get; private set; } = RunControl.None;
    string _member = "";
    long _step = -1;
    PluginFailureException? _logFailure;

    internal bool Implements(string member) => _implements.Contains(member);

    internal void Attach(RunSignals signals)
    {
        Log = new PluginLog(this, signals);
        Control = new RunControl(r => signals.Request(this, r));
    }

    /// <summary>A logged value the run refuses (<see cref="RunSignals"/>): kept, so a plugin that catches the exception
    /// still fails its call.</summary>
    internal PluginFailureException LogFailed(string what, string must) =>
        _logFailure ??= Guard.Wrong(Descriptor, $"Log.Scalar (in {_member})", _step, what, must);

    /// <summary>Calls one member of <see cref="ICallback"/> under the guard and the ownership rule.</summary>
    internal void Call<T>(string member, long step, T context, Action<ICallback, T> call) =>
        Owned(member, step, () => { call(Callback!, context); return (Tensor?)null; });

    public Tensor? PenaltyOf(PenaltyContext c) =>
        Owned(nameof(IPenalty.Penalty), c.Step, () => Penalty!.Penalty(c with { Log = Log, Control = Control }),
            p => Scalar(p, nameof(IPenalty.Penalty), c.Step, "penalty", c.Parameters.Count > 0 ? c.Parameters[0].Value.device : null, "the parameters"));

    public Tensor? LossOf(LossTermContext c) =>
        Owned(nameof(ILossTerm.Loss), c.Step, () => LossTerm!.Loss(c with { Log = Log, Control = Control }), l => Scalar(l, nameof(ILossTerm.Loss), c.Step, "loss term", c.Logits.device, "the logits"));

    public void AfterStep(StepContext c) => Owned(nameof(IStepObserver.AfterStep), c.Step, () => { Observer!.AfterStep(c with { Log = Log, Control = Control }); return (Tensor?)null; });
    /// <summary>The hook may change the task gradient, the penalty gradient and the added parameters' gradients in place
    /// (contract 3.0 added the last two, for masks); one it leaves non-finite (finite before) is its mistake, named here
    /// rather than reported as the run's divergence.</summary>
    public void BeforeUpdate(GradientContext c)
    {
        var names = c.Parameters.Select(p => p.Name).ToList();
        var lists = new (string Kind, IReadOnlyList<Tensor> Tensors, IReadOnlyList<string> Names)[]
        {
            ("task gradient", c.TaskGradient, names), ("penalty gradient", c.PenaltyGradient, names),
            ("gradient", c.AddedGradients.Values.ToList(), c.AddedGradients.Keys.ToList()),
        };
        var finite = lists.Select(l => AllFinite(l.Tensors)).ToArray();
        var views = lists.Select(l => l.Tensors.Select(g => new GradientView(g, g.dtype, g.shape, FlatBuffer.DataPointer(g))).ToArray()).ToArray();
        Owned(nameof(IGradientHook.BeforeUpdate), c.Step, () => { Hook!.BeforeUpdate(c with { Log = Log, Control = Control }); return (Tensor?)null; });
        for (int l = 0; l < lists.Length; l++)
        {
            CheckGradientViews(c.Step, lists[l].Kind, lists[l].Tensors, lists[l].Names, views[l]);
            if (finite[l] && !AllFinite(lists[l].Tensors))
                throw Guard.Wrong(Descriptor, nameof(IGradientHook.BeforeUpdate), c.Step, $"a {lists[l].Kind} with values that are not finite",
                    "a hook may change the gradient, not make it non-finite");
        }
    }

    readonly record struct GradientView(Tensor Tensor, ScalarType DType, long[] Shape, IntPtr Data);

    /// <summary>
    /// The update reads the core's gradient, which the gradients' tensors are views of: a hook changes them in place.
    /// One it swapped for other storage (<c>set_</c>, to another shape, dtype or a copy) or replaced in the list would
    /// leave its change unapplied without a word, and a replacement made in the call dies with the call's scope, to fail
    /// later where nothing names the hook.
    /// </summary>
    void CheckGradientViews(long step, string kind, IReadOnlyList<Tensor> after, IReadOnlyList<string> names, GradientView[] before)
    {
        const string member = nameof(IGradientHook.BeforeUpdate);
        var must = $"a hook changes the {kind} in place: its tensors are views of the gradient the update reads (no set_, no entry replaced)";
        if (after.Count != before.Length)
            throw Guard.Wrong(Descriptor, member, step, $"a {kind} of {after.Count} tensors", $"it was handed {before.Length}; {must}");
        for (int i = 0; i < before.Length; i++)
        {
            var (was, now, name) = (before[i], after[i], names[i]);
            string? wrong =
                !ReferenceEquals(now, was.Tensor) ? $"another tensor in place of the {kind} of '{name}'"
                : now.IsInvalid ? $"the {kind} of '{name}' disposed"
                : now.dtype != was.DType || !now.shape.SequenceEqual(was.Shape) || FlatBuffer.DataPointer(now) != was.Data
                    ? $"the {kind} of '{name}' as {Guard.Describe(now)} on storage of its own (it was {Guard.Describe(was.DType, was.Shape)})"
                : null;
            if (wrong is not null) throw Guard.Wrong(Descriptor, member, step, wrong, must);
        }
    }

    static bool AllFinite(IReadOnlyList<Tensor> tensors)
    {
        using var scope = NewDisposeScope();
        return tensors.All(g => isfinite(g).all().item<bool>());
    }
    /// <summary>The predictor's classes for the rows of an evaluated batch, checked where the core receives them: int64 [n],
    /// each a class of the rows' C, on the logits' device (a wrong one would otherwise count as a wrong prediction or fail
    /// inside the accuracy's comparison, far from the plugin).</summary>
    public Tensor Predict(PredictContext c)
    {
        const string member = nameof(IPredictor.Predict);
        var p = Owned(member, c.Step, () => Predictor!.Predict(c with { Log = Log, Control = Control }), p => Predicted(p, c));
        return p ?? throw Guard.Wrong(Descriptor, member, c.Step, "null", "a predictor returns the predicted class of every row");
    }

    void Predicted(Tensor p, PredictContext c)
    {
        const string member = nameof(IPredictor.Predict);
        long n = c.Logits.shape[0], classes = c.Logits.shape[^1];
        const string must = "the predicted class of every row of the logits: int64 [n] on their device";
        if (p.dtype != ScalarType.Int64 || p.dim() != 1 || p.shape[0] != n)
            throw Guard.Wrong(Descriptor, member, c.Step, Guard.Describe(p), $"{must} (n = {n})");
        if (p.device_type != c.Logits.device_type || p.device_index != c.Logits.device_index)
            throw Guard.Wrong(Descriptor, member, c.Step, $"predictions on {p.device}", $"{must} ({c.Logits.device})");
        if (n > 0 && (p.min().item<long>() < 0 || p.max().item<long>() >= classes))
            throw Guard.Wrong(Descriptor, member, c.Step, $"a class outside 0 … {classes - 1}", $"{must}, each a class of the {classes} the rows score");
    }

    public void TaskStart(TaskStartContext c) => Owned(nameof(ITaskHooks.TaskStart), -1, () => { TaskHooks!.TaskStart(c with { Log = Log, Control = Control }); return (Tensor?)null; });
    public void TaskEnd(TaskEndContext c) => Owned(nameof(ITaskHooks.TaskEnd), -1, () => { TaskHooks!.TaskEnd(c with { Log = Log, Control = Control }); return (Tensor?)null; });
    public void Observe(Batch b, int task, long step, Generator random) =>
        Owned(nameof(IDataRole.Observe), step, () => { Data!.Observe(b, task, random); return (Tensor?)null; });

    public long MemoryCount(long step)
    {
        var count = Guard.Call(Descriptor, nameof(IMemory.Count), step, () => Data!.Count);
        return count >= 0 ? count : throw Guard.Wrong(Descriptor, nameof(IMemory.Count), step, count.ToString(CultureInfo.InvariantCulture), "a memory holds 0 items or more");
    }

    public double MixRatio
    {
        get
        {
            var r = Guard.Call(Descriptor, nameof(IDataRole.MixRatio), -1, () => Data!.MixRatio);
            return double.IsFinite(r) && r >= 0 ? r
                : throw Guard.Wrong(Descriptor, nameof(IDataRole.MixRatio), -1, r.ToString("G", CultureInfo.InvariantCulture), "r, memory items per current-task item, is finite and ≥ 0");
        }
    }

    /// <summary>w, the weight of the memory items' task loss: finite and ≥ 0.</summary>
    public double LossWeight
    {
        get
        {
            var w = Guard.Call(Descriptor, nameof(IDataRole.LossWeight), -1, () => Data!.LossWeight);
            return double.IsFinite(w) && w >= 0 ? w
                : throw Guard.Wrong(Descriptor, nameof(IDataRole.LossWeight), -1, w.ToString("G", CultureInfo.InvariantCulture), "w, the weight of the memory items' loss, is finite and ≥ 0");
        }
    }

    /// <summary>Append or Separate; another value (a cast integer) is the plugin's mistake.</summary>
    public ReplayMode Mode
    {
        get
        {
            var mode = Guard.Call(Descriptor, nameof(IDataRole.Mode), -1, () => Data!.Mode);
            return Enum.IsDefined(mode) ? mode
                : throw Guard.Wrong(Descriptor, nameof(IDataRole.Mode), -1, $"the mode {(int)mode}", "a replay mode is Append or Separate");
        }
    }

    /// <summary>m, the memory items of a replay batch paired with a micro-batch of B items (Separate mode): the role's
    /// <see cref="IDataRole.ReplayBatchSize"/>, or round(r·B) when that is 0.</summary>
    public int ReplayItems(long batchSize)
    {
        var m = Guard.Call(Descriptor, nameof(IDataRole.ReplayBatchSize), -1, () => Data!.ReplayBatchSize);
        if (m < 0) throw Guard.Wrong(Descriptor, nameof(IDataRole.ReplayBatchSize), -1, m.ToString(CultureInfo.InvariantCulture), "m, the items of a replay batch, is ≥ 0 (0: round(r·B))");
        return m > 0 ? m : MixedItems(batchSize);
    }

    /// <summary>What a mixing role declares once, read and checked before the run starts (a wrong value then fails before
    /// anything trains).</summary>
    public void CheckReplay()
    {
        _ = LossWeight;
        if (Mode == ReplayMode.Separate) _ = ReplayItems(1);
    }

    /// <summary>round(r·B), the memory items a micro-batch of B items gets; more than a batch can hold is the mix ratio's mistake.</summary>
    public int MixedItems(long batchSize)
    {
        var r = MixRatio;
        var m = Math.Round(r * batchSize, MidpointRounding.AwayFromZero);
        return m <= Array.MaxLength ? (int)m
            : throw Guard.Wrong(Descriptor, nameof(IDataRole.MixRatio), -1, r.ToString("G", CultureInfo.InvariantCulture), $"it asks for {m:G} memory items in a micro-batch of {batchSize}");
    }

    /// <summary>
    /// Memory items as a batch owned by the caller's scope, checked against what the contract asks of it (<see cref="IMemory.Sample"/>):
    /// at most <paramref name="items"/> rows, live tensors, finite floating-point values, and — against <paramref name="like"/>,
    /// a batch of the task — every name of the task with the same dtype, device and item shape. Only the sequence axis
    /// (axis 1 of an integer tensor: token ids, masks, token targets) may differ, since <see cref="Batch.Concat"/> pads it; a
    /// feature axis padded with zeros would train on items that do not exist. Names the task's batches do not have are the
    /// memory's extra tensors (<see cref="Split"/>), on the task's device.
    /// </summary>
    public Batch Sample(int items, long step, Generator random, Batch? like = null, int targetIds = 0)
    {
        using var scope = NewDisposeScope();
        // What it must return is min(items, Count), its Count as it is when asked.
        var count = MemoryCount(step);
        var batch = Guard.Call(Descriptor, nameof(IMemory.Sample), step, () => Data!.Sample(items, random));
        Keep(step);
        CheckSample(batch, items, count, step, like, targetIds);
        foreach (var t in batch.Values) t.MoveToOuterDisposeScope();
        return batch;
    }

    void CheckSample(Batch? batch, int items, long count, long step, Batch? like, int targetIds)
    {
        const string member = nameof(IMemory.Sample);
        if (batch is null) throw Guard.Wrong(Descriptor, member, step, "null", "a memory returns a batch");
        if (batch.Values.FirstOrDefault(t => t.IsInvalid) is not null)
            throw Guard.Wrong(Descriptor, member, step, $"a disposed tensor '{batch.First(kv => kv.Value.IsInvalid).Key}'", "what a plugin returns belongs to the caller and must be alive");
        if (batch.Size > items)
            throw Guard.Wrong(Descriptor, member, step, $"{batch.Size} items", $"{items} were asked for (fewer only when the memory holds fewer)");
        if (batch.Size != Math.Min(items, count))
            throw Guard.Wrong(Descriptor, member, step, $"{batch.Size} items", $"{items} were asked for and Count says it holds {count}: a memory returns min(asked, Count) items, so the mix ratio holds");
        if (like is not null)
        {
            string Names(Batch b) => string.Join(", ", b.Keys.Order(StringComparer.Ordinal));
            if (!like.Keys.All(batch.ContainsKey))
                throw Guard.Wrong(Descriptor, member, step, $"a batch of [{Names(batch)}]",
                    $"the task's batches hold [{Names(like)}] (a memory may add tensors of its own beside them, not leave one out)");
            var device = like.Values.First().device;
            foreach (var (name, t) in batch.Where(kv => !like.ContainsKey(kv.Key)))
                if (t.device_type != device.type || t.device_index != device.index)
                    throw Guard.Wrong(Descriptor, member, step, $"the extra tensor '{name}' on {t.device}", $"the task's batches are on {device}");
            foreach (var (name, expected) in like)
            {
                var t = batch[name];
                bool sequence = t.dim() >= 2 && !t.is_floating_point() && !expected.is_floating_point();
                bool sameShape = t.dim() == expected.dim() && Enumerable.Range(1, (int)t.dim() - 1).All(d => (sequence && d == 1) || t.shape[d] == expected.shape[d]);
                if (t.dtype != expected.dtype || !sameShape)
                    throw Guard.Wrong(Descriptor, member, step, $"'{name}' as {Guard.Describe(t)}",
                        $"the task's '{name}' is {Guard.Describe(expected)}: memory items must be items of the same kind (only a sequence axis may differ)");
                if (t.device_type != expected.device_type || t.device_index != expected.device_index)
                    throw Guard.Wrong(Descriptor, member, step, $"'{name}' on {t.device}", $"the task's batches are on {expected.device}");
            }
        }
        // A target past the model's outputs stops the loss with a native error that names no plugin; -100 is an item that
        // does not count (Batch.IgnoreIndex).
        if (targetIds > 0 && batch.TryGetValue(Batch.Targets, out var targets) && !targets.is_floating_point() && targets.numel() > 0)
        {
            var outside = targets.ne(Batch.IgnoreIndex).logical_and(targets.lt(0).logical_or(targets.ge(targetIds)));
            if (outside.any().item<bool>())
                throw Guard.Wrong(Descriptor, member, step, $"a target of {targets.masked_select(outside)[0].to(ScalarType.Int64).item<long>()}",
                    $"targets are ids 0–{targetIds - 1} of the model's outputs, or {Batch.IgnoreIndex} for an item that does not count");
        }
        foreach (var (name, t) in batch)
            if (t.is_floating_point() && t.numel() > 0)
            {
                using var finite = isfinite(t).all();
                if (!finite.item<bool>())
                    throw Guard.Wrong(Descriptor, member, step, $"'{name}' with values that are not finite", "memory items are finite");
            }
    }

    /// <summary>A checked sample (<see cref="Sample"/> against <paramref name="like"/>) as the task's tensors, which a model
    /// may read, and the memory's extra tensors, which only loss terms see. The tensors stay in the sample's scope.</summary>
    public static (Batch Items, IReadOnlyDictionary<string, Tensor> Extras) Split(Batch sample, Batch like)
    {
        if (sample.Count == like.Count) return (sample, NoExtras);
        return (new Batch(sample.Where(kv => like.ContainsKey(kv.Key))),
            sample.Where(kv => !like.ContainsKey(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal));
    }

    static readonly IReadOnlyDictionary<string, Tensor> NoExtras = new Dictionary<string, Tensor>();

    /// <summary>The plugin's memory as the <see cref="IMemory"/> a gradient hook reads, guarded and checked the same way
    /// against <paramref name="like"/>, a batch of the task, and without the memory's extra tensors.</summary>
    public IMemory AsMemory(long step, Batch? like = null, int targetIds = 0) => new MemoryView(this, step, like, targetIds);

    sealed class MemoryView(GuardedMethod m, long step, Batch? like, int targetIds) : IMemory
    {
        public long Count => m.MemoryCount(step);
        public Batch Sample(int items, Generator random)
        {
            var sample = m.Sample(items, step, random, like, targetIds);
            return like is null ? sample : Split(sample, like).Items;
        }
    }

    public IReadOnlyDictionary<string, Tensor> StateDict() =>
        _state is null ? new Dictionary<string, Tensor>() : CheckedState(Guard.Call(Descriptor, nameof(IStateful.StateDict), -1, _state.StateDict), -1);

    /// <summary>What <see cref="IStateful.StateDict"/> must return: a dictionary of live tensors under names (what is
    /// checkpointed and what outlives each call; a null would be found later by a checkpoint, far from its plugin).</summary>
    IReadOnlyDictionary<string, Tensor> CheckedState(IReadOnlyDictionary<string, Tensor>? state, long step)
    {
        const string member = nameof(IStateful.StateDict);
        if (state is null) throw Guard.Wrong(Descriptor, member, step, "null", "it returns the tensors the plugin keeps (an empty dictionary when none)");
        foreach (var (name, t) in state)
        {
            if (string.IsNullOrWhiteSpace(name)) throw Guard.Wrong(Descriptor, member, step, "a tensor without a name", "every kept tensor has a stable name");
            if (t is null) throw Guard.Wrong(Descriptor, member, step, $"null for '{name}'", "every entry is a tensor the plugin keeps");
            if (t.IsInvalid) throw Guard.Wrong(Descriptor, member, step, $"a disposed tensor for '{name}'", "what a plugin keeps must be alive");
            if (!SafetensorsCheck.Holds(t.dtype))
                throw Guard.Wrong(Descriptor, member, step, $"a {t.dtype} tensor for '{name}'", $"a checkpoint holds tensors of {SafetensorsCheck.DTypes} only");
        }
        return state;
    }

    /// <summary>
    /// The <see cref="TaskEndContext.AddProbe"/> a method's task end gets: its rows go into <paramref name="rows"/>, under
    /// names no one else has given row <paramref name="task"/> of the record (<paramref name="taken"/>: the name and who
    /// added it), each a non-empty row of numbers (NaN where undefined). A probe name given twice would otherwise reach
    /// the record's assembly, where nothing names the plugin. The first mistake is kept in <paramref name="failure"/> too,
    /// for a plugin that catches what AddProbe throws.
    /// </summary>
    public Action<string, double[]> ProbeAdder(int task, IDictionary<string, string> taken, IDictionary<string, double[]> rows, StrongBox<PluginFailureException?> failure)
    {
        const string member = "AddProbe (in TaskEnd)";
        var when = $"at the end of task {task}";
        return (name, row) =>
        {
            string? wrong = null, must = null;
            if (string.IsNullOrWhiteSpace(name)) (wrong, must) = ("a probe without a name", "a probe has a name");
            else if (taken.TryGetValue(name, out var owner))
                (wrong, must) = ($"probe '{name}'", $"{owner} gave task {task}'s record a probe of that name already; a probe name is added once per task");
            else if (row is null || row.Length == 0) (wrong, must) = ($"an empty row for probe '{name}'", "a probe row holds one number or more");
            else if (row.Any(double.IsInfinity)) (wrong, must) = ($"an infinite value in probe '{name}'", "probe values are finite (NaN where undefined)");
            if (wrong is not null)
            {
                var e = Guard.Wrong(Descriptor, member, -1, wrong, must!, when);
                failure.Value ??= e;
                throw e;
            }
            taken[name] = $"{PluginHost.RoleName(Descriptor.Role)} '{Name}'";
            rows[name] = row!.ToArray();
        };
    }

    /// <summary>JSON as a checkpoint's state holds a plugin's values: no named floating-point literals, so NaN and ±∞,
    /// which would not read back as the numbers they were, are refused rather than written as strings.</summary>
    static readonly JsonSerializerOptions ValueJson = new() { Converters = { new System.Text.Json.Serialization.JsonStringEnumConverter() } };

    /// <summary>The most JSON a plugin's values may take: they are for scalars and small records; anything larger belongs in
    /// its tensors, which a checkpoint stores in binary.</summary>
    const int MaxValueBytes = 1 << 20;

    /// <summary>
    /// <see cref="IStateful.StateValues"/> as JSON, checked where the core receives it: a dictionary of named values that
    /// JSON holds exactly (a NaN, a type or a cyclic record would fail later in the checkpoint's writer, or read back as
    /// something else on resume), at most <see cref="MaxValueBytes"/> bytes. Empty for a plugin without state.
    /// </summary>
    public IReadOnlyDictionary<string, JsonElement> StateValues(long step)
    {
        const string member = nameof(IStateful.StateValues);
        var json = new Dictionary<string, JsonElement>(StringComparer.Ordinal);
        if (_state is null) return json;
        var values = Guard.Call(Descriptor, member, step, _state.StateValues);
        if (values is null) throw Guard.Wrong(Descriptor, member, step, "null", "it returns the values the plugin keeps (an empty dictionary when none)");
        long bytes = 0;
        foreach (var (name, value) in values)
        {
            if (string.IsNullOrWhiteSpace(name)) throw Guard.Wrong(Descriptor, member, step, "a value without a name", "every kept value has a stable name");
            try { json[name] = JsonSerializer.SerializeToElement(value, value?.GetType() ?? typeof(object), ValueJson); }
            // Serialising runs the plugin's own getters, so anything may come out of it; all of it is the value's fault.
            catch (Exception e)
            {
                throw Guard.Wrong(Descriptor, member, step, $"'{name}' = {DescribeValue(value)}",
                    $"a state value is what JSON holds exactly: finite numbers, strings, booleans, null, and arrays and records of them ({e.GetType().Name}: {e.Message})");
            }
            bytes += json[name].GetRawText().Length;
        }
        if (bytes > MaxValueBytes)
            throw Guard.Wrong(Descriptor, member, step, $"values of {bytes} bytes of JSON", $"state values are small (at most {MaxValueBytes} bytes); keep larger state as tensors in StateDict");
        return json;
    }

    static string DescribeValue(object? value) => value switch
    {
        null => "null",
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        float f => f.ToString("R", CultureInfo.InvariantCulture),
        _ => $"a {value.GetType().FullName}",
    };

    /// <summary>Gives a resumed plugin the values its checkpoint holds (empty when it held none).</summary>
    public void LoadStateValues(IReadOnlyDictionary<string, JsonElement> values)
    {
        if (_state is null) return;
        Owned(nameof(IStateful.LoadStateValues), -1, () => { _state.LoadStateValues(values); return (Tensor?)null; });
    }

    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> s)
    {
        if (_state is null) { foreach (var t in s.Values) t.Dispose(); return; }
        Owned(nameof(IStateful.LoadStateDict), -1, () => { _state.LoadStateDict(s); return (Tensor?)null; });
        // What it was given and did not keep (it copied, or ignored it) is the host's to free.
        foreach (var t in s.Values.Where(t => !_kept.Contains(t))) t.Dispose();
    }

    /// <summary>Runs a call in its own scope, keeps the state, checks what it returns (<paramref name="check"/>, before the
    /// tensor leaves the call's scope) and moves it to the caller's scope.</summary>
    Tensor? Owned(string member, long step, Func<Tensor?> call, Action<Tensor>? check = null)
    {
        using var scope = NewDisposeScope();
        (_member, _step) = (member, step);
        var result = Guard.Call(Descriptor, member, step, call);
        if (_logFailure is { } refused) throw refused;
        Keep(step);
        if (result is null) return null;
        if (result.IsInvalid) throw Guard.Wrong(Descriptor, member, step, "a disposed tensor", "what a plugin returns belongs to the caller and must be alive");
        check?.Invoke(result);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>A returned penalty or loss term must be one finite floating-point value in the autograd graph, on the
    /// device of what it is computed from: anything else is the plugin's mistake, named here rather than failing somewhere
    /// in autograd (or, under fp16, silently skipping every step).</summary>
    void Scalar(Tensor t, string member, long step, string kind, Device? device, string from)
    {
        if (t.numel() != 1 || !t.is_floating_point())
            throw Guard.Wrong(Descriptor, member, step, Guard.Describe(t), "it must be a floating-point scalar");
        if (device is not null && (t.device_type != device.type || t.device_index != device.index))
            throw Guard.Wrong(Descriptor, member, step, $"a {kind} on {t.device}", $"it must be on {device}, the device of {from}");
        if (!t.requires_grad)
            throw Guard.Wrong(Descriptor, member, step, $"a {kind} without a gradient", $"it must be computed from {from} in the autograd graph (or be null when it is zero)");
        var value = t.detach().to(ScalarType.Float32).item<float>();
        if (!float.IsFinite(value))
            throw Guard.Wrong(Descriptor, member, step, $"a non-finite {kind} ({value.ToString(CultureInfo.InvariantCulture)})", "it must be finite");
    }

    /// <summary>After a call: the state's tensors outlive the call's scope; those it dropped since the last call are freed.</summary>
    void Keep(long step)
    {
        if (_state is null) return;
        var state = CheckedState(Guard.Call(Descriptor, nameof(IStateful.StateDict), step, _state.StateDict), step);
        var now = new HashSet<Tensor>(state.Values, ReferenceEqualityComparer.Instance);
        foreach (var t in now) t.DetachFromDisposeScope();
        foreach (var t in _kept.Where(t => !now.Contains(t))) t.Dispose();
        _kept.Clear();
        _kept.UnionWith(now);
    }
}

/// <summary>The methods of a run, by the roles they play, in config order.</summary>
public sealed class MethodSet(IReadOnlyList<GuardedMethod> all)
{
    public static readonly MethodSet None = new([]);

    /// <summary>Methods from plugin objects made directly (tests, benchmarks), each guarded under its type's name.</summary>
    public static MethodSet Of(params object[] plugins) => new(plugins.Select(p => new GuardedMethod(p,
        new PluginDescriptor(PluginRole.Method, p.GetType().Name, "", p.GetType(), null, p.GetType().Assembly.Location))).ToList());
    public IReadOnlyList<GuardedMethod> All { get; } = all;
    /// <summary>The methods that change training: <see cref="All"/> less the metrics' observers (which only measure).</summary>
    public IReadOnlyList<GuardedMethod> Training { get; } = all.Where(m => m.Descriptor.Role == PluginRole.Method).ToList();

    /// <summary>These methods and, after them, <paramref name="observers"/> (the hooks of metrics that measure the model).</summary>
    public MethodSet With(IEnumerable<GuardedMethod> observers)
    {
        var added = observers.ToList();
        return added.Count == 0 ? this : new MethodSet([.. All, .. added]);
    }
    public IReadOnlyList<GuardedMethod> Penalties { get; } = all.Where(m => m.Penalty != null).ToList();
    public IReadOnlyList<GuardedMethod> LossTerms { get; } = all.Where(m => m.LossTerm != null).ToList();
    public IReadOnlyList<GuardedMethod> Observers { get; } = all.Where(m => m.Observer != null).ToList();
    public IReadOnlyList<GuardedMethod> Hooks { get; } = all.Where(m => m.Hook != null).ToList();
    public IReadOnlyList<GuardedMethod> TaskHooks { get; } = all.Where(m => m.TaskHooks != null).ToList();
    /// <summary>The data roles: each observes the training batches (A-GEM keeps its own memory this way).</summary>
    public IReadOnlyList<GuardedMethod> DataRoles { get; } = all.Where(m => m.Data != null).ToList();
    /// <summary>The callbacks by hook point, and the run's <see cref="RunSignals"/> every method logs and asks through.</summary>
    public CallbackDispatch Callbacks { get; } = new(all);
    /// <summary>The methods that classify in their own way (<see cref="IPredictor"/>); a run has at most one, as
    /// <see cref="RunBuilder"/> checks.</summary>
    public IReadOnlyList<GuardedMethod> Predictors { get; } = all.Where(m => m.Predictor != null).ToList();
    /// <summary>The run's predictor, which replaces the model's arg-max in every accuracy the core records; null: the arg-max.</summary>
    public GuardedMethod? Predictor => Predictors.Count > 0 ? Predictors[0] : null;
    public RunSignals Signals => Callbacks.Signals;
    /// <summary>The data role that mixes memory items into the batches (mix ratio r &gt; 0; at most one per run, as
    /// <see cref="RunBuilder"/> checks), which is also the memory gradient hooks see.</summary>
    public GuardedMethod? Mixer { get; } = all.FirstOrDefault(m => m.Data != null && m.MixRatio > 0);

    /// <summary>The ids a memory item's target may take, 0 … TargetIds − 1 (or <see cref="Batch.IgnoreIndex"/>): the outputs
    /// the run's model scores (its task heads' classes in a split-task study). 0 where unknown (methods made directly): then
    /// targets are not checked.</summary>
    public int TargetIds { get; internal set; }

    /// <summary>Whether the step keeps the task-loss gradient apart from the loss terms' and penalties' (a gradient hook or
    /// a step observer reads it); otherwise it is one gradient and the step is the plain one, fused AdamW included.</summary>
    public bool SplitsGradient => Hooks.Count > 0 || Observers.Count > 0;

    /// <summary>
    /// A task of 0 epochs is not trained, but its data still streams past the data roles once, in order (a reservoir
    /// memory fills from it as it would while training), from streams named by the task, so a rerun draws the same.
    /// </summary>
    public void ObserveUntrained(TensorDataset train, int batchSize, int phase, long step, long seed)
    {
        var roles = DataRoles;
        if (roles.Count == 0) return;
        int i = 0;
        foreach (var b in train.InOrder(batchSize))
        {
            using var scope = NewDisposeScope();
            for (int d = 0; d < roles.Count; d++)
                using (var observe = Seeds.Generator(seed, $"methods/task-{phase}/untrained-observe-{d}-{i}"))
                    roles[d].Observe(b, phase, step, observe);
            i++;
        }
    }

    /// <summary>
    /// The data role's part of a window: it observes each micro-batch of the current task (reservoir sampling), then the
    /// mixing role's items join each micro-batch of B items: round(r·B) appended (Append), or a replay batch of m items
    /// beside it (Separate). The memory's extra tensors are taken out of what the model reads and kept beside the window
    /// for the loss terms. Its draws come from streams named by the run's step, so a resumed run mixes the same items.
    /// </summary>
    public MixedWindow WithMemory(IReadOnlyList<Batch> window, int phase, long step, long seed)
    {
        if (DataRoles.Count == 0) return new(window);
        var mode = Mixer?.Mode ?? ReplayMode.Append;
        var mixed = new List<Batch>(window.Count);
        var parts = new MemoryPart?[window.Count];
        bool any = false;
        for (int i = 0; i < window.Count; i++)
        {
            var b = window[i];
            for (int d = 0; d < DataRoles.Count; d++)
                using (var observe = Seeds.Generator(seed, $"methods/step-{step}/observe-{d}-{i}"))
                    DataRoles[d].Observe(b, phase, step, observe);
            if (Mixer is not { } mixer) { mixed.Add(b); continue; }
            int m = mode == ReplayMode.Separate ? mixer.ReplayItems(b.Size) : mixer.MixedItems(b.Size);
            if (m == 0 || mixer.MemoryCount(step) == 0) { mixed.Add(b); continue; }
            using var draw = Seeds.Generator(seed, $"methods/step-{step}/mix-{i}");
            var (items, extras) = GuardedMethod.Split(mixer.Sample(m, step, draw, like: b, TargetIds), b);
            if (items.Size == 0) { mixed.Add(b); continue; }
            any = true;
            if (mode == ReplayMode.Separate)
            {
                mixed.Add(b);
                parts[i] = new MemoryPart(0, items.Size, items, extras);
            }
            else
            {
                mixed.Add(Batch.Concat([b, items]));
                parts[i] = new MemoryPart(b.Size, items.Size, null, extras);
            }
        }
        return new(mixed, any ? new WindowMemory(mode, Mixer!.LossWeight, parts) : null);
    }
}
