using static TorchSharp.torch;

namespace Research.Abstractions;

/// <summary>How the mixing data role's memory items reach training (<see cref="IDataRole.Mode"/>). (Contract 3.0.)</summary>
public enum ReplayMode
{
    /// <summary>round(r·B) memory items are appended to each micro-batch of B current-task items, so current and memory
    /// items share one forward pass and one normalisation: L = (Σ_{i∈cur} ℓᵢ + w·Σ_{j∈mem} ℓⱼ) / N, N the counted items
    /// (current and memory) of the whole accumulation window. With w = 1 this is 2.x's replay.</summary>
    Append,

    /// <summary>Each micro-batch of current-task items is paired with a replay batch of m memory items that the model
    /// reads in a forward pass of its own; the two losses are normalised apart and added with weight w:
    /// L = Σ_{i∈cur} ℓᵢ / N_cur + w·Σ_{j∈mem} ℓⱼ / N_mem, each N counted over the whole accumulation window (the
    /// current items of all micro-batches, the memory items of all replay batches), so a window of k micro-batches equals
    /// one batch of the same current items with one replay batch of the same memory items (DER, Buzzega et al. 2020;
    /// Avalanche's separate replay batch).</summary>
    Separate,
}

/// <summary>
/// The memory items of a batch the model read, as a loss term sees them (<see cref="LossTermContext.Memory"/>): in
/// <see cref="ReplayMode.Append"/> mode the rows appended to a micro-batch, in <see cref="ReplayMode.Separate"/> mode the
/// whole replay batch. (Contract 3.0.)
/// </summary>
/// <param name="Mode">How the items reached training.</param>
/// <param name="Offset">The first row of <see cref="LossTermContext.Batch"/> and <see cref="LossTermContext.Logits"/> that
/// is a memory item (the current-task items come before it; 0 for a replay batch). The memory items are the rows
/// [Offset, Offset + Items.Size).</param>
/// <param name="Items">Those rows of the batch: the tensors the task's batches have (the model read them); views, valid
/// during the call.</param>
/// <param name="Logits">The model's fp32 logits on those rows, in the autograd graph (rows of
/// <see cref="LossTermContext.Logits"/>).</param>
/// <param name="Extras">The tensors the memory's items carry and the task's batches do not (DER's logits stored at
/// insertion), by name, [m, …] in the rows' order. The core took them out of the batch before the model read it: no model
/// and no other role sees them. Empty when the memory carries none.</param>
public sealed record MemoryItems(ReplayMode Mode, long Offset, Batch Items, Tensor Logits, IReadOnlyDictionary<string, Tensor> Extras);
