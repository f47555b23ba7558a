using System.Text.Json;
using Research.Abstractions;
using static TorchSharp.torch;

namespace Plugin.Replay;

public sealed record ScalarStateOptions
{
    /// <summary>λ of the penalty λ·s·Σθ².</summary>
    public double Lambda { get; init; } = 0.01;

    /// <summary>"" (none), "nan" (a NaN among the values) or "type" (a System.Type, which JSON cannot hold).</summary>
    public string Fault { get; init; } = "";
}

/// <summary>What the plugin keeps as a record: the task it last saw and its count of calls then.</summary>
public sealed record Seen(int Task, long Calls);

/// <summary>
/// A penalty λ·s·Σθ² whose strength s is state kept as plain values, not tensors: each call counts (a long), moves the
/// running mean s ← 0.9·s + 0.1·(calls mod 7) (a double), and notes the task (a string and a record). A resume that lost
/// or rounded any of them would train differently from the run it continues.
/// </summary>
[Plugin("scalar-state", Summary = "fixture: a penalty whose state is a counter, a double, a string and a record (StateValues)")]
public sealed class ScalarState(ScalarStateOptions options) : IPenalty, IStateful
{
    long _calls;
    double _strength;
    string _phase = "none";
    Seen _seen = new(-1, 0);

    public Tensor? Penalty(PenaltyContext context)
    {
        _calls++;
        _strength = 0.9 * _strength + 0.1 * (_calls % 7);
        _phase = $"task-{context.TaskIndex}";
        _seen = new Seen(context.TaskIndex, _calls);
        Tensor? sum = null;
        foreach (var p in context.Parameters)
        {
            var s = p.Value.square().sum();
            sum = sum is null ? s : sum + s;
        }
        return sum?.mul(options.Lambda * _strength);
    }

    public IReadOnlyDictionary<string, Tensor> StateDict() => new Dictionary<string, Tensor>();

    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state) { }

    public IReadOnlyDictionary<string, object?> StateValues() => new Dictionary<string, object?>
    {
        ["calls"] = _calls,
        ["strength"] = options.Fault == "nan" && _calls > 2 ? double.NaN : _strength,
        ["phase"] = _phase,
        ["seen"] = options.Fault == "type" ? typeof(Seen) : _seen,
    };

    public void LoadStateValues(IReadOnlyDictionary<string, JsonElement> values)
    {
        _calls = values["calls"].GetInt64();
        _strength = values["strength"].GetDouble();
        _phase = values["phase"].GetString()!;
        _seen = values["seen"].Deserialize<Seen>()!;
        if (_seen.Calls != _calls || _phase != $"task-{_seen.Task}")
            throw new InvalidDataException($"the values do not agree: {_calls} calls, phase {_phase}, record {_seen}");
    }
}
