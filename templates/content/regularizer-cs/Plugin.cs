using Research.Abstractions;
using static TorchSharp.torch;

namespace ResearchPlugin1;

/// <summary>The plugin's options, bound from its table in a config:
/// <code>[[methods]]
/// name = "research-plugin-1"
/// strength = 0.1</code></summary>
public sealed record Options
{
    /// <summary>α in R(θ) = α/2 ‖θ − θ_s‖². Declared once: the host refuses other values, naming the key and the file.</summary>
    [Option(Min = 0)]
    public double Strength { get; init; } = 0.01;
}

/// <summary>
/// A penalty toward the weights at the start of the current task: R(θ) = α/2 Σ ‖θ − θ_s‖², added to the task loss
/// (its gradient α(θ − θ_s) flows through the optimizer like the task's). Three roles: <see cref="IPenalty"/> gives the
/// term at each step, <see cref="ITaskHooks"/> takes the anchor when a task starts, and <see cref="IStateful"/> keeps
/// the anchor in checkpoints, so a resumed run continues with the same one.
/// </summary>
[Plugin("research-plugin-1", Summary = "α/2 ‖θ − θ at the start of the task‖²")]
public sealed class Plugin(Options options) : IPenalty, ITaskHooks, IStateful
{
    // The host keeps the tensors StateDict returns alive across steps and frees the ones dropped from it.
    Dictionary<string, Tensor> _anchor = [];

    public void TaskStart(TaskStartContext context)
    {
        using var _ = no_grad();
        _anchor = context.Parameters.ToDictionary(p => p.Name, p => p.Value.detach().to(ScalarType.Float32).clone());
    }

    public Tensor? Penalty(PenaltyContext context)
    {
        if (_anchor.Count == 0 || options.Strength == 0) return null;
        Tensor? sum = null;
        foreach (var p in context.Parameters)
        {
            var term = (p.Value - _anchor[p.Name]).square().sum();
            sum = sum is null ? term : sum + term;
        }
        return sum?.mul(options.Strength / 2);
    }

    public IReadOnlyDictionary<string, Tensor> StateDict() => _anchor;

    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state) => _anchor = state.ToDictionary(kv => kv.Key, kv => kv.Value);
}
