using Research.Abstractions;
using static TorchSharp.torch;

namespace Research.Plugins.Methods;

/// <summary>Which gradient SI's path integral ωₖ += −gₖΔθₖ uses.</summary>
public enum SiGradient
{
    /// <summary>∇ of the task loss alone (<see cref="StepContext.TaskGradient"/>): Zenke et al.'s importance is the
    /// decrease of the task's own loss, so the penalty's pull does not count as learning the task.</summary>
    Task,
    /// <summary>The gradient the update used (<see cref="StepContext.TotalGradient"/>: penalties, loss terms, clipping
    /// included), as some reimplementations do.</summary>
    Total,
}

public sealed record SiOptions
{
    /// <summary>c in R = c Σₖ Ωₖ(θₖ − θ*ₖ)² (no ½), Zenke et al.'s c; Avalanche's <c>si_lambda</c> = 2c.</summary>
    [Option(Min = 0)]
    public double C { get; init; } = 0.1;
    /// <summary>ξ, the damping in Ωₖ += ωₖ / ((Δₖ)² + ξ): it bounds the importance of a parameter that barely moved.</summary>
    [Option(Min = 0, MinExclusive = true)]
    public double Xi { get; init; } = 0.1;
    /// <summary><c>task</c> (the task loss alone, as in the paper) or <c>total</c> (the gradient the update used).</summary>
    public SiGradient Gradient { get; init; } = SiGradient.Task;
}

/// <summary>
/// Synaptic Intelligence (Zenke, Poole &amp; Ganguli 2017, "Continual learning through synaptic intelligence").
/// Along the training path of a task, each update's contribution to the loss decrease is −gₖ(t)Δθₖ(t) for parameter k,
/// so the path integral ωₖ = Σₜ −gₖ(t)Δθₖ(t) is the loss decrease SI attributes to θₖ. At the end of the task, with
/// Δₖ = θ*ₖ − θₖ(start), the importance accumulates Ωₖ += ωₖ / (Δₖ² + ξ), ω is reset and the next task pays
/// R(θ) = c Σₖ Ωₖ(θₖ − θ*ₖ)², gradient 2cΩ(θ − θ*). Strength convention: c is the paper's c, in the paper's surrogate
/// loss (no ½). Avalanche's SynapticIntelligencePlugin adds si_lambda/2·Σ Ω(θ − θ*)² with its eps = ξ, the gradient of
/// the whole loss (gradient = "total") and Ω clipped at 0.001: si_lambda = 2c where no Ωₖ exceeds 0.001.
/// </summary>
/// <remarks>Each task end adds the probe row <c>si_path_integral</c> = [Σₖ ωₖ], the whole loss decrease the task's path
/// accounts for (before the reset).</remarks>
[Plugin("si", Summary = "synaptic intelligence: c Σ Ω(θ − θ*)², Ω from the path integral of −g·Δθ")]
public sealed class Si(SiOptions options) : IPenalty, IStepObserver, ITaskHooks, IStateful
{
    /// <summary>θ at the start of the current task.</summary>
    Dictionary<string, Tensor>? _start;
    /// <summary>ω, the running path integral of the current task.</summary>
    Dictionary<string, Tensor>? _omega;
    /// <summary>Ω, the importance accumulated over finished tasks.</summary>
    Dictionary<string, Tensor>? _importance;
    /// <summary>θ*, the weights at the end of the latest finished task.</summary>
    Dictionary<string, Tensor>? _anchor;

    public Tensor? Penalty(PenaltyContext context)
    {
        if (_anchor is null || options.C == 0) return null;
        return SquaredDistance.Sum(context.Parameters, _anchor, _importance).mul(options.C);
    }

    public void TaskStart(TaskStartContext context)
    {
        _start ??= SquaredDistance.Snapshot(context.Parameters);
        _omega ??= Zeros(context.Parameters);
    }

    public void AfterStep(StepContext context)
    {
        var gradients = options.Gradient == SiGradient.Task ? context.TaskGradient : context.TotalGradient;
        _omega ??= Zeros(context.Parameters);
        using var _ = no_grad();
        for (var k = 0; k < context.Parameters.Count; k++)
            _omega[context.Parameters[k].Name].addcmul_(gradients[k], context.Deltas[k], value: -1);   // ωₖ += −gₖΔθₖ
    }

    public void TaskEnd(TaskEndContext context)
    {
        _omega ??= Zeros(context.Parameters);
        context.AddProbe("si_path_integral", [_omega.Values.Sum(w => w.sum(type: ScalarType.Float64).item<double>())]);
        if (context.IsLastTask) return;
        if (_start is null)
            throw new InvalidOperationException("si: a task ended that never started (TaskStart was not called), so θ at its start is unknown");
        var end = SquaredDistance.Snapshot(context.Parameters);
        _importance ??= Zeros(context.Parameters);
        using (no_grad())
            foreach (var (name, omega) in _omega)
            {
                var moved = end[name] - _start[name];
                _importance[name].add_(omega / (moved.square() + options.Xi));   // Ωₖ += ωₖ / (Δₖ² + ξ)
            }
        _anchor = end;
        _start = end.ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        _omega = Zeros(context.Parameters);
    }

    static Dictionary<string, Tensor> Zeros(IReadOnlyList<NamedParameter> parameters) =>
        parameters.ToDictionary(p => p.Name, p => zeros_like(p.Value, dtype: ScalarType.Float32));

    public IReadOnlyDictionary<string, Tensor> StateDict() => StateEntries.Of(
        StateEntries.Prefixed("start", _start), StateEntries.Prefixed("omega", _omega),
        StateEntries.Prefixed("importance", _importance), StateEntries.Prefixed("anchor", _anchor));

    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state)
    {
        _start = StateEntries.Part(state, "start");
        _omega = StateEntries.Part(state, "omega");
        _importance = StateEntries.Part(state, "importance");
        _anchor = StateEntries.Part(state, "anchor");
    }
}
