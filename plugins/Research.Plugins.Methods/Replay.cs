using Research.Abstractions;
using static TorchSharp.torch;

namespace Research.Plugins.Methods;

public sealed record ReplayOptions
{
    /// <summary>Items the memory holds at most, over all tasks.</summary>
    [Option(Min = 1, Max = 10_000_000)]
    public int Budget { get; init; } = 500;
    /// <summary>r: memory items appended per current-task item in each micro-batch (1: half of each batch is replayed).</summary>
    [Option(Min = 0, Max = 100)]
    public double MixRatio { get; init; } = 1.0;
    /// <summary><c>class-balanced</c> (filled at task ends, equal items per class and task), <c>task-balanced</c> (filled at
    /// task ends, equal items per task, any targets: language-model windows) or <c>reservoir</c> (sampled from
    /// the stream of training items; any targets).</summary>
    public MemorySelection Selection { get; init; } = MemorySelection.ClassBalanced;
}

/// <summary>
/// Experience replay with a tiny episodic memory (Chaudhry et al. 2019, "On tiny episodic memories in continual
/// learning"; Rolnick et al. 2019, "Experience replay for continual learning"): a memory of at most <c>budget</c> items of
/// past tasks, of which round(r·B) are appended to every micro-batch of B current-task items, so the loss is
/// L = (Σ_{i∈current} ℓᵢ + Σ_{j∈memory} ℓⱼ) / (B + round(r·B)). No strength: r sets the memory's share of each batch.
/// Avalanche's ReplayPlugin appends batch_size_mem memory items to each batch of batch_size and averages over both:
/// r = batch_size_mem / batch_size (its default, equal sizes, is r = 1); its default storage balances tasks, as
/// selection = "task-balanced" does.
/// </summary>
/// <remarks>
/// In reservoir mode the memory samples the whole stream, the current task included, but only items of earlier tasks are
/// replayed: the first task trains as plain fine-tuning. In class- and task-balanced modes the memory is filled at each task end.
/// Each task end adds the probe row <c>replay_memory_items</c> = [items in memory].
/// </remarks>
[Plugin("replay", Summary = "experience replay: a memory of past items (class-balanced or reservoir) mixed into each batch")]
public sealed class Replay(ReplayOptions options) : IDataRole, ITaskHooks, IStateful
{
    readonly EpisodicMemory _memory = new(options.Selection, options.Budget);

    public double MixRatio => options.MixRatio;

    public long Count => _memory.Count;

    public Batch Sample(int items, Generator random) => _memory.Sample(items, random);

    public void Observe(Batch batch, int taskIndex, Generator random) => _memory.Observe(batch, taskIndex, random);

    public void TaskStart(TaskStartContext context) => _memory.Start(context.TaskIndex);

    public void TaskEnd(TaskEndContext context)
    {
        if (!context.IsLastTask) _memory.Fill(context);
        context.AddProbe("replay_memory_items", [_memory.Stored]);
    }

    public IReadOnlyDictionary<string, Tensor> StateDict() => StateEntries.Of(_memory.State());

    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state) => _memory.Load(state);
}
