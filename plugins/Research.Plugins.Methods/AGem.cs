using Research.Abstractions;
using static TorchSharp.torch;

namespace Research.Plugins.Methods;

public sealed record AGemOptions
{
    /// <summary>Items A-GEM's own memory holds at most (used when the run has no other data role).</summary>
    [Option(Min = 1, Max = 10_000_000)]
    public int Budget { get; init; } = 500;
    /// <summary>Memory items drawn at each step for the reference gradient g_ref.</summary>
    [Option(Min = 1, Max = 1_000_000)]
    public int ReferenceItems { get; init; } = 256;
    /// <summary><c>class-balanced</c>, <c>task-balanced</c> or <c>reservoir</c>, as for replay.</summary>
    public MemorySelection Selection { get; init; } = MemorySelection.ClassBalanced;
}

/// <summary>
/// Averaged GEM (Chaudhry, Ranzato, Rohrbach &amp; Elhoseiny 2019, "Efficient lifelong learning with A-GEM"): the update
/// may not increase the average loss on the episodic memory, to first order. With g the task-loss gradient and g_ref the
/// gradient of the loss on a random sample of memory items, when gᵀg_ref &lt; 0 the update uses the projection
/// g̃ = g − (gᵀg_ref / g_refᵀg_ref) g_ref, for which g̃ᵀg_ref = 0; otherwise g unchanged. The penalties' and loss terms'
/// gradients are added after the projection (the core's order). No strength: the projection is the paper's, unscaled.
/// Avalanche's AGEMPlugin applies the same rule to the whole gradient (penalties included) and keeps
/// patterns_per_experience items per task where ours keeps a budget over all tasks.
/// </summary>
/// <remarks>
/// The memory is the run's data role when one is configured (experience replay's), else A-GEM's own, which never mixes
/// items into the batches (mix ratio 0). Each task end adds the probe row <c>a_gem_projected_fraction</c> = [steps whose
/// gradient was projected / steps of the task].
/// </remarks>
[Plugin("a-gem", Summary = "averaged GEM: project the gradient so the loss on a memory sample does not increase")]
public sealed class AGem(AGemOptions options) : IGradientHook, IDataRole, ITaskHooks, IStateful
{
    readonly EpisodicMemory _memory = new(options.Selection, options.Budget);
    /// <summary>Updates of the current task, and those whose gradient was projected (0-d int64).</summary>
    Tensor? _steps, _projected;

    public double MixRatio => 0;

    public long Count => _memory.Count;

    public Batch Sample(int items, Generator random) => _memory.Sample(items, random);

    public void Observe(Batch batch, int taskIndex, Generator random) => _memory.Observe(batch, taskIndex, random);

    public void BeforeUpdate(GradientContext context)
    {
        _steps = StateEntries.Counter(StateEntries.Value(_steps) + 1);
        IMemory memory = context.Memory ?? this;
        if (memory.Count == 0) return;
        var reference = memory.Sample(options.ReferenceItems, context.Random);
        var g = context.TaskGradient;
        var gRef = context.GradientOf([reference]);
        double dot = 0, refNorm2 = 0;
        for (var k = 0; k < g.Count; k++)
        {
            dot += g[k].mul(gRef[k]).sum(type: ScalarType.Float64).item<double>();
            refNorm2 += gRef[k].square().sum(type: ScalarType.Float64).item<double>();
        }
        if (dot < 0)
        {
            using var _ = no_grad();
            for (var k = 0; k < g.Count; k++) g[k].add_(gRef[k], alpha: -dot / refNorm2);   // g̃ = g − (gᵀg_ref / ‖g_ref‖²) g_ref
            _projected = StateEntries.Counter(StateEntries.Value(_projected) + 1);
        }
    }

    public void TaskStart(TaskStartContext context) => _memory.Start(context.TaskIndex);

    public void TaskEnd(TaskEndContext context)
    {
        var steps = StateEntries.Value(_steps);
        context.AddProbe("a_gem_projected_fraction", [steps == 0 ? 0 : (double)StateEntries.Value(_projected) / steps]);
        _steps = StateEntries.Counter(0);
        _projected = StateEntries.Counter(0);
        if (!context.IsLastTask) _memory.Fill(context);
    }

    public IReadOnlyDictionary<string, Tensor> StateDict() => StateEntries.Of(
        _memory.State(), StateEntries.One("steps", _steps), StateEntries.One("projected", _projected));

    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state)
    {
        _memory.Load(state);
        _steps = StateEntries.Entry(state, "steps");
        _projected = StateEntries.Entry(state, "projected");
    }
}
