using System.Globalization;
using Research.Abstractions;
using Research.Core.Checkpoints;
using Research.Core.Tracking;

namespace Research.Core.Training;

/// <summary>
/// What a run's plugins asked of it (<see cref="RunControl"/>) and logged (<see cref="IRunLog"/>) since the loop last
/// looked. Every method gets its own control and log, bound to it, so a request and a value always name their plugin.
/// </summary>
/// <remarks>
/// Requests wait for the loop's next step boundary (<see cref="Take"/>). What is pending when a checkpoint is written is
/// part of its state (<see cref="Snapshot"/>), so a resumed run acts on it where the uninterrupted run did. Logged values
/// wait for the next flush, which writes them at a step: after a window, at the step the store gives the update (with the
/// core's rows of that step); at a hook outside a step, and before a checkpoint's watermark, at the current step. A value
/// logged twice before a flush keeps the last.
/// </remarks>
public sealed class RunSignals
{
    /// <summary>The store's key of a plugin's logged value: <c>plugin/PLUGIN/NAME</c> (of <paramref name="pluginAndName"/>,
    /// <c>PLUGIN/NAME</c>, as sweeps and plots name it after <c>log:</c>).</summary>
    public static string Key(string pluginAndName) => "plugin/" + pluginAndName;

    readonly List<(string Key, double Value)> _logged = [];
    string? _stopBy, _stopReason;
    bool _evaluate, _checkpoint;

    /// <summary>Whether a request waits for the next step boundary.</summary>
    public bool Pending => _stopBy != null || _evaluate || _checkpoint;

    /// <summary>The recorded line of the plugin stop that ended the run, once the loop acted on it (a study goes no further).</summary>
    public string? Halted { get; private set; }

    internal void Request(GuardedMethod method, RunRequest request)
    {
        switch (request.Kind)
        {
            case RunRequestKind.Stop when _stopBy is null && Halted is null:
                (_stopBy, _stopReason) = (method.Name, request.Reason);
                break;
            case RunRequestKind.Evaluation: _evaluate = true; break;
            case RunRequestKind.Checkpoint: _checkpoint = true; break;
        }
    }

    /// <summary>An evaluation begins: it answers every evaluation request made before it.</summary>
    public void EvaluationStarts() => _evaluate = false;

    /// <summary>The requests to act on now, cleared. At an epoch's end an evaluation request stays for the step after it
    /// (the epoch's own evaluation came before the request).</summary>
    public (string? StopBy, string? StopReason, bool Evaluate, bool Checkpoint) Take(bool keepEvaluation)
    {
        var taken = (_stopBy, _stopReason, _evaluate && !keepEvaluation, _checkpoint);
        (_stopBy, _stopReason, _checkpoint) = (null, null, false);
        if (!keepEvaluation) _evaluate = false;
        return taken;
    }

    /// <summary>The loop acts on a plugin's stop at <paramref name="step"/>: the line the run records.</summary>
    public string Halt(string by, string reason, long step) =>
        Halted = $"stopped by method '{by}' at step {step.ToString(CultureInfo.InvariantCulture)}: {reason}";

    /// <summary>The pending requests for a checkpoint's state (null when there are none).</summary>
    public ControlRequests? Snapshot() =>
        Pending || Halted != null ? new ControlRequests(_stopBy, _stopReason, _evaluate, _checkpoint, Halted) : null;

    /// <summary>The requests a checkpoint held, as a resumed run continues from it.</summary>
    public void Restore(ControlRequests? requests)
    {
        (_stopBy, _stopReason, _evaluate, _checkpoint, Halted) = requests is { } r
            ? (r.StopBy, r.StopReason, r.Evaluation, r.Checkpoint, r.Halted)
            : (null, null, false, false, null);
    }

    /// <summary>A value a method logged: checked (a name without spaces; a finite value), and kept for the next flush.
    /// A wrong one fails the run naming the method (<see cref="GuardedMethod.LogFailed"/>).</summary>
    internal void Log(GuardedMethod method, string name, double value)
    {
        if (string.IsNullOrWhiteSpace(name) || name.Any(c => char.IsWhiteSpace(c) || char.IsControl(c)))
            throw method.LogFailed($"the name '{name}'", "a logged value's name is not empty and has no spaces");
        if (!double.IsFinite(value))
            throw method.LogFailed($"a value that is not finite ({value.ToString(CultureInfo.InvariantCulture)}) for '{name}'", "logged values are finite");
        var key = Key($"{method.Name}/{name}");
        int i = _logged.FindIndex(x => x.Key == key);
        if (i >= 0) _logged[i] = (key, value);
        else _logged.Add((key, value));
    }

    /// <summary>Writes the values logged since the last flush as the store's metrics at <paramref name="step"/>.</summary>
    public void Flush(RunStore store, string runId, long step)
    {
        if (_logged.Count == 0) return;
        foreach (var (key, value) in _logged) store.Metric(runId, step, key, value);
        _logged.Clear();
    }
}

/// <summary>A method's log: its values go to the run's <see cref="RunSignals"/> under its name.</summary>
sealed class PluginLog(GuardedMethod method, RunSignals signals) : IRunLog
{
    public void Scalar(string name, double value) => signals.Log(method, name, value);
}
