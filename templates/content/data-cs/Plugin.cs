using Research.Abstractions;
using static TorchSharp.torch;

namespace ResearchPlugin1;

/// <summary>The plugin's options, bound from its table in a config:
/// <code>[[methods]]
/// name = "research-plugin-1"
/// items_per_task = 200
/// mix_ratio = 0.25</code></summary>
public sealed record Options
{
    /// <summary>Items of each task the memory keeps: the first ones its training sees.</summary>
    [Option(Min = 1, Max = 10_000_000)]
    public int ItemsPerTask { get; init; } = 100;

    /// <summary>r: memory items appended per current-task item in each micro-batch.</summary>
    [Option(Min = 0, Max = 100)]
    public double MixRatio { get; init; } = 0.25;
}

/// <summary>
/// A data role: a memory of the first <c>items_per_task</c> items of every task, of which round(r·B) are appended to each
/// micro-batch of B items of later tasks (the core mixes them in and normalises the loss over both). It sees every
/// training micro-batch (<see cref="Observe"/>), draws from the memory when the core asks (<see cref="Sample"/>), and
/// keeps the memory in checkpoints (<see cref="IStateful"/>) so a resumed run replays the same items.
/// </summary>
[Plugin("research-plugin-1", Summary = "replays the first items of each earlier task")]
public sealed class Plugin(Options options) : IDataRole, IStateful
{
    // memory[t]: task t's items as a batch of the same named tensors as the task's batches. The host keeps the tensors
    // StateDict returns alive across steps and frees the ones dropped from it.
    readonly List<Batch?> _memory = [];
    int _task;

    public double MixRatio => options.MixRatio;

    /// <summary>Only earlier tasks are replayed: the current task trains on its own data.</summary>
    public long Count => _memory.Take(_task).Sum(b => b?.Size ?? 0);

    public void Observe(Batch batch, int taskIndex, Generator random)
    {
        _task = taskIndex;
        while (_memory.Count <= taskIndex) _memory.Add(null);
        var stored = _memory[taskIndex]?.Size ?? 0;
        var take = Math.Min(options.ItemsPerTask - stored, batch.Size);
        if (take <= 0) return;
        using var _ = no_grad();
        var part = new Batch(batch.Narrow(0, take).Select(kv => KeyValuePair.Create(kv.Key, kv.Value.detach().clone())));
        _memory[taskIndex] = _memory[taskIndex] is { } old ? Batch.Concat([old, part]) : part;
    }

    public Batch Sample(int items, Generator random)
    {
        var past = _memory.Take(_task).OfType<Batch>().ToList();
        if (past.Count == 0) throw new InvalidOperationException("the memory holds no item of an earlier task");
        var all = past.Count == 1 ? past[0] : Batch.Concat(past);
        var n = Math.Min(items, all.Size);
        // Without replacement, drawn with the core's generator: the same items after a resume.
        return all.Select(randperm(all.Size, generator: random).narrow(0, 0, n));
    }

    public IReadOnlyDictionary<string, Tensor> StateDict() =>
        _memory.SelectMany((batch, task) => batch?.Select(kv => KeyValuePair.Create($"{task}/{kv.Key}", kv.Value)) ?? [])
            .ToDictionary(kv => kv.Key, kv => kv.Value);

    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state)
    {
        _memory.Clear();
        foreach (var task in state.GroupBy(kv => int.Parse(kv.Key[..kv.Key.IndexOf('/')])).OrderBy(g => g.Key))
        {
            while (_memory.Count <= task.Key) _memory.Add(null);
            _memory[task.Key] = new Batch(task.Select(kv => KeyValuePair.Create(kv.Key[(kv.Key.IndexOf('/') + 1)..], kv.Value)));
        }
        // The task the run resumes in has begun filling its memory; Observe sets it again with the next batch.
        _task = Math.Max(0, _memory.Count - 1);
    }
}
