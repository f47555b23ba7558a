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

/// <summary>A regularizer whose exceptions become <see cref="PluginFailureException"/>.</summary>
public sealed class GuardedRegularizer(IRegularizer inner, PluginDescriptor descriptor) : IRegularizer
{
    public PluginDescriptor Descriptor => descriptor;
    /// <summary>Whether the plugin implements <see cref="IRegularizer.AfterStep"/> (see <c>Guard.ObservesSteps</c>).</summary>
    public bool ObservesStepsItself { get; } = Guard.ObservesSteps(inner);
    public Tensor? Penalty(PenaltyContext c) => Guard.Call(descriptor, nameof(Penalty), c.Step, () => inner.Penalty(c));
    public void AfterStep(StepContext c) => Guard.Call(descriptor, nameof(AfterStep), c.Step, () => { inner.AfterStep(c); return 0; });
    public void Consolidate(TaskContext c) => Guard.Call(descriptor, nameof(Consolidate), -1, () => { inner.Consolidate(c); return 0; });
    public IReadOnlyDictionary<string, Tensor> StateDict() => Guard.Call(descriptor, nameof(StateDict), -1, inner.StateDict);
    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> s) => Guard.Call(descriptor, nameof(LoadStateDict), -1, () => { inner.LoadStateDict(s); return 0; });
}

/// <summary>A forgetting metric whose exceptions become <see cref="PluginFailureException"/>.</summary>
public sealed class GuardedMetric(IForgettingMetric inner, PluginDescriptor descriptor) : IForgettingMetric
{
    public PluginDescriptor Descriptor => descriptor;
    public MetricValue Compute(EvaluationRecord record) => Guard.Call(descriptor, nameof(Compute), -1, () => inner.Compute(record));
}
