using Research.Abstractions;

namespace Research.Fixtures.Faulty;

/// <summary>Claims the name of a built-in schedule.</summary>
[Plugin("cosine", Summary = "fixture: a second schedule named cosine")]
public sealed class AnotherCosine : ISchedule
{
    public double Multiplier(in ScheduleContext context) => 1.0;
}

public sealed record ThrowingOptions
{
    public double Value { get; init; } = 1.0;
}

/// <summary>Its constructor fails, as a plugin with a broken dependency or a bad option check would.</summary>
[Plugin("ctor-throws", Summary = "fixture: constructor throws")]
public sealed class CtorThrows : ISchedule
{
    public CtorThrows(ThrowingOptions options) =>
        throw new InvalidOperationException($"cannot start with value {options.Value}");

    public double Multiplier(in ScheduleContext context) => 1.0;
}

/// <summary>A forgetting metric that throws, as a metric with a bug would: the study must keep its matrices.</summary>
[Plugin("throws", Summary = "fixture: a metric that throws")]
public sealed class ThrowingMetric : IForgettingMetric
{
    public MetricValue Compute(EvaluationRecord record) =>
        throw new IndexOutOfRangeException($"a bug in a metric over {record.Tasks.Count} tasks");
}

/// <summary>A forgetting metric that returns NaN (a mean over an empty set, say) instead of throwing: the study must fail
/// as for a metric that throws, not store the NaN as "no value".</summary>
[Plugin("returns-nan", Summary = "fixture: a metric whose value is NaN")]
public sealed class NaNMetric : IForgettingMetric
{
    public MetricValue Compute(EvaluationRecord record) => new(double.NaN, [.. record.Tasks.Select(_ => double.NaN)]);
}

/// <summary>Options whose static constructor throws, as a type with a broken static dependency would: listing the plugin
/// must still work, and asking for it must name the DLL and the reason.</summary>
public sealed record StaticThrowsOptions
{
    static StaticThrowsOptions() => throw new InvalidOperationException("its static setup failed");
    public double Value { get; init; } = 1.0;
}

[Plugin("static-throws", Summary = "fixture: options whose static constructor throws")]
public sealed class StaticThrows(StaticThrowsOptions options) : ISchedule
{
    public double Multiplier(in ScheduleContext context) => options.Value;
}

public sealed record StuckOptions
{
    /// <summary>"loop": never returns from Penalty; "exit": calls Environment.Exit(0) in Penalty.</summary>
    public string Kind { get; init; } = "loop";

    /// <summary>The step at which it misbehaves (before it, the penalty is 0).</summary>
    public long AtStep { get; init; } = 3;
}

/// <summary>A penalty that hangs (loops forever) or ends the process from inside the call, at a given step: the run must
/// fail naming the plugin within [plugins] call_timeout_s, with the rows logged before it on disk.</summary>
[Plugin("stuck", Summary = "fixture: a penalty that never returns, or calls Environment.Exit")]
public sealed class Stuck(StuckOptions options) : IPenalty
{
    public TorchSharp.torch.Tensor? Penalty(PenaltyContext context)
    {
        if (context.Step >= options.AtStep)
        {
            if (options.Kind == "exit") Environment.Exit(0);
            while (true) Thread.Sleep(20);
        }
        return null;
    }
}
