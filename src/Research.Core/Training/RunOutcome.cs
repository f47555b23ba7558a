using Research.Abstractions;

namespace Research.Core.Training;

/// <summary>The result of a run: where it lives, the last evaluation by split name, and for a study its evaluation
/// record and forgetting metrics.</summary>
/// <param name="MetricFailures">Metrics that threw (plugin, DLL, message); the others were computed and stored.</param>
public sealed record RunOutcome(
    string RunDir, string RunId, string WeightsPath, IReadOnlyDictionary<string, EvalResult> Final,
    EvaluationRecord? Record, IReadOnlyList<(string Name, MetricValue Value)> Metrics, IReadOnlyList<string> MetricFailures);
