using Research.Abstractions;
namespace Research.Core.Memory;

/// <summary>The parts of full fine-tuning's memory that the estimate counts separately.</summary>
public enum Component { Weights, Gradients, MasterCopy, OptimizerMoments, Activations }

/// <summary>One part of the memory, in bytes.</summary>
/// <param name="Kind">Which part.</param>
/// <param name="Bytes">Its size in bytes.</param>
/// <param name="BytesPerParameter">For model state, bytes per parameter; null for activations, which depend on the shape instead.</param>
public readonly record struct MemoryComponent(Component Kind, double Bytes, int? BytesPerParameter);

/// <summary>
/// Memory of full fine-tuning of a model of P parameters, by component:
/// <code>
///   model state  = P × (weights + gradients + fp32 master copy + optimizer state) bytes per parameter
///   activations  = layers × per-layer activation bytes (Korthikanti et al. 2022; see <see cref="TransformerShape"/>)
///   total        = model state + activations
/// </code>
/// Mixed precision with Adam(W) is 2 + 2 + 4 + 4 + 4 = 16 B/param (ZeRO, Rajbhandari et al. 2020, §3.1: "16Ψ
/// bytes"), so 7e9 parameters hold 112 GB before any activation; fp32 with Adam(W) is 4 + 4 + 8 = 16 B/param as well.
/// Not counted: temporary buffers, allocator fragmentation, the runtime's own context.
/// </summary>
/// <param name="Parameters">P &gt; 0, the number of trained parameters (all of them: this is full fine-tuning).</param>
/// <param name="Precision">How weights, gradients and the master copy are stored.</param>
/// <param name="Optimizer">The state the optimizer keeps per parameter.</param>
/// <param name="Shape">The transformer's shape; without it activations are not estimated (counted as 0).</param>
/// <param name="Recompute">Full activation recomputation: keep only each layer's input.</param>
public sealed record MemoryEstimate(double Parameters, Precision Precision, OptimizerState Optimizer, TransformerShape? Shape = null, bool Recompute = false)
{
    public double Parameters { get; } = Parameters > 0 && double.IsFinite(Parameters)
        ? Parameters : throw new ArgumentOutOfRangeException(nameof(Parameters), Parameters, "the parameter count must be > 0");

    public double Weights => Parameters * Precision.WeightBytes;
    public double Gradients => Parameters * Precision.GradientBytes;
    public double MasterCopy => Parameters * Precision.MasterBytes;
    public double OptimizerMoments => Parameters * Optimizer.BytesPerParameter;
    public double Activations => Shape?.ActivationBytes(Recompute) ?? 0;

    /// <summary>Bytes per parameter of weights, gradients, master copy and optimizer state together (16 for AdamW, mixed or fp32).</summary>
    public int ModelStateBytesPerParameter => Precision.BytesPerParameter + Optimizer.BytesPerParameter;

    /// <summary>Everything that scales with P: P × <see cref="ModelStateBytesPerParameter"/>.</summary>
    public double ModelState => Parameters * ModelStateBytesPerParameter;

    public double Total => ModelState + Activations;

    /// <summary>The parts in the order the command prints them; activations only when the shape is known.</summary>
    public IReadOnlyList<MemoryComponent> Components =>
    [
        new(Component.Weights, Weights, Precision.WeightBytes),
        new(Component.Gradients, Gradients, Precision.GradientBytes),
        new(Component.MasterCopy, MasterCopy, Precision.MasterBytes),
        new(Component.OptimizerMoments, OptimizerMoments, Optimizer.BytesPerParameter),
        .. Shape is null ? Array.Empty<MemoryComponent>() : [new MemoryComponent(Component.Activations, Activations, null)],
    ];
}
