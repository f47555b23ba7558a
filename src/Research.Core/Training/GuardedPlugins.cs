using Research.Abstractions;
using Research.Core.Plugins;
using static TorchSharp.torch;

namespace Research.Core.Training;

/// <summary>
/// A plugin failed during training. The run stops cleanly, is recorded as failed with this message, and the
/// command exits non-zero; the message names the plugin, its DLL, the call and the step.
/// </summary>
public sealed class PluginFailureException(string message, Exception inner) : Exception(message, inner);

static class Guard
{
    /// <summary>
    /// Whether a regularizer implements <see cref="IRegularizer.AfterStep"/> rather than inheriting the contract's empty
    /// default. Only then does the step hand it the gradient and Δθ, which costs AdamW its fused in-place update (a copy of
    /// the gradient, and unfused arithmetic whose rounding differs): a regularizer that only adds a penalty (EWC, L2-SP)
    /// leaves the update bitwise equal to plain fine-tuning.
    /// </summary>
    public static bool ObservesSteps(IRegularizer r)
    {
        if (r is GuardedRegularizer g) return g.ObservesStepsItself;
        var map = r.GetType().GetInterfaceMap(typeof(IRegularizer));
        var index = Array.FindIndex(map.InterfaceMethods, m => m.Name == nameof(IRegularizer.AfterStep));
        return map.TargetMethods[index].DeclaringType != typeof(IRegularizer);
    }

    public static T Call<T>(PluginDescriptor d, string member, long step, Func<T> call)
    {
        try { return call(); }
        catch (Exception e) when (e is not PluginFailureException)
        {
            throw new PluginFailureException(
                $"{PluginHost.RoleName(d.Role)} '{d.Name}' ({d.AssemblyPath}) threw {e.GetType().Name} in {member} at step {step}: {e.Message}", e);
        }
    }
}

/// <summary>A schedule whose exceptions become <see cref="PluginFailureException"/>.</summary>
public sealed class GuardedSchedule(ISchedule inner, PluginDescriptor descriptor) : ISchedule
{
    public PluginDescriptor Descriptor => descriptor;
    public double Multiplier(in ScheduleContext context)
    {
        var c = context;
        var value = Guard.Call(descriptor, nameof(Multiplier), c.Step, () => inner.Multiplier(c));
        if (!double.IsFinite(value) || value < 0)
            throw new PluginFailureException($"schedule '{descriptor.Name}' ({descriptor.AssemblyPath}) returned {value} at step {c.Step}; a multiplier must be finite and ≥ 0",
                new ArgumentOutOfRangeException(nameof(value)));
        return value;
    }
}

/// <summary>
/// A regularizer whose exceptions become <see cref="PluginFailureException"/>, and whose tensors the host owns by one
/// rule, so a plugin never calls a dispose-scope method: <b>what a plugin keeps is what its <c>StateDict</c> returns.</b>
/// Each call runs in a dispose scope of its own. When it returns, the tensors of the plugin's state are detached from
/// every scope (they live until the plugin lets go of them), tensors it kept before and no longer holds are disposed,
/// and every other tensor the call created is freed with the scope; a penalty it returns belongs to the caller's scope.
/// <c>LoadStateDict</c> hands the plugin tensors that become its own (it need not copy them). State outside
/// <c>StateDict</c> would not survive a resume either, so the rule also keeps checkpoints complete.
/// </summary>
public sealed class GuardedRegularizer(IRegularizer inner, PluginDescriptor descriptor) : IRegularizer
{
    readonly HashSet<Tensor> _kept = new(ReferenceEqualityComparer.Instance);

    public PluginDescriptor Descriptor => descriptor;
    /// <summary>Whether the plugin implements <see cref="IRegularizer.AfterStep"/> (see <c>Guard.ObservesSteps</c>).</summary>
    public bool ObservesStepsItself { get; } = Guard.ObservesSteps(inner);

    public Tensor? Penalty(PenaltyContext c)
    {
        using var scope = NewDisposeScope();
        var penalty = Guard.Call(descriptor, nameof(Penalty), c.Step, () => inner.Penalty(c));
        Keep(c.Step);
        return penalty?.MoveToOuterDisposeScope();
    }

    public void AfterStep(StepContext c) => Owned(nameof(AfterStep), c.Step, () => inner.AfterStep(c));
    public void Consolidate(TaskContext c) => Owned(nameof(Consolidate), -1, () => inner.Consolidate(c));
    public IReadOnlyDictionary<string, Tensor> StateDict() => Guard.Call(descriptor, nameof(StateDict), -1, inner.StateDict);

    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> s)
    {
        Owned(nameof(LoadStateDict), -1, () => inner.LoadStateDict(s));
        // What it was given and did not keep (it copied, or ignored it) is the host's to free.
        foreach (var t in s.Values.Where(t => !_kept.Contains(t))) t.Dispose();
    }

    void Owned(string member, long step, Action call)
    {
        using var scope = NewDisposeScope();
        Guard.Call(descriptor, member, step, () => { call(); return 0; });
        Keep(step);
    }

    /// <summary>After a call: the state's tensors outlive the call's scope; those it dropped since the last call are freed.</summary>
    void Keep(long step)
    {
        var now = new HashSet<Tensor>(Guard.Call(descriptor, nameof(StateDict), step, inner.StateDict).Values, ReferenceEqualityComparer.Instance);
        foreach (var t in now) t.DetachFromDisposeScope();
        foreach (var t in _kept.Where(t => !now.Contains(t))) t.Dispose();
        _kept.Clear();
        _kept.UnionWith(now);
    }
}

/// <summary>A forgetting metric whose exceptions become <see cref="PluginFailureException"/>.</summary>
public sealed class GuardedMetric(IForgettingMetric inner, PluginDescriptor descriptor) : IForgettingMetric
{
    public PluginDescriptor Descriptor => descriptor;
    public MetricValue Compute(EvaluationRecord record) => Guard.Call(descriptor, nameof(Compute), -1, () => inner.Compute(record));
}
