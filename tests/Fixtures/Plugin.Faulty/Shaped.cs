using System.Globalization;
using Research.Abstractions;
using static TorchSharp.torch;

namespace Research.Fixtures.Faulty;

// Plugins whose results are shaped by their options, one per role the core receives a result from: a seeded generator
// draws many variants of each, the right shape among them. Every option's default gives the right result, so a variant
// differs from a valid plugin only in what its options name.

static class Shapes
{
    /// <summary>A dtype by name; "" is <paramref name="otherwise"/>.</summary>
    public static ScalarType DType(string name, ScalarType otherwise) => name switch
    {
        "" => otherwise,
        "float64" => ScalarType.Float64, "float32" => ScalarType.Float32, "float16" => ScalarType.Float16,
        "bfloat16" => ScalarType.BFloat16, "int64" => ScalarType.Int64, "int32" => ScalarType.Int32,
        "int16" => ScalarType.Int16, "int8" => ScalarType.Int8, "uint8" => ScalarType.Byte, "bool" => ScalarType.Bool,
        "complex64" => ScalarType.ComplexFloat32,
        _ => throw new ArgumentException($"no dtype '{name}'"),
    };

    /// <summary>A number by its text: nan, inf and -inf too (option values must be finite numbers).</summary>
    public static double Number(string text) => text switch
    {
        "nan" => double.NaN, "inf" => double.PositiveInfinity, "-inf" => double.NegativeInfinity,
        _ => double.Parse(text, CultureInfo.InvariantCulture),
    };

    static bool IsFloating(ScalarType t) => t is ScalarType.Float64 or ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16;

    /// <summary>Values of a shape and dtype: normal draws for floating-point dtypes, small integers otherwise.</summary>
    public static Tensor Draw(long[] shape, ScalarType dtype, Generator random) =>
        IsFloating(dtype) ? randn(shape, dtype: ScalarType.Float32, generator: random).to(dtype)
        : dtype == ScalarType.ComplexFloat32 ? randn(shape, dtype: ScalarType.ComplexFloat32, generator: random)
        : randint(0, 2, shape, generator: random).to(dtype);

    /// <summary>A tensor of <paramref name="shape"/> and <paramref name="dtype"/> holding <paramref name="value"/>,
    /// computed from <paramref name="source"/> (in its autograd graph) when <paramref name="graph"/>.</summary>
    public static Tensor Valued(Tensor source, bool graph, double value, long[] shape, string dtype)
    {
        var scalar = graph ? source.sum().mul(0).add(value) : tensor(value, dtype: ScalarType.Float32);
        var shaped = shape.Length == 0 ? scalar : scalar.expand(shape).contiguous();
        return shaped.to(DType(dtype, ScalarType.Float32));
    }
}

public sealed record ShapedMemoryOptions
{
    /// <summary>Rows returned beyond what was asked for (min(items, Count)); negative for fewer.</summary>
    public long RowsDelta { get; init; }

    /// <summary>The input's size after the batch axis ([n, features]); 0 for the task's.</summary>
    public long Features { get; init; }

    /// <summary>The input's rank (axes of 1 appended, or the axes after the first folded into one); 0 for the task's.</summary>
    public long Rank { get; init; }

    /// <summary>The input's dtype; "" for the task's.</summary>
    public string InputDtype { get; init; } = "";

    /// <summary>The batch's tensor names; empty for the task's ("targets" gets the targets, other names the input).</summary>
    public string[] Names { get; init; } = [];

    /// <summary>The targets' dtype; "" for the task's.</summary>
    public string TargetsDtype { get; init; } = "";

    /// <summary>The targets' value: "" for classes the task has, "ignore" for −100 (items that do not count), or a number.</summary>
    public string Targets { get; init; } = "";

    /// <summary>The targets' rank: 0 for the task's, 2 for [n, 1].</summary>
    public long TargetsRank { get; init; }

    /// <summary>One input value set to "nan", "inf" or "-inf" (a floating-point input's); "" for none.</summary>
    public string NonFinite { get; init; } = "";

    /// <summary>Items the memory says it holds once it has observed a batch.</summary>
    public long Count { get; init; } = 64;

    public double MixRatio { get; init; } = 0.5;
}

/// <summary>A data role whose sampled batches are shaped by its options: it remembers the kind of the batches it observes
/// (names, shapes, dtypes, the largest class) and draws fresh items of that kind, or of the kind its options name.</summary>
[Plugin("shaped-memory", Summary = "fixture: a data role whose Sample returns batches of a shape its options choose")]
public sealed class ShapedMemory(ShapedMemoryOptions options) : IDataRole
{
    long[]? _input;
    ScalarType _inputType, _targetsType;
    long _classes;
    string[] _names = [];

    public double MixRatio => options.MixRatio;

    public long Count => _input is null ? 0 : options.Count;

    public void Observe(Batch batch, int taskIndex, Generator random)
    {
        if (_input is null)
        {
            var input = batch[Batch.Input];
            _input = input.shape;
            _inputType = input.dtype;
            _targetsType = batch.TargetsTensor.dtype;
            _names = [.. batch.Keys];
        }
        _classes = Math.Max(_classes, batch.TargetsTensor.max().item<long>() + 1);
    }

    public Batch Sample(int items, Generator random)
    {
        long n = Math.Max(0, Math.Min(items, Count) + options.RowsDelta);
        long[] shape = options.Features > 0 ? [n, options.Features] : [n, .. _input![1..]];
        if (options.Rank == 1) shape = [n];
        else if (options.Rank > 1)
        {
            if (options.Rank < shape.Length) shape = [n, shape[1..].Aggregate(1L, (a, b) => a * b)];
            shape = [.. shape, .. Enumerable.Repeat(1L, Math.Max(0, (int)options.Rank - shape.Length))];
        }
        var input = Shapes.Draw(shape, Shapes.DType(options.InputDtype, _inputType), random);
        if (options.NonFinite != "" && input.numel() > 0 && input.is_floating_point()) input.view(-1)[0].fill_(Shapes.Number(options.NonFinite));

        var targets = options.Targets switch
        {
            "" => randint(0, Math.Max(_classes, 1), [n], generator: random),
            "ignore" => full([n], Batch.IgnoreIndex, dtype: ScalarType.Int64),
            var v => full([n], long.Parse(v, CultureInfo.InvariantCulture), dtype: ScalarType.Int64),
        };
        targets = targets.to(Shapes.DType(options.TargetsDtype, _targetsType));
        if (options.TargetsRank == 2) targets = targets.unsqueeze(1);

        var names = options.Names.Length > 0 ? options.Names : _names;
        return new Batch(names.Select(name => KeyValuePair.Create(name, name == Batch.Targets ? targets : input)));
    }
}

public sealed record ShapedTensorOptions
{
    /// <summary>The result's shape; empty for a scalar.</summary>
    public long[] Shape { get; init; } = [];

    public string Dtype { get; init; } = "float32";

    /// <summary>Each element's value (nan, inf, -inf too), or "none" for no result (a zero term).</summary>
    public string Value { get; init; } = "0.01";

    /// <summary>Computed from what the core hands in (in the autograd graph), or a constant.</summary>
    public bool Graph { get; init; } = true;
}

/// <summary>A penalty of the shape, dtype and value its options choose.</summary>
[Plugin("shaped-penalty", Summary = "fixture: a penalty of a shape, dtype and value its options choose")]
public sealed class ShapedPenalty(ShapedTensorOptions options) : IPenalty
{
    public Tensor? Penalty(PenaltyContext context) => options.Value == "none" ? null
        : Shapes.Valued(context.Parameters[0].Value, options.Graph, Shapes.Number(options.Value), options.Shape, options.Dtype);
}

/// <summary>A loss term of the shape, dtype and value its options choose.</summary>
[Plugin("shaped-loss", Summary = "fixture: a loss term of a shape, dtype and value its options choose")]
public sealed class ShapedLoss(ShapedTensorOptions options) : ILossTerm
{
    public Tensor? Loss(LossTermContext context) => options.Value == "none" ? null
        : Shapes.Valued(context.Logits, options.Graph, Shapes.Number(options.Value), options.Shape, options.Dtype);
}

public sealed record ShapedHookOptions
{
    /// <summary>What the hook does to one task gradient: "none", "scale" (× 0.5 in place), "zero", "nan" or "inf" (one value),
    /// "set-shape" (its storage swapped for one of another shape), "set-dtype" (for a float64 copy), "set-same" (for a copy
    /// of the same shape and dtype), "replace" (a new tensor put into the list in its place).</summary>
    public string Change { get; init; } = "none";

    /// <summary>The index of the gradient it changes (past the last: the last).</summary>
    public long Index { get; init; }
}

/// <summary>A gradient hook that changes the task gradient as its options say: in place (what the contract allows) or by
/// swapping what the core's tensors are.</summary>
[Plugin("shaped-hook", Summary = "fixture: a gradient hook that changes the task gradient in place, or resizes or replaces it")]
public sealed class ShapedHook(ShapedHookOptions options) : IGradientHook
{
    public void BeforeUpdate(GradientContext context)
    {
        var i = (int)Math.Min(options.Index, context.TaskGradient.Count - 1);
        var g = context.TaskGradient[i];
        switch (options.Change)
        {
            case "none": break;
            case "scale": g.mul_(0.5); break;
            case "zero": g.zero_(); break;
            case "nan": g.view(-1)[0].fill_(double.NaN); break;
            case "inf": g.view(-1)[0].fill_(double.PositiveInfinity); break;
            case "set-shape": g.set_(zeros(g.numel() + 1)); break;
            case "set-dtype": g.set_(g.to(ScalarType.Float64)); break;
            case "set-same": g.set_(g.mul(0.5)); break;
            case "replace": ((IList<Tensor>)context.TaskGradient)[i] = g.mul(0.5); break;
            default: throw new ArgumentException($"no change '{options.Change}'");
        }
    }
}

public sealed record ShapedMetricOptions
{
    /// <summary>How many per-task values; −1 for none.</summary>
    public long PerTask { get; init; } = -1;

    /// <summary>The metric's value (nan, inf, -inf too).</summary>
    public string Value { get; init; } = "0.5";

    /// <summary>Each per-task value (nan, inf, -inf too).</summary>
    public string PerTaskValue { get; init; } = "0.25";
}

/// <summary>A forgetting metric whose value and per-task values its options choose.</summary>
[Plugin("shaped-metric", Summary = "fixture: a metric whose value and per-task values its options choose")]
public sealed class ShapedMetric(ShapedMetricOptions options) : IForgettingMetric
{
    public MetricValue Compute(EvaluationRecord record) => new(Shapes.Number(options.Value),
        options.PerTask < 0 ? null : Enumerable.Repeat(Shapes.Number(options.PerTaskValue), (int)options.PerTask).ToArray());
}

public sealed record ShapedStateOptions
{
    /// <summary>The kept tensor's name.</summary>
    public string Key { get; init; } = "kept";

    public long[] Shape { get; init; } = [3];

    public string Dtype { get; init; } = "float32";

    /// <summary>How it is laid out: "contiguous", "strided" (every other value of a larger tensor: a view that is not
    /// contiguous) or "twice" (one tensor under two names).</summary>
    public string Layout { get; init; } = "contiguous";
}

/// <summary>A stateful step observer whose state its options shape.</summary>
[Plugin("shaped-state", Summary = "fixture: a method whose StateDict holds a tensor its options shape")]
public sealed class ShapedState(ShapedStateOptions options) : IStepObserver, IStateful
{
    Tensor? _kept;

    public void AfterStep(StepContext context)
    {
        if (_kept is not null) return;
        using var random = new Generator(7);
        _kept = options.Layout switch
        {
            "strided" => Shapes.Draw([.. options.Shape, 2], Shapes.DType(options.Dtype, ScalarType.Float32), random).select(-1, 0),
            _ => Shapes.Draw(options.Shape, Shapes.DType(options.Dtype, ScalarType.Float32), random),
        };
    }

    public IReadOnlyDictionary<string, Tensor> StateDict()
    {
        var state = new Dictionary<string, Tensor>();
        if (_kept is null) return state;
        state[options.Key] = _kept;
        if (options.Layout == "twice") state[options.Key + "_again"] = _kept;
        return state;
    }

    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state) => _kept = state.GetValueOrDefault(options.Key);
}
