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
            throw new PluginFailureException(
                $"{PluginHost.RoleName(d.Role)} '{d.Name}' ({d.AssemblyPath}) threw {e.GetType().Name} in {member}{Where(step, when)}: {e.Message}", e);
        }
    }

    static string Where(long step, string? when) => step >= 0 ? $" at step {step}" : when is null ? "" : $" ({when})";

    /// <summary>
    /// A plugin result that is not what the core must receive: one line naming the plugin, its DLL, the member, the step
    /// (or what the call was) and what was wrong. Every result the core consumes is checked where it is received, so a
    /// wrong one fails the run here instead of somewhere in autograd, a checkpoint or a store, where nothing names its plugin.
    /// </summary>
    /// <param name="what">What it returned (<c>a Float64 tensor of shape [3]</c>).</param>
    /// <param name="must">What it must be.</param>
    public static PluginFailureException Wrong(PluginDescriptor d, string member, long step, string what, string must, string? when = null) =>
        new($"{PluginHost.RoleName(d.Role)} '{d.Name}' ({d.AssemblyPath}) returned {what} from {member}{Where(step, when)}; {must}",
            new InvalidDataException($"{member} returned {what}"));

    /// <summary>How a tensor is named in those lines: its dtype and shape.</summary>
    public static string Describe(Tensor t) => Describe(t.dtype, t.shape);

    public static string Describe(ScalarType dtype, long[] shape) => $"a {dtype} tensor of shape [{string.Join(", ", shape)}]";
}

/// <summary>A schedule whose exceptions become <see cref="PluginFailureException"/>, and whose multipliers are checked.</summary>
/// <param name="peakRate">η, the learning rate the multiplier scales: η · f(t) must be a finite fp32 number, the precision
/// the optimizer applies it in (a multiplier of 1e300 is finite, the rate it makes is not).</param>
public sealed class GuardedSchedule(ISchedule inner, PluginDescriptor descriptor, double peakRate = 1) : ISchedule
{
    public PluginDescriptor Descriptor => descriptor;
    public double Multiplier(in ScheduleContext context)
    {
        var c = context;
        var value = Guard.Call(descriptor, nameof(Multiplier), c.Step, () => inner.Multiplier(c));
        if (!double.IsFinite(value) || value < 0)
            throw Guard.Wrong(descriptor, nameof(Multiplier), c.Step, value.ToString("G", System.Globalization.CultureInfo.InvariantCulture),
                "a multiplier must be finite and ≥ 0");
        if (!float.IsFinite((float)(value * peakRate)))
            throw Guard.Wrong(descriptor, nameof(Multiplier), c.Step, value.ToString("G", System.Globalization.CultureInfo.InvariantCulture),
                $"times the learning rate {peakRate:G} it is beyond fp32's range ({float.MaxValue:G}), the precision of an update");
        return value;
    }
}

/// <summary>A forgetting metric whose exceptions become <see cref="PluginFailureException"/>.</summary>
public sealed class GuardedMetric(IForgettingMetric inner, PluginDescriptor descriptor) : IForgettingMetric
{
    public PluginDescriptor Descriptor => descriptor;

    /// <summary>The metric's task hooks and step observer (a metric that measures the model), guarded and called as a
    /// method's are, its state checkpointed under its name; null when the metric only reads the record.</summary>
    public GuardedMethod? Observer { get; } = inner is ITaskHooks or IStepObserver ? new GuardedMethod(inner, descriptor) : null;

    public MetricValue Compute(EvaluationRecord record)
    {
        const string when = "the metric's computation from the study's record, after training";
        var value = Guard.Call(descriptor, nameof(Compute), -1, () => inner.Compute(record), when);
        if (value is null) throw Guard.Wrong(descriptor, nameof(Compute), -1, "null", "a metric returns a MetricValue", when);
        // The contract (MetricValue) allows NaN in PerTask only, for a task the metric does not define; a value that is NaN
        // or infinite is a fault, which the store would otherwise keep as NULL, as if the metric had not been asked for.
        if (!double.IsFinite(value.Value))
            throw Guard.Wrong(descriptor, nameof(Compute), -1, $"the value {value.Value.ToString(System.Globalization.CultureInfo.InvariantCulture)}", "a metric's value is a finite number (NaN is allowed per task only, where the metric is undefined)", when);
        if (value.PerTask is { } perTask)
        {
            if (perTask.Count > record.Tasks.Count)
                throw Guard.Wrong(descriptor, nameof(Compute), -1, $"{perTask.Count} per-task values", $"the study has {record.Tasks.Count} tasks", when);
            // An infinite per-task value is stored and shown as a measurement; the contract has NaN for "undefined".
            for (int j = 0; j < perTask.Count; j++)
                if (double.IsInfinity(perTask[j]))
                    throw Guard.Wrong(descriptor, nameof(Compute), -1, $"the per-task value {perTask[j].ToString(System.Globalization.CultureInfo.InvariantCulture)} for task {j}",
                        "per-task values are finite numbers, or NaN where the metric is undefined", when);
        }
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
