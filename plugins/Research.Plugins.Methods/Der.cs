using System.Text.Json;
using Research.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Plugins.Methods;

public sealed record DerOptions
{
    /// <summary>Items the reservoir holds at most, over all tasks.</summary>
    [Option(Min = 1, Max = 10_000_000)]
    public int Budget { get; init; } = 500;
    /// <summary>α: the weight of matching the stored logits, α·Σ_j mean_c (h(x_j)_c − z_j,c)² / N_mem.</summary>
    [Option(Min = 0, Max = 1000)]
    public double Alpha { get; init; } = 0.1;
    /// <summary>β: the weight of the memory items' cross-entropy on their targets (0: DER without the ++).</summary>
    [Option(Min = 0, Max = 1000)]
    public double Beta { get; init; } = 0.5;
    /// <summary>r: replay items per current-task item, m = round(r·B) (unless replay_batch_size is given).</summary>
    [Option(Min = 0, MinExclusive = true, Max = 100)]
    public double MixRatio { get; init; } = 1.0;
    /// <summary>m: items of each replay batch; 0: round(r·B).</summary>
    [Option(Min = 0, Max = 1_000_000)]
    public int ReplayBatchSize { get; init; }
}

/// <summary>
/// Dark experience replay, DER++ (Buzzega, Boschini, Porrello, Abati &amp; Calderara 2020, "Dark experience for general
/// continual learning: a strong, simple baseline"): a reservoir of the training stream keeps each item with the logits
/// the model gave it when it entered (z), and beside every micro-batch a separate replay batch of m memory items adds
/// L = Σ_cur ℓ/N_cur + α·Σ_{j∈mem} mean_c (h(x_j)_c − z_j,c)² / N_mem + β·Σ_{j∈mem} ℓ(h(x_j), y_j) / N_mem.
/// The β term is the data role's weighted replay loss (<see cref="IDataRole.LossWeight"/> = β in separate mode), the α term
/// a loss term on the memory's extra tensor <c>logits</c>, which the model never reads.
/// </summary>
/// <remarks>
/// <para>Logits at insertion: an item enters the reservoir in the loss-term call of the micro-batch it belongs to, with the
/// logits of that forward pass (detached), the model before the step's update, as in the paper's Algorithm 1. The
/// reservoir's draws for a micro-batch come from a generator seeded by a draw of the core's observation stream of that
/// step and the count of micro-batches offered so far (kept as a state value), so a resumed run stores the same items.</para>
/// <para>Departures from the paper: one replay batch serves both terms (the paper draws two), and the reservoir replays
/// every stored item, the current task's included, as the paper does. Items enter only from tasks that train (a task of 0
/// epochs has no logits to store). Class targets: the logits are the model's output rows before any task head masks
/// them.</para>
/// <para>Each task end adds the probe row <c>der_memory_items</c> = [items in memory].</para>
/// </remarks>
[Plugin("der", Summary = "dark experience replay (DER++): a reservoir with logits at insertion; α·MSE on them + β·CE on a replay batch")]
public sealed class Der(DerOptions options) : IDataRole, ILossTerm, ITaskHooks, IStateful
{
    /// <summary>The extra tensor of every memory item: its logits at insertion.</summary>
    public const string LogitsKey = "logits";

    const string OfferedKey = "offered";

    readonly EpisodicMemory _memory = new(MemorySelection.Reservoir, options.Budget, offerCurrentTask: true);
    /// <summary>Micro-batches offered to the reservoir so far: with <see cref="_stream"/>, what seeds the next draws.</summary>
    long _offered;
    /// <summary>A draw of the core's observation stream of the latest micro-batch observed (the same after a resume, since
    /// every step observes its micro-batches before it computes their losses).</summary>
    long _stream;

    public double MixRatio => options.MixRatio;

    public double LossWeight => options.Beta;

    public ReplayMode Mode => ReplayMode.Separate;

    public int ReplayBatchSize => options.ReplayBatchSize;

    public long Count => _memory.Count;

    public Batch Sample(int items, Generator random) => _memory.Sample(items, random);

    public void Observe(Batch batch, int taskIndex, Generator random)
    {
        using var draw = randint(long.MaxValue, [1], dtype: ScalarType.Int64, generator: random);
        _stream = draw.item<long>();
    }

    /// <summary>On a replay batch: α·Σ_j mean_c (h(x_j)_c − z_j,c)² over its counted items. On a micro-batch of the task:
    /// its items (with their logits) are offered to the reservoir, and the term is zero.</summary>
    public Tensor? Loss(LossTermContext context)
    {
        if (context.Memory is { Mode: ReplayMode.Separate } replay) return Matching(replay);
        Offer(context);
        return null;
    }

    Tensor? Matching(MemoryItems replay)
    {
        if (options.Alpha == 0 || !replay.Extras.TryGetValue(LogitsKey, out var stored)) return null;
        if (!stored.shape.SequenceEqual(replay.Logits.shape))
            throw new InvalidOperationException(
                $"der: the stored logits [{string.Join(", ", stored.shape)}] do not match the model's [{string.Join(", ", replay.Logits.shape)}] on the same items");
        var perItem = (replay.Logits - stored).square().mean([-1]);
        return (perItem * replay.Items.ItemMask()).sum().mul(options.Alpha);
    }

    void Offer(LossTermContext context)
    {
        if (context.Batch.ContainsKey(LogitsKey))
            throw new InvalidOperationException($"der: the task's batches hold a tensor named '{LogitsKey}', the name DER stores its logits under");
        var items = new Batch(context.Batch.Append(KeyValuePair.Create(LogitsKey, context.Logits.detach())));
        using var random = new Generator(unchecked(((ulong)_stream ^ ((ulong)_offered * 0x9E3779B97F4A7C15UL))));
        _memory.Observe(items, context.TaskIndex, random);
        _offered++;
    }

    public void TaskStart(TaskStartContext context) => _memory.Start(context.TaskIndex);

    public void TaskEnd(TaskEndContext context) => context.AddProbe("der_memory_items", [_memory.Stored]);

    public IReadOnlyDictionary<string, Tensor> StateDict() => StateEntries.Of(_memory.State());

    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state) => _memory.Load(state);

    public IReadOnlyDictionary<string, object?> StateValues() => new Dictionary<string, object?> { [OfferedKey] = _offered };

    public void LoadStateValues(IReadOnlyDictionary<string, JsonElement> values) =>
        _offered = values.TryGetValue(OfferedKey, out var offered) ? offered.GetInt64() : 0;
}
