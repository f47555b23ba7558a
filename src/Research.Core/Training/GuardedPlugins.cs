using Research.Core.Tracking;
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
    /// <param name="step">The step the call belongs to, or −1 for a call at no step.</param>
    /// <param name="when">What the call is, said where a call has no step (a metric's computation after training).</param>
    public static T Call<T>(PluginDescriptor d, string member, long step, Func<T> call, string? when = null)
    {
        try { return Watchdog.Watch(d, member, step, call); }
        catch (Exception e) when (e is not PluginFailureException)
        {
            var where = step >= 0 ? $" at step {step}" : when is null ? "" : $" ({when})";
            throw new PluginFailureException(
                $"{PluginHost.RoleName(d.Role)} '{d.Name}' ({d.AssemblyPath}) threw {e.GetType().Name} in {member}{where}: {e.Message}", e);
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

/// <summary>A forgetting metric whose exceptions become <see cref="PluginFailureException"/>.</summary>
public sealed class GuardedMetric(IForgettingMetric inner, PluginDescriptor descriptor) : IForgettingMetric
{
    public PluginDescriptor Descriptor => descriptor;
    public MetricValue Compute(EvaluationRecord record)
    {
        const string when = "the metric's computation from the study's record, after training";
        var value = Guard.Call(descriptor, nameof(Compute), -1, () => inner.Compute(record), when);
        // The contract (MetricValue) allows NaN in PerTask only, for a task the metric does not define; a value that is NaN
        // or infinite is a fault, which the store would otherwise keep as NULL, as if the metric had not been asked for.
        if (value is null || !double.IsFinite(value.Value))
            throw new PluginFailureException(
                $"{PluginHost.RoleName(descriptor.Role)} '{descriptor.Name}' ({descriptor.AssemblyPath}) returned {(value is null ? "null" : $"the value {value.Value}")} " +
                $"from {nameof(Compute)} ({when}); a metric's value must be a finite number (NaN is allowed per task only, where the metric is undefined)",
                new ArithmeticException("non-finite metric value"));
        return value;
    }

    /// <summary>
    /// Computes each metric of the record; with a store, writes each value (replacing an earlier one of the same name).
    /// A metric that throws is reported (and stored with its reason, without a value), and the others are still computed.
    /// </summary>
    public static (List<(string Name, MetricValue Value)> Values, List<string> Failures) ComputeAll(
        IReadOnlyList<GuardedMetric> metrics, EvaluationRecord record, RunStore? store = null, string? runId = null)
    {
        var values = new List<(string, MetricValue)>();
        var failures = new List<string>();
        foreach (var metric in metrics)
        {
            var name = metric.Descriptor.Name;
            try
            {
                var value = metric.Compute(record);
                values.Add((name, value));
                store?.StudyMetric(runId!, name, value.Value, value.PerTask);
            }
            catch (PluginFailureException e)
            {
                failures.Add(e.Message);
                store?.StudyMetricFailed(runId!, name, e.Message);
            }
        }
        return (values, failures);
    }
}
