namespace Research.Core.Training;

/// <summary>What the trainer tells the outside while it runs (console, tests).</summary>
public interface ITrainingObserver
{
    void Started(string runDir, long totalSteps) { }
    void Step(long step, long totalSteps, double loss, double learningRate, double itemsPerSecond) { }
    void EpochEnded(int epoch, long step, IReadOnlyDictionary<string, EvalResult> results) { }
    void Message(string text) { }
    /// <summary>Why the process is about to end with a failure it cannot unwind from (the watchdog, a plugin's exit).</summary>
    void Failed(string text) { }
}

/// <summary>Discards everything.</summary>
public sealed class SilentObserver : ITrainingObserver;
