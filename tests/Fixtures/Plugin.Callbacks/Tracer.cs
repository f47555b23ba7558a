using System.Globalization;
using Research.Abstractions;
using static TorchSharp.torch;

namespace Research.Fixtures.Callbacks;

public sealed record TracerOptions
{
    /// <summary>A file every hook call appends one line to ("" for none): member, step, task, then what the call saw.</summary>
    public string Trace { get; init; } = "";

    /// <summary>Asks for an evaluation during the step that makes the run's step this (0: never).</summary>
    public long EvaluateAt { get; init; }

    /// <summary>Asks for a checkpoint during the step that makes the run's step this (0: never).</summary>
    public long CheckpointAt { get; init; }

    /// <summary>Asks to stop during the step that makes the run's step this (0: never).</summary>
    public long StopAt { get; init; }

    public string StopReason { get; init; } = "the tracer has seen enough";

    /// <summary>At the end of the first epoch: "evaluation" or "checkpoint" asks for one there ("": nothing), a request
    /// that waits for the next step, across the epoch end's checkpoint.</summary>
    public string AtFirstEpochEnd { get; init; } = "";

    /// <summary>An ICallback member that throws at <see cref="FaultAt"/> ("": none).</summary>
    public string ThrowIn { get; init; } = "";

    /// <summary>Logs NaN during the step that makes the run's step this (0: never).</summary>
    public long NanAt { get; init; }

    /// <summary>The step a fault happens at (ThrowIn): the member's context step.</summary>
    public long FaultAt { get; init; } = 1;
}

/// <summary>
/// Implements every hook point: each call is traced; each step logs the micro-batches' loss and how many steps it has seen
/// (a counter kept as state, so a resumed run logs what the uninterrupted one did), each evaluation the validation loss it
/// saw, each checkpoint how many it has seen (AfterCheckpoint of the checkpoint a run resumes from is called again, so the
/// count survives too).
/// </summary>
[Plugin("tracer", Summary = "fixture: traces every hook point, logs values, asks to evaluate, checkpoint and stop")]
public sealed class Tracer(TracerOptions options) : ICallback, IStateful
{
    Tensor? _steps, _checkpoints;

    public IReadOnlyDictionary<string, Tensor> StateDict()
    {
        var state = new Dictionary<string, Tensor>();
        if (_steps is not null) state["steps"] = _steps;
        if (_checkpoints is not null) state["checkpoints"] = _checkpoints;
        return state;
    }

    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state)
    {
        _steps = state.GetValueOrDefault("steps");
        _checkpoints = state.GetValueOrDefault("checkpoints");
    }

    static long Increment(ref Tensor? counter)
    {
        counter ??= zeros(1, dtype: ScalarType.Int64);
        counter.add_(1);
        return counter.item<long>();
    }

    void Trace(string member, long step, int task, string what = "")
    {
        if (member == options.ThrowIn && step == options.FaultAt)
            throw new InvalidOperationException($"the tracer was told to fail in {member}");
        if (options.Trace.Length == 0) return;
        File.AppendAllText(options.Trace, string.Join(' ', member, step.ToString(CultureInfo.InvariantCulture),
            task.ToString(CultureInfo.InvariantCulture), what).TrimEnd() + "\n");
    }

    public void RunStart(RunContext c) => Trace(nameof(RunStart), c.Step, c.TaskIndex, c.Resumed ? "resumed" : "");
    public void RunEnd(RunContext c) => Trace(nameof(RunEnd), c.Step, c.TaskIndex);
    public void EpochStart(EpochContext c) => Trace(nameof(EpochStart), c.Step, c.TaskIndex, $"{c.Epoch}");

    public void EpochEnd(EpochContext c)
    {
        Trace(nameof(EpochEnd), c.Step, c.TaskIndex, $"{c.Epoch}");
        if (c.Epoch != 0 || c.TaskIndex != 0) return;
        if (options.AtFirstEpochEnd == "evaluation") c.Control.RequestEvaluation();
        if (options.AtFirstEpochEnd == "checkpoint") c.Control.RequestCheckpoint();
    }

    public void BeforeEvaluation(EvaluationContext c) => Trace(nameof(BeforeEvaluation), c.Step, c.TaskIndex, $"{c.Epoch}");

    public void AfterEvaluation(EvaluationContext c)
    {
        Trace(nameof(AfterEvaluation), c.Step, c.TaskIndex, $"{c.Epoch}");
        c.Log.Scalar("val_loss_seen", c.Metrics["val_loss"]);
    }

    public void AfterCheckpoint(CheckpointContext c)
    {
        Trace(nameof(AfterCheckpoint), c.Step, c.TaskIndex, c.Name);
        c.Log.Scalar("checkpoints_seen", Increment(ref _checkpoints));
    }

    public void BeforeForward(ForwardContext c)
    {
        Trace(nameof(BeforeForward), c.Step, c.TaskIndex, $"{c.MicroBatch} {c.Batch.Size}");
        if (c.MicroBatch != 0) return;
        c.Log.Scalar("steps_seen", Increment(ref _steps));
        long next = c.Step + 1;   // the run's step once this update is applied
        if (next == options.EvaluateAt) c.Control.RequestEvaluation();
        if (next == options.CheckpointAt) c.Control.RequestCheckpoint();
        if (next == options.StopAt) c.Control.RequestStop(options.StopReason);
        if (next == options.NanAt) c.Log.Scalar("broken", double.NaN);
    }

    public void AfterForward(ForwardContext c) =>
        Trace(nameof(AfterForward), c.Step, c.TaskIndex, $"{c.MicroBatch} {(c.Logits is { } l ? l.shape[0] : -1)}");

    public void BeforeBackward(BackwardContext c) => Trace(nameof(BeforeBackward), c.Step, c.TaskIndex, $"{c.MicroBatch}");

    public void AfterBackward(BackwardContext c)
    {
        Trace(nameof(AfterBackward), c.Step, c.TaskIndex, $"{c.MicroBatch}");
        c.Log.Scalar($"loss/micro{c.MicroBatch}", c.Loss);
    }
}

/// <summary>Implements one hook point, EpochEnd: the host must call nothing else of it.</summary>
[Plugin("epoch-counter", Summary = "fixture: a callback of one member, EpochEnd, that logs the epochs it saw")]
public sealed class EpochCounter : ICallback
{
    int _epochs;

    public void EpochEnd(EpochContext c) => c.Log.Scalar("epochs", ++_epochs);
}
