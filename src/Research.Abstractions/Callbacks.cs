using static TorchSharp.torch;

namespace Research.Abstractions;

// Callbacks, control and the log sink. A callback is a method (configured in [[methods]], or [[callbacks]], the same
// tables) that implements ICallback; every member is optional, and the host calls only the members the class implements
// (it asks once per run), so a hook point nobody implements costs nothing. The ownership rule of Methods.cs holds: what
// the core hands in is valid during the call; what a callback keeps across calls is its IStateful state.

/// <summary>What a plugin may ask of the run. A request is acted on at the next step boundary, after the step under way:
/// <see cref="RequestEvaluation"/> evaluates the validation split (as <c>eval_every</c> does), <see cref="RequestCheckpoint"/>
/// writes a resumable checkpoint, <see cref="RequestStop"/> ends the run (a study: the whole study) after a final evaluation
/// and checkpoint, recorded as stopped by the plugin with its reason. Requests not yet acted on are part of every
/// checkpoint, so a resumed run acts on them exactly as the uninterrupted run did.</summary>
/// <remarks>An evaluation or checkpoint asked for while an epoch ends waits for the step after it; asked for on an
/// epoch's last step, it is the epoch end's. A stop acts there too. Every context carries one: the plugin's own.</remarks>
public sealed class RunControl
{
    readonly Action<RunRequest> _sink;

    /// <param name="sink">Where the requests go (the host's; a test of a plugin may pass its own).</param>
    public RunControl(Action<RunRequest> sink) => _sink = sink ?? throw new ArgumentNullException(nameof(sink));

    /// <summary>Discards every request: the control of a context made outside a run (a test, a benchmark).</summary>
    public static RunControl None { get; } = new(_ => { });

    /// <summary>Ends the run at the next step boundary; <paramref name="reason"/> (one line) is recorded with it. The first
    /// stop asked for is the one recorded.</summary>
    public void RequestStop(string reason)
    {
        if (string.IsNullOrWhiteSpace(reason)) throw new ArgumentException("a stop needs a reason (one line, recorded with the run)", nameof(reason));
        _sink(new RunRequest(RunRequestKind.Stop, reason.ReplaceLineEndings(" ").Trim()));
    }

    /// <summary>Evaluates the validation split at the next step boundary.</summary>
    public void RequestEvaluation() => _sink(new RunRequest(RunRequestKind.Evaluation, null));

    /// <summary>Writes a resumable checkpoint at the next step boundary.</summary>
    public void RequestCheckpoint() => _sink(new RunRequest(RunRequestKind.Checkpoint, null));
}

/// <summary>What a request asks for.</summary>
public enum RunRequestKind { Stop, Evaluation, Checkpoint }

/// <summary>One request made through <see cref="RunControl"/>; <paramref name="Reason"/> is a stop's.</summary>
public sealed record RunRequest(RunRequestKind Kind, string? Reason);

/// <summary>
/// The log sink: named scalars a plugin records beside the core's metrics. A value logged during a step goes into that
/// step's row of the store's metrics (the step the store gives the update: updates after it), one outside a step into the
/// current step's, under the key <c>plugin/&lt;plugin&gt;/&lt;name&gt;</c>. A name logged twice during one step keeps the
/// last value; a hook outside a step (an evaluation's, a checkpoint's) writes a row for each call. The store writes them in batches with the core's rows (a resumed run keeps exactly one row per step),
/// mirrors them to TensorBoard, and <c>research runs show</c>, sweeps (<c>log:&lt;plugin&gt;/&lt;name&gt;</c>) and
/// <c>research plot curves</c> read them. A value that is not finite fails the run, naming the plugin.
/// </summary>
public interface IRunLog
{
    /// <summary>Records <paramref name="value"/> under <paramref name="name"/> (no spaces; slashes group names).</summary>
    void Scalar(string name, double value);

    /// <summary>Discards everything: the log of a context made outside a run.</summary>
    static IRunLog None { get; } = new NoLog();

    private sealed class NoLog : IRunLog
    {
        public void Scalar(string name, double value) { }
    }
}

/// <summary>What <see cref="ICallback.RunStart"/> and <see cref="ICallback.RunEnd"/> see.</summary>
/// <param name="Step">Optimizer updates the run has applied.</param>
/// <param name="TaskIndex">The task the loop is in (0 for a single run).</param>
/// <param name="Resumed">The run continues from a checkpoint in this process: a callback's state is already the
/// checkpoint's, and <see cref="ICallback.AfterCheckpoint"/> of that checkpoint is called again right after (what it
/// decided was not in the checkpoint yet).</param>
public sealed record RunContext(long Step, int TaskIndex, bool Resumed)
{
    public RunControl Control { get; init; } = RunControl.None;
    public IRunLog Log { get; init; } = IRunLog.None;
}

/// <summary>What <see cref="ICallback.EpochStart"/> and <see cref="ICallback.EpochEnd"/> see.</summary>
/// <param name="Step">Optimizer updates the run has applied.</param>
/// <param name="TaskIndex">The task the loop is in (0 for a single run).</param>
/// <param name="Epoch">The epoch of the task, from 0 (at its end: the epoch that ended, after its evaluation).</param>
public sealed record EpochContext(long Step, int TaskIndex, int Epoch)
{
    public RunControl Control { get; init; } = RunControl.None;
    public IRunLog Log { get; init; } = IRunLog.None;
}

/// <summary>What <see cref="ICallback.BeforeEvaluation"/> and <see cref="ICallback.AfterEvaluation"/> see.</summary>
/// <param name="Step">Optimizer updates the run has applied.</param>
/// <param name="TaskIndex">The task the loop is in (0 for a single run).</param>
/// <param name="Epoch">The epoch of the task the evaluation belongs to (at an epoch end, that epoch).</param>
/// <param name="Metrics">After the evaluation: its values by name (<c>val_loss</c>, <c>val_accuracy</c>, …, as the
/// schedule's <see cref="EvaluationPoint"/> holds them); empty before it.</param>
public sealed record EvaluationContext(long Step, int TaskIndex, int Epoch, IReadOnlyDictionary<string, double> Metrics)
{
    public RunControl Control { get; init; } = RunControl.None;
    public IRunLog Log { get; init; } = IRunLog.None;
}

/// <summary>What <see cref="ICallback.AfterCheckpoint"/> sees.</summary>
/// <param name="Step">Optimizer updates the run has applied.</param>
/// <param name="TaskIndex">The task the loop is in (0 for a single run).</param>
/// <param name="Name">The checkpoint's name (<c>step-000000012</c>, <c>best</c>, <c>final</c>, a study's stage).</param>
/// <param name="Path">Its folder, complete (written under a temporary name, then renamed).</param>
public sealed record CheckpointContext(long Step, int TaskIndex, string Name, string Path)
{
    public RunControl Control { get; init; } = RunControl.None;
    public IRunLog Log { get; init; } = IRunLog.None;
}

/// <summary>What <see cref="ICallback.BeforeForward"/> and <see cref="ICallback.AfterForward"/> see, once per micro-batch.</summary>
/// <param name="Step">As in <see cref="PenaltyContext.Step"/>: updates before the one this micro-batch belongs to.</param>
/// <param name="TaskIndex">Index of the task being trained.</param>
/// <param name="MicroBatch">The micro-batch's index in the accumulation window, from 0.</param>
/// <param name="Batch">The micro-batch the model reads (memory items mixed in included).</param>
/// <param name="Logits">After the forward pass: the model's logits, in the autograd graph (null before it).</param>
public sealed record ForwardContext(long Step, int TaskIndex, int MicroBatch, Batch Batch, Tensor? Logits)
{
    public RunControl Control { get; init; } = RunControl.None;
    public IRunLog Log { get; init; } = IRunLog.None;
}

/// <summary>What <see cref="ICallback.BeforeBackward"/> and <see cref="ICallback.AfterBackward"/> see, once per micro-batch.</summary>
/// <param name="Step">As in <see cref="ForwardContext.Step"/>.</param>
/// <param name="TaskIndex">Index of the task being trained.</param>
/// <param name="MicroBatch">As in <see cref="ForwardContext.MicroBatch"/>.</param>
/// <param name="Loss">The micro-batch's part of the window's loss, Σᵢℓᵢ/N with its loss terms, before loss scaling.</param>
public sealed record BackwardContext(long Step, int TaskIndex, int MicroBatch, double Loss)
{
    public RunControl Control { get; init; } = RunControl.None;
    public IRunLog Log { get; init; } = IRunLog.None;
}

/// <summary>
/// Hook points of a run (Hugging Face's <c>TrainerCallback</c>, Avalanche's strategy callbacks). Every member is optional;
/// the host calls the ones the class implements, through the same guard as every method call (a fault names the plugin,
/// its DLL, the member and the step). A callback reads what it is handed, logs through <c>Log</c> and asks through
/// <c>Control</c>; it changes nothing else of the run.
/// </summary>
/// <remarks>Order within a step: per micro-batch BeforeForward → AfterForward → BeforeBackward → AfterBackward; then the
/// update and the step observers. Around them: RunStart (also when a run resumes) → per epoch EpochStart … EpochEnd (after
/// the epoch's evaluation, before its checkpoint) → RunEnd (after the final checkpoint). BeforeEvaluation and
/// AfterEvaluation surround every evaluation of the validation split during training; AfterCheckpoint follows every
/// checkpoint written. A task start and end are <see cref="ITaskHooks"/>.</remarks>
public interface ICallback
{
    void RunStart(RunContext context) { }
    void RunEnd(RunContext context) { }
    void EpochStart(EpochContext context) { }
    void EpochEnd(EpochContext context) { }
    void BeforeEvaluation(EvaluationContext context) { }
    void AfterEvaluation(EvaluationContext context) { }
    void AfterCheckpoint(CheckpointContext context) { }
    void BeforeForward(ForwardContext context) { }
    void AfterForward(ForwardContext context) { }
    void BeforeBackward(BackwardContext context) { }
    void AfterBackward(BackwardContext context) { }
}
