using Research.Core.Checkpoints;
using Research.Core.Data;

namespace Research.Core.Training;

public static partial class Trainer
{
    /// <summary>The loop's stops: early stopping's and a plugin's, and the plugins' requests at a step boundary.</summary>
    sealed partial class Loop
    {
        /// <summary>Records why the phase stops, at once, so every checkpoint written after it knows the phase is over.</summary>
        string Stopped(string reason)
        {
            _stops.Add(new PhaseStop(_phase, reason));
            observer.Message((_study ? $"task {_phase}: " : "") + reason);
            store.StopReason(runId, StopText(_stops, _study));
            return reason;
        }

        /// <summary>
        /// The plugins' requests at a step boundary (<see cref="RunSignals"/>): an evaluation (with its best checkpoint and
        /// early stopping), a checkpoint unless one is written here anyway, a stop after a final evaluation (unless this
        /// step was just evaluated) — a study's stop ends the study. At an epoch's end the epoch's evaluation came first, so
        /// an evaluation asked for since waits for the next step. Returns why the phase stops.
        /// </summary>
        string? Requested(TaskData data, bool checkpointed, bool epochEnd)
        {
            var (stopBy, reason, evaluate, checkpoint) = run.Methods.Signals.Take(keepEvaluation: epochEnd);
            bool evaluated = _evaluations.Count > 0 && _evaluations[^1].Step == Step && _evaluations[^1].Phase == _phase;
            string? early = null;
            if (evaluate || (stopBy != null && !evaluated)) { Evaluate(data); early = Stopping(); }
            if (stopBy != null) return Stopped(run.Methods.Signals.Halt(stopBy, reason!, Step));
            if (checkpoint && !checkpointed && early is null) WriteResumable(Stage.Training);
            return early;
        }
    }
}
