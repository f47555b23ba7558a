using System.Text.Json;
using Research.Abstractions;
using static TorchSharp.torch;

namespace ResearchPlugin1;

/// <summary>The plugin's options, bound from its table in a config:
/// <code>[[callbacks]]
/// name = "research-plugin-1"
/// stop_after_steps = 100</code></summary>
public sealed record Options
{
    /// <summary>Asks the run to stop once it has taken this many steps (a study: counted across its tasks); 0 never stops.</summary>
    [Option(Min = 0)]
    public long StopAfterSteps { get; init; }
}

/// <summary>
/// A callback: logs <c>mean_loss</c>, the mean of every step's loss so far, at each step (the store's key
/// <c>plugin/research-plugin-1/mean_loss</c>, in TensorBoard and <c>research runs show</c>), and asks the run to stop after
/// <c>stop_after_steps</c> steps. The loss is the one the backward pass sees: the task loss with the loss terms, without
/// the penalties (a step's penalties are added after its micro-batches).
/// </summary>
/// <remarks>The count and the sum are state values (<see cref="IStateful.StateValues"/>), so a run resumed from a
/// checkpoint logs exactly what the uninterrupted run logged and stops at the same step: a count kept in a plain field
/// alone would restart from 0. Both are taken at a step boundary, where every checkpoint is written.</remarks>
[Plugin("research-plugin-1", Summary = "logs the running mean of the loss; stops after stop_after_steps steps")]
public sealed class Plugin(Options options) : ICallback, IStateful
{
    long _steps;     // steps begun
    double _total;   // Σ of their losses so far

    public void BeforeForward(ForwardContext context)
    {
        // A step may read several micro-batches (gradient accumulation): its first one begins it.
        if (context.MicroBatch != 0) return;
        _steps++;
        // Acted on at the boundary after this step, so the run ends with exactly StopAfterSteps steps.
        if (_steps == options.StopAfterSteps)
            context.Control.RequestStop($"{_steps} steps taken (stop_after_steps)");
    }

    public void AfterBackward(BackwardContext context)
    {
        // Each micro-batch's part is Σᵢℓᵢ/N of the window, so the parts add up to the step's loss; a name logged twice in a
        // step keeps its last value, which is the one after the step's last micro-batch.
        _total += context.Loss;
        context.Log.Scalar("mean_loss", _total / _steps);
    }

    // No tensors: the state is two numbers, kept as values below.
    public IReadOnlyDictionary<string, Tensor> StateDict() => new Dictionary<string, Tensor>();

    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state) { }

    // A double is stored in its shortest round-trip form: the resumed sum has the same bits.
    public IReadOnlyDictionary<string, object?> StateValues() => new Dictionary<string, object?> { ["steps"] = _steps, ["total"] = _total };

    public void LoadStateValues(IReadOnlyDictionary<string, JsonElement> values)
    {
        // Empty for a checkpoint written before this plugin kept values: start from 0 as a new run does.
        _steps = values.TryGetValue("steps", out var steps) ? steps.GetInt64() : 0;
        _total = values.TryGetValue("total", out var total) ? total.GetDouble() : 0;
    }
}
