using Research.Abstractions;
using Research.Core.Plugins;
using Research.Core.Data;
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
    public bool IsStateful => _state != null;

    public Tensor? PenaltyOf(PenaltyContext c) =>
        Owned(nameof(IPenalty.Penalty), c.Step, () => Penalty!.Penalty(c)) is { } p ? Checked(p, nameof(IPenalty.Penalty), c.Step) : null;

    public Tensor? LossOf(LossTermContext c) =>
        Owned(nameof(ILossTerm.Loss), c.Step, () => LossTerm!.Loss(c)) is { } l ? Checked(l, nameof(ILossTerm.Loss), c.Step) : null;

    public void AfterStep(StepContext c) => Owned(nameof(IStepObserver.AfterStep), c.Step, () => { Observer!.AfterStep(c); return (Tensor?)null; });
    public void BeforeUpdate(GradientContext c) => Owned(nameof(IGradientHook.BeforeUpdate), c.Step, () => { Hook!.BeforeUpdate(c); return (Tensor?)null; });
    public void TaskStart(TaskStartContext c) => Owned(nameof(ITaskHooks.TaskStart), -1, () => { TaskHooks!.TaskStart(c); return (Tensor?)null; });
    public void TaskEnd(TaskEndContext c) => Owned(nameof(ITaskHooks.TaskEnd), -1, () => { TaskHooks!.TaskEnd(c); return (Tensor?)null; });
    public void Observe(Batch b, int task, long step, Generator random) =>
        Owned(nameof(IDataRole.Observe), step, () => { Data!.Observe(b, task, random); return (Tensor?)null; });

    public long MemoryCount(long step) => Guard.Call(Descriptor, "Count", step, () => Data!.Count);
    public double MixRatio => Guard.Call(Descriptor, nameof(IDataRole.MixRatio), -1, () => Data!.MixRatio);

    /// <summary>Memory items as a batch owned by the caller's scope.</summary>
    public Batch Sample(int items, long step, Generator random)
    {
        using var scope = NewDisposeScope();
        var batch = Guard.Call(Descriptor, nameof(IMemory.Sample), step, () => Data!.Sample(items, random));
        Keep(step);
        foreach (var t in batch.Values) t.MoveToOuterDisposeScope();
        return batch;
    }

    /// <summary>The plugin's memory as the <see cref="IMemory"/> a gradient hook reads, guarded the same way.</summary>
    public IMemory AsMemory(long step) => new MemoryView(this, step);

    sealed class MemoryView(GuardedMethod m, long step) : IMemory
    {
        public long Count => m.MemoryCount(step);
        public Batch Sample(int items, Generator random) => m.Sample(items, step, random);
    }

    public IReadOnlyDictionary<string, Tensor> StateDict() =>
        _state is null ? new Dictionary<string, Tensor>() : Guard.Call(Descriptor, nameof(IStateful.StateDict), -1, _state.StateDict);

    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> s)
    {
        if (_state is null) { foreach (var t in s.Values) t.Dispose(); return; }
        Owned(nameof(IStateful.LoadStateDict), -1, () => { _state.LoadStateDict(s); return (Tensor?)null; });
        // What it was given and did not keep (it copied, or ignored it) is the host's to free.
        foreach (var t in s.Values.Where(t => !_kept.Contains(t))) t.Dispose();
    }

    /// <summary>Runs a call in its own scope, keeps the state, and moves what it returns to the caller's scope.</summary>
    Tensor? Owned(string member, long step, Func<Tensor?> call)
    {
        using var scope = NewDisposeScope();
        var result = Guard.Call(Descriptor, member, step, call);
        Keep(step);
        return result?.MoveToOuterDisposeScope();
    }

    /// <summary>A returned penalty or loss term must be one floating-point value: a wrong shape or dtype is the plugin's
    /// mistake, named here rather than failing somewhere in autograd.</summary>
    Tensor Checked(Tensor t, string member, long step)
    {
        if (t.numel() != 1 || !t.is_floating_point())
            throw new PluginFailureException($"method '{Name}' ({Descriptor.AssemblyPath}) returned a {t.dtype} tensor of shape [{string.Join(", ", t.shape)}] from {member} at step {step}; it must be a floating-point scalar",
                new ArgumentException("not a floating-point scalar"));
        return t;
    }

    /// <summary>After a call: the state's tensors outlive the call's scope; those it dropped since the last call are freed.</summary>
    void Keep(long step)
    {
        if (_state is null) return;
        var now = new HashSet<Tensor>(Guard.Call(Descriptor, nameof(IStateful.StateDict), step, _state.StateDict).Values, ReferenceEqualityComparer.Instance);
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
    public IReadOnlyList<GuardedMethod> Penalties { get; } = all.Where(m => m.Penalty != null).ToList();
    public IReadOnlyList<GuardedMethod> LossTerms { get; } = all.Where(m => m.LossTerm != null).ToList();
    public IReadOnlyList<GuardedMethod> Observers { get; } = all.Where(m => m.Observer != null).ToList();
    public IReadOnlyList<GuardedMethod> Hooks { get; } = all.Where(m => m.Hook != null).ToList();
    public IReadOnlyList<GuardedMethod> TaskHooks { get; } = all.Where(m => m.TaskHooks != null).ToList();
    /// <summary>The data roles: each observes the training batches (A-GEM keeps its own memory this way).</summary>
    public IReadOnlyList<GuardedMethod> DataRoles { get; } = all.Where(m => m.Data != null).ToList();
    /// <summary>The data role that mixes memory items into the batches (mix ratio r &gt; 0; at most one per run, as
    /// <see cref="RunBuilder"/> checks), which is also the memory gradient hooks see.</summary>
    public GuardedMethod? Mixer { get; } = all.FirstOrDefault(m => m.Data != null && m.MixRatio > 0);

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
    /// The data role's part of a window: it observes each micro-batch of the current task (reservoir sampling), then
    /// round(r·B) memory items are appended to each micro-batch of B items. Its draws come from streams named by the
    /// run's step, so a resumed run mixes the same items.
    /// </summary>
    public IReadOnlyList<Batch> WithMemory(IReadOnlyList<Batch> window, int phase, long step, long seed)
    {
        if (DataRoles.Count == 0) return window;
        var mixed = new List<Batch>(window.Count);
        for (int i = 0; i < window.Count; i++)
        {
            var b = window[i];
            for (int d = 0; d < DataRoles.Count; d++)
                using (var observe = Seeds.Generator(seed, $"methods/step-{step}/observe-{d}-{i}"))
                    DataRoles[d].Observe(b, phase, step, observe);
            if (Mixer is not { } mixer) { mixed.Add(b); continue; }
            int m = (int)Math.Round(mixer.MixRatio * b.Size, MidpointRounding.AwayFromZero);
            if (m == 0 || mixer.MemoryCount(step) == 0) { mixed.Add(b); continue; }
            using var draw = Seeds.Generator(seed, $"methods/step-{step}/mix-{i}");
            mixed.Add(Batch.Concat([b, mixer.Sample(m, step, draw)]));
        }
        return mixed;
    }
}
