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

// Plugins whose results are of the wrong kind, one fault each (chosen by an option): the run must fail naming the
// plugin, its DLL, the member and what was wrong, at the place the core receives the result.

public sealed record BadMemoryOptions
{
    /// <summary>"features" ([n, 5] inputs whatever the data's features), "dtype" (float64 inputs), "names" (no 'input'),
    /// "rows" (more items than asked for), "nan" (NaN inputs), "null" (no batch), "count" (Count of −3),
    /// "mix-ratio" (a NaN mix ratio), "huge-mix" (a mix ratio of 1e300).</summary>
    public string Fault { get; init; } = "features";
}

/// <summary>A data role whose memory is of the wrong kind: it remembers the shape of the batches it observes and answers
/// Sample with something else.</summary>
[Plugin("bad-memory", Summary = "fixture: a data role whose Sample returns items of the wrong kind")]
public sealed class BadMemory(BadMemoryOptions options) : IDataRole
{
    long[]? _input;

    public double MixRatio => options.Fault switch { "mix-ratio" => double.NaN, "huge-mix" => 1e300, _ => 0.5 };

    public long Count => options.Fault == "count" ? -3 : _input is null ? 0 : 64;

    public void Observe(Batch batch, int taskIndex, TorchSharp.torch.Generator random) => _input ??= batch[Batch.Input].shape;

    public Batch Sample(int items, TorchSharp.torch.Generator random)
    {
        long n = options.Fault == "rows" ? items + 3 : items;
        long[] shape = [n, .. _input![1..]];
        var targets = TorchSharp.torch.zeros(n, dtype: TorchSharp.torch.ScalarType.Int64);
        return options.Fault switch
        {
            "features" => new Batch(TorchSharp.torch.randn(n, 5), targets),
            "dtype" => new Batch(TorchSharp.torch.randn(shape, dtype: TorchSharp.torch.ScalarType.Float64), targets),
            "names" => new Batch([new("pixels", TorchSharp.torch.randn(shape)), new(Batch.Targets, targets)]),
            "nan" => new Batch(TorchSharp.torch.full(shape, double.NaN), targets),
            "null" => null!,
            _ => new Batch(TorchSharp.torch.randn(shape), targets),
        };
    }
}

public sealed record BadPenaltyOptions
{
    /// <summary>"disposed" (a tensor it disposed before returning it) or "constant" (a tensor outside the autograd graph).</summary>
    public string Fault { get; init; } = "disposed";
}

/// <summary>A penalty that returns a dead tensor, or one no gradient flows through.</summary>
[Plugin("bad-penalty", Summary = "fixture: a penalty that returns a disposed or constant tensor")]
public sealed class BadPenalty(BadPenaltyOptions options) : IPenalty
{
    public TorchSharp.torch.Tensor? Penalty(PenaltyContext context)
    {
        if (options.Fault == "constant") return TorchSharp.torch.tensor(0.5f);
        var p = context.Parameters[0].Value.square().sum();
        p.Dispose();
        return p;
    }
}

public sealed record BadStateOptions
{
    /// <summary>"null" (StateDict returns null), "null-tensor" (an entry that is null) or "disposed" (a kept tensor it
    /// disposed).</summary>
    public string Fault { get; init; } = "null";
}

/// <summary>A stateful method whose StateDict is not a dictionary of live tensors.</summary>
[Plugin("bad-state", Summary = "fixture: a method whose StateDict is null, holds null or a disposed tensor")]
public sealed class BadState(BadStateOptions options) : IStepObserver, IStateful
{
    TorchSharp.torch.Tensor? _kept;

    public void AfterStep(StepContext context) { }

    public IReadOnlyDictionary<string, TorchSharp.torch.Tensor> StateDict()
    {
        switch (options.Fault)
        {
            case "null": return null!;
            case "null-tensor": return new Dictionary<string, TorchSharp.torch.Tensor> { ["kept"] = null! };
            default:
                if (_kept is null)
                {
                    _kept = TorchSharp.torch.zeros(3);
                    _kept.Dispose();
                }
                return new Dictionary<string, TorchSharp.torch.Tensor> { ["kept"] = _kept };
        }
    }

    public void LoadStateDict(IReadOnlyDictionary<string, TorchSharp.torch.Tensor> state) { }
}

public sealed record BadProbeOptions
{
    /// <summary>"core-name" (a probe named as the core's parameter_change_norm), "twice" (one name added twice in one
    /// task end) or "infinite" (a row holding +∞).</summary>
    public string Fault { get; init; } = "core-name";
}

/// <summary>A task end that adds probes the record cannot hold.</summary>
[Plugin("bad-probe", Summary = "fixture: a task end that adds a probe under a taken name, twice, or with an infinite value")]
public sealed class BadProbe(BadProbeOptions options) : ITaskHooks
{
    public void TaskEnd(TaskEndContext context)
    {
        switch (options.Fault)
        {
            case "core-name": context.AddProbe(ProbeNames.ParameterChangeNorm, [1.0]); break;
            case "twice":
                context.AddProbe("bad_probe", [1.0]);
                context.AddProbe("bad_probe", [2.0]);
                break;
            default: context.AddProbe("bad_probe", [double.PositiveInfinity]); break;
        }
    }
}

public sealed record BadMetricOptions
{
    /// <summary>"null" (no MetricValue), "infinite" (a value of +∞) or "per-task" (more per-task values than tasks).</summary>
    public string Fault { get; init; } = "null";
}

/// <summary>A forgetting metric whose result is not a metric's.</summary>
[Plugin("bad-metric", Summary = "fixture: a metric that returns null, +∞ or too many per-task values")]
public sealed class BadMetric(BadMetricOptions options) : IForgettingMetric
{
    public MetricValue Compute(EvaluationRecord record) => options.Fault switch
    {
        "null" => null!,
        "infinite" => new MetricValue(double.PositiveInfinity),
        _ => new MetricValue(0.5, Enumerable.Repeat(0.5, record.Tasks.Count + 3).ToArray()),
    };
}

public sealed record HugeMultiplierOptions
{
    public double Value { get; init; } = 1e300;
}

/// <summary>A schedule whose multiplier is finite but makes a learning rate no fp32 update can apply.</summary>
[Plugin("huge-multiplier", Summary = "fixture: a schedule that returns 1e300")]
public sealed class HugeMultiplier(HugeMultiplierOptions options) : ISchedule
{
    public double Multiplier(in ScheduleContext context) => options.Value;
}

/// <summary>A gradient hook that leaves the task gradient NaN, as a projection dividing by a zero norm would.</summary>
[Plugin("nan-hook", Summary = "fixture: a gradient hook that makes the task gradient NaN")]
public sealed class NanHook : IGradientHook
{
    public void BeforeUpdate(GradientContext context) => context.TaskGradient[0].fill_(double.NaN);
}
