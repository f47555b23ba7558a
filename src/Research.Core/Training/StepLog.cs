using System.Diagnostics;
using Research.Core.Tracking;

namespace Research.Core.Training;

/// <summary>What the store records of the steps and evaluations: the pre-clip gradient norm and the plugins' logged values at
/// every step; loss, learning rate, throughput (and the loss scaler's state) every <c>log_every</c> windows and at every
/// skipped step.</summary>
sealed class StepLog(RunStore store, string runId, ITrainingObserver observer, RunComponents run)
{
    readonly Stopwatch _clock = Stopwatch.StartNew();
    long _items;

    /// <param name="task">A study's task (recorded as the metric <c>task</c>); null in a single run.</param>
    public void Record(long step, long windows, StepOutcome result, double lr, long skipped, int? task)
    {
        _items += result.Items;
        store.Metric(runId, step, "grad_norm", result.GradNorm);
        // What the plugins logged during the step, in the step's row (every step: a plugin logs at its own pace).
        run.Methods.Signals.Flush(store, runId, step);
        if (windows % run.Config.Train.LogEvery != 0 && result.Applied) return;
        var seconds = _clock.Elapsed.TotalSeconds;
        var throughput = seconds > 0 ? _items / seconds : 0;
        _clock.Restart(); _items = 0;
        store.Metric(runId, step, "train_loss", result.Loss);
        store.Metric(runId, step, "lr", lr);
        store.Metric(runId, step, "items_per_second", throughput);
        if (task is { } t) store.Metric(runId, step, "task", t);
        if (run.Precision.Scaler != null)
        {
            store.Metric(runId, step, "loss_scale", result.LossScale);
            store.Metric(runId, step, "skipped_steps", skipped);
        }
        observer.Step(step, run.TotalSteps, result.Loss, lr, throughput);
    }

    /// <summary>An evaluation's splits, with a language model's perplexity and bits per byte as metrics.</summary>
    public static void Evaluation(RunStore store, string runId, long step, int epoch, string phase, IReadOnlyDictionary<string, EvalResult> results)
    {
        foreach (var (split, r) in results)
        {
            store.Evaluation(runId, step, epoch, phase, split, r.Loss, r.Accuracy, r.Items);
            if (!r.IsLanguageModel) continue;
            store.Metric(runId, step, $"{split}_perplexity", r.Perplexity);
            store.Metric(runId, step, $"{split}_bits_per_byte", r.BitsPerByte);
        }
    }
}
