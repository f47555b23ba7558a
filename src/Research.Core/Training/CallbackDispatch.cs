using Research.Abstractions;
using static TorchSharp.torch;

namespace Research.Core.Training;

/// <summary>
/// The run's callbacks (<see cref="ICallback"/>) by hook point. Which members a class implements is asked once, when the
/// run's methods are made (its interface map), and each hook point holds only the methods that implement it: a hook point
/// nobody implements costs a length check, so a run without callbacks takes the step of a run without them. Every call
/// goes through its method's guard (the ownership rule; a fault names the plugin, its DLL, the member and the step) with
/// the method's own <see cref="RunControl"/> and <see cref="IRunLog"/>.
/// </summary>
/// <remarks>The hooks outside a step write what was logged at the loop's current step right after they ran; the loop is
/// the one <see cref="RunStart"/> was given.</remarks>
public sealed class CallbackDispatch
{
    readonly GuardedMethod[] _runStart, _runEnd, _epochStart, _epochEnd, _beforeEvaluation, _afterEvaluation, _afterCheckpoint,
        _beforeForward, _afterForward, _beforeBackward, _afterBackward;
    IRunLoop? _loop;

    public CallbackDispatch(IReadOnlyList<GuardedMethod> methods)
    {
        foreach (var m in methods) m.Attach(Signals);
        GuardedMethod[] Implementing(string member) => methods.Where(m => m.Callback != null && m.Implements(member)).ToArray();
        _runStart = Implementing(nameof(ICallback.RunStart));
        _runEnd = Implementing(nameof(ICallback.RunEnd));
        _epochStart = Implementing(nameof(ICallback.EpochStart));
        _epochEnd = Implementing(nameof(ICallback.EpochEnd));
        _beforeEvaluation = Implementing(nameof(ICallback.BeforeEvaluation));
        _afterEvaluation = Implementing(nameof(ICallback.AfterEvaluation));
        _afterCheckpoint = Implementing(nameof(ICallback.AfterCheckpoint));
        _beforeForward = Implementing(nameof(ICallback.BeforeForward));
        _afterForward = Implementing(nameof(ICallback.AfterForward));
        _beforeBackward = Implementing(nameof(ICallback.BeforeBackward));
        _afterBackward = Implementing(nameof(ICallback.AfterBackward));
    }

    /// <summary>The requests and logged values of the run's methods.</summary>
    public RunSignals Signals { get; } = new();

    /// <summary>The members of <see cref="ICallback"/> a class implements itself (not the interface's empty defaults).</summary>
    public static IReadOnlySet<string> Implemented(Type type)
    {
        if (!typeof(ICallback).IsAssignableFrom(type)) return new HashSet<string>();
        var map = type.GetInterfaceMap(typeof(ICallback));
        return map.InterfaceMethods.Where((_, i) => map.TargetMethods[i].DeclaringType != typeof(ICallback))
            .Select(m => m.Name).ToHashSet(StringComparer.Ordinal);
    }

    /// <summary>The run starts in this process (<paramref name="resumedFrom"/>: the checkpoint it continues from, whose
    /// <see cref="ICallback.AfterCheckpoint"/> is called again: what the callbacks decided there came after its state).</summary>
    public void RunStart(IRunLoop loop, string? resumedFrom)
    {
        _loop = loop;
        foreach (var m in _runStart)
            m.Call(nameof(ICallback.RunStart), loop.Step, new RunContext(loop.Step, loop.Phase, resumedFrom != null) { Log = m.Log, Control = m.Control },
                static (c, x) => c.RunStart(x));
        Flush();
        if (resumedFrom != null) AfterCheckpoint(Path.GetFileName(Path.TrimEndingDirectorySeparator(resumedFrom)), resumedFrom);
    }

    /// <summary>The run ended: after its final checkpoint.</summary>
    public void RunEnd()
    {
        var (step, phase) = Where();
        foreach (var m in _runEnd)
            m.Call(nameof(ICallback.RunEnd), step, new RunContext(step, phase, false) { Log = m.Log, Control = m.Control }, static (c, x) => c.RunEnd(x));
        Flush();
    }

    public void EpochStart(int epoch) => Epoch(_epochStart, nameof(ICallback.EpochStart), epoch, static (c, x) => c.EpochStart(x));
    public void EpochEnd(int epoch) => Epoch(_epochEnd, nameof(ICallback.EpochEnd), epoch, static (c, x) => c.EpochEnd(x));

    void Epoch(GuardedMethod[] methods, string member, int epoch, Action<ICallback, EpochContext> call)
    {
        var (step, phase) = Where();
        foreach (var m in methods) m.Call(member, step, new EpochContext(step, phase, epoch) { Log = m.Log, Control = m.Control }, call);
        Flush();
    }

    /// <summary>An evaluation of the validation split begins: it answers the evaluation requests made so far.</summary>
    public void BeforeEvaluation(int epoch)
    {
        Signals.EvaluationStarts();
        Evaluation(_beforeEvaluation, nameof(ICallback.BeforeEvaluation), epoch, new Dictionary<string, double>(), static (c, x) => c.BeforeEvaluation(x));
    }

    public void AfterEvaluation(int epoch, IReadOnlyDictionary<string, double> metrics) =>
        Evaluation(_afterEvaluation, nameof(ICallback.AfterEvaluation), epoch, metrics, static (c, x) => c.AfterEvaluation(x));

    void Evaluation(GuardedMethod[] methods, string member, int epoch, IReadOnlyDictionary<string, double> metrics, Action<ICallback, EvaluationContext> call)
    {
        var (step, phase) = Where();
        foreach (var m in methods) m.Call(member, step, new EvaluationContext(step, phase, epoch, metrics) { Log = m.Log, Control = m.Control }, call);
        Flush();
    }

    /// <summary>A checkpoint was written (or the run resumed from it).</summary>
    public void AfterCheckpoint(string name, string path)
    {
        var (step, phase) = Where();
        foreach (var m in _afterCheckpoint)
            m.Call(nameof(ICallback.AfterCheckpoint), step, new CheckpointContext(step, phase, name, path) { Log = m.Log, Control = m.Control },
                static (c, x) => c.AfterCheckpoint(x));
        Flush();
    }

    /// <summary>Before a micro-batch's forward pass (<paramref name="step"/>: the step's updates before it).</summary>
    public void BeforeForward(long step, int task, int microBatch, Batch batch)
    {
        foreach (var m in _beforeForward)
            m.Call(nameof(ICallback.BeforeForward), step, new ForwardContext(step, task, microBatch, batch, null) { Log = m.Log, Control = m.Control },
                static (c, x) => c.BeforeForward(x));
    }

    public void AfterForward(long step, int task, int microBatch, Batch batch, Tensor logits)
    {
        foreach (var m in _afterForward)
            m.Call(nameof(ICallback.AfterForward), step, new ForwardContext(step, task, microBatch, batch, logits) { Log = m.Log, Control = m.Control },
                static (c, x) => c.AfterForward(x));
    }

    public void BeforeBackward(long step, int task, int microBatch, double loss) =>
        Backward(_beforeBackward, nameof(ICallback.BeforeBackward), step, task, microBatch, loss, static (c, x) => c.BeforeBackward(x));

    public void AfterBackward(long step, int task, int microBatch, double loss) =>
        Backward(_afterBackward, nameof(ICallback.AfterBackward), step, task, microBatch, loss, static (c, x) => c.AfterBackward(x));

    static void Backward(GuardedMethod[] methods, string member, long step, int task, int microBatch, double loss, Action<ICallback, BackwardContext> call)
    {
        foreach (var m in methods) m.Call(member, step, new BackwardContext(step, task, microBatch, loss) { Log = m.Log, Control = m.Control }, call);
    }

    /// <summary>Values logged so far go to the store at the loop's current step (before a checkpoint's watermark, too).</summary>
    public void Flush()
    {
        if (_loop is { } loop) Signals.Flush(loop.Store, loop.RunId, loop.Step);
    }

    (long Step, int Phase) Where() => _loop is { } loop ? (loop.Step, loop.Phase) : (0, 0);
}
