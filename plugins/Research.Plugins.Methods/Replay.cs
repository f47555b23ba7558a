using Research.Abstractions;
using static TorchSharp.torch;

namespace Research.Plugins.Methods;

public sealed record ReplayOptions : IValidatable
{
    /// <summary>Items the memory holds at most, over all tasks.</summary>
    [Option(Min = 1, Max = 10_000_000)]
    public int Budget { get; init; } = 500;
    /// <summary>r: memory items per current-task item in each micro-batch, appended (1: half of each batch is replayed) or,
    /// with mode = "separate" and no replay_batch_size, the replay batch's round(r·B); 0: nothing is replayed.</summary>
    [Option(Min = 0, Max = 100)]
    public double MixRatio { get; init; } = 1.0;
    /// <summary><c>class-balanced</c> (filled at task ends, equal items per class and task), <c>task-balanced</c> (filled at
    /// task ends, equal items per task, any targets: language-model windows) or <c>reservoir</c> (sampled from
    /// the stream of training items; any targets).</summary>
    public MemorySelection Selection { get; init; } = MemorySelection.ClassBalanced;
    /// <summary>w: the weight of the memory items' loss. <c>append</c>: L = (Σ_cur ℓ + w·Σ_mem ℓ) / N over current and
    /// memory items together; <c>separate</c>: L = Σ_cur ℓ / N_cur + w·Σ_mem ℓ / N_mem (1: every item alike, as before 3.0).</summary>
    [Option(Min = 0, Max = 1000, AddedIn = "3.0")]
    public double LossWeight { get; init; } = 1.0;
    /// <summary><c>append</c> (memory items appended to each micro-batch, one loss over both) or <c>separate</c> (a replay
    /// batch beside each micro-batch, its loss normalised by its own items and added with weight w).</summary>
    [Option(AddedIn = "3.0")]
    public ReplayMode Mode { get; init; } = ReplayMode.Append;
    /// <summary>m: memory items in each replay batch with mode = "separate"; 0: round(r·B), as many as append would add.</summary>
    [Option(Min = 0, Max = 1_000_000, AddedIn = "3.0")]
    public int ReplayBatchSize { get; init; }

    public IEnumerable<OptionError> Validate()
    {
        if (Mode == ReplayMode.Append && ReplayBatchSize != 0) yield return new("replay_batch_size", "applies to mode = \"separate\" only");
    }
}

/// <summary>
/// Experience replay with a tiny episodic memory (Chaudhry et al. 2019, "On tiny episodic memories in continual
/// learning"; Rolnick et al. 2019, "Experience replay for continual learning"): a memory of at most <c>budget</c> items of
/// past tasks, of which round(r·B) are appended to every micro-batch of B current-task items, so the loss is
/// L = (Σ_{i∈current} ℓᵢ + w·Σ_{j∈memory} ℓⱼ) / (B + round(r·B)) (w = 1 by default); or, with <c>mode = "separate"</c>, a
/// replay batch of m items beside each micro-batch, L = Σ_{i∈current} ℓᵢ / B + w·Σ_{j∈memory} ℓⱼ / m (Avalanche's separate
/// replay batch). Each N counts the items of the whole accumulation window (see <see cref="IDataRole"/>). No strength: r
/// sets the memory's share of each batch. Avalanche's ReplayPlugin appends batch_size_mem memory items to each batch of
/// batch_size and averages over both: r = batch_size_mem / batch_size (its default, equal sizes, is r = 1); its default
/// storage balances tasks, as selection = "task-balanced" does.
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

    public double LossWeight => options.LossWeight;

    public ReplayMode Mode => options.Mode;

    public int ReplayBatchSize => options.ReplayBatchSize;

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
