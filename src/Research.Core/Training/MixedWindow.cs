using Research.Abstractions;
using static TorchSharp.torch;

namespace Research.Core.Training;

/// <summary>
/// An accumulation window as the step trains it (<see cref="MethodSet.WithMemory"/>): the micro-batches the model reads
/// and, when the run's mixing data role put memory items in any of them, <see cref="Memory"/>: what the step needs to
/// weight them (<see cref="IDataRole.LossWeight"/>), the separate replay batches, and the tensors the memory carries that
/// the task's batches do not. A struct, so a window without memory costs no allocation.
/// </summary>
public readonly record struct MixedWindow(IReadOnlyList<Batch> Batches, WindowMemory? Memory = null);

/// <summary>The memory items of a window: one part per micro-batch (null where none were drawn), in the window's order.</summary>
/// <param name="Mode">Appended rows or separate replay batches.</param>
/// <param name="Weight">w, the weight of the memory items' task loss.</param>
public sealed record WindowMemory(ReplayMode Mode, double Weight, IReadOnlyList<MemoryPart?> Parts);

/// <summary>The memory items of one micro-batch.</summary>
/// <param name="Offset">Append: the first memory row of the micro-batch (its current-task items come before); Separate: 0.</param>
/// <param name="Items">Append: the memory rows, [Offset, Offset + Items) of the micro-batch; Separate: the replay batch's rows.</param>
/// <param name="Replay">Separate: the replay batch (the task's tensors only); Append: null.</param>
/// <param name="Extras">The memory's tensors the task's batches do not have, [Items, …]; never given to the model.</param>
public sealed record MemoryPart(long Offset, long Items, Batch? Replay, IReadOnlyDictionary<string, Tensor> Extras);
