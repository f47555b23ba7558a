using Research.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Plugins.Methods;

/// <summary>How an episodic memory chooses the items it keeps.</summary>
public enum MemorySelection
{
    /// <summary>Reservoir sampling (Vitter's algorithm R) over the stream of training items: after n items, each has been
    /// kept with probability budget/n, whatever its task. Works for any targets (token sequences too).</summary>
    Reservoir,
    /// <summary>Filled at each task end: the budget split equally over the (class, task) pairs seen so far, each new pair's
    /// items chosen at random, older pairs trimmed to the new quota. Needs class targets of shape [B].</summary>
    ClassBalanced,
    /// <summary>Filled at each task end: the budget split equally over the tasks seen so far, each new task's items a
    /// uniform random selection of its training items. Works for any targets (token windows too), and for a task that
    /// was not trained (0 epochs), whose items reach the memory at its end.</summary>
    TaskBalanced,
}

/// <summary>
/// An episodic memory of at most <c>budget</c> items for replay and A-GEM: rows copied from the task's batches, one CPU
/// tensor [M, …] per batch name (same dtypes), with each item's task index.
/// </summary>
/// <remarks>
/// <para>Reservoir (Vitter 1985, algorithm R): the n-th item of the stream (n counted from 1) enters when n ≤ budget,
/// else draws j uniform in {0, …, n−1} and replaces slot j when j &lt; budget — kept with probability budget/n, every
/// slot equally likely. The draws of a micro-batch come from one <c>torch.rand</c> of the given generator; when two
/// items of a micro-batch draw the same slot the later one wins, as in the sequential algorithm. Only items of tasks
/// before the current one are offered (<see cref="Count"/>, <see cref="Sample"/>), so the first task trains as plain
/// fine-tuning and a reference gradient never comes from the task being learned.</para>
/// <para>Class-balanced (as Chaudhry et al. 2019 keep a memory per class): at a task end the K (class, task) pairs seen so far
/// get ⌊budget/K⌋ items each, the remainder one more each to the pairs of the smallest class ids; pairs already in memory
/// keep their first items up to the quota, each new pair gets a random selection (<c>randperm</c>) of its items. A class
/// that comes back in a later task (domain-incremental streams) counts once per task, so every task keeps items.</para>
/// <para>With <c>offerCurrentTask</c> (DER, which replays the whole reservoir) a reservoir offers every stored item,
/// those of the task being trained included.</para>
/// </remarks>
sealed class EpisodicMemory(MemorySelection selection, int budget, bool offerCurrentTask = false)
{
    const string Prefix = "memory", TaskKey = "memory_task", SeenKey = "memory_seen", CurrentKey = "memory_current_task";

    /// <summary>Rows by batch name, [M, …] on the CPU; null while empty.</summary>
    Dictionary<string, Tensor>? _items;
    /// <summary>The task index of each row (int64 [M]).</summary>
    Tensor? _task;
    /// <summary>n, the training items observed (reservoir), 0-d int64.</summary>
    Tensor? _seen;
    /// <summary>The task being trained, 0-d int64: reservoir items of it (and later) are not offered.</summary>
    Tensor? _current;

    /// <summary>M, the items stored.</summary>
    public long Stored => _task?.shape[0] ?? 0;

    /// <summary>Every stored item as a batch (the memory's tensors, valid while the memory is unchanged); null while empty.</summary>
    public Batch? All => _items is null ? null : new Batch(_items);

    /// <summary>Items <see cref="Sample"/> may return: every stored item (class-balanced) or those of earlier tasks (reservoir).</summary>
    public long Count
    {
        get
        {
            if (_task is null) return 0;
            if (selection != MemorySelection.Reservoir || offerCurrentTask) return Stored;
            using var before = Offered();
            return before.shape[0];
        }
    }

    /// <summary>Distinct items drawn at random (a <c>randperm</c> of <see cref="Count"/>, the first
    /// min(<paramref name="items"/>, Count)), as a new batch that belongs to the caller.</summary>
    public Batch Sample(int items, Generator random)
    {
        if (_items is null) throw new InvalidOperationException("the episodic memory is empty: check Count before sampling");
        using var offered = selection != MemorySelection.Reservoir || offerCurrentTask ? arange(Stored) : Offered();
        var take = Math.Min(Math.Max(items, 0), offered.shape[0]);
        using var permutation = randperm(offered.shape[0], generator: random);
        using var first = permutation.narrow(0, 0, take);
        using var rows = offered.index_select(0, first);
        return new Batch(_items).Select(rows);
    }

    /// <summary>Rows of tasks before the current one (int64 [n]).</summary>
    Tensor Offered()
    {
        using var before = _task!.lt(StateEntries.Value(_current));
        return before.nonzero().reshape(-1);
    }

    /// <summary>Notes the task being trained.</summary>
    public void Start(int taskIndex)
    {
        if (_current is null || StateEntries.Value(_current) != taskIndex) _current = StateEntries.Counter(taskIndex);
    }

    /// <summary>Reservoir mode: offers a micro-batch of the stream (ignored in class-balanced mode).</summary>
    public void Observe(Batch batch, int taskIndex, Generator random)
    {
        Start(taskIndex);
        if (selection != MemorySelection.Reservoir) return;
        var seen = StateEntries.Value(_seen);
        using var draws = rand([batch.Size], dtype: ScalarType.Float64, generator: random);
        var u = draws.data<double>().ToArray();
        var rowOfSlot = new SortedDictionary<long, long>();   // slot → row of the batch that ends there (the last to draw it)
        var stored = Stored;
        for (long i = 0; i < batch.Size; i++)
        {
            var n = seen + i + 1;
            if (n <= budget) rowOfSlot[stored++] = i;
            else
            {
                var j = (long)Math.Floor(u[i] * n);
                if (j < budget) rowOfSlot[j] = i;
            }
        }
        _seen = StateEntries.Counter(seen + batch.Size);
        if (rowOfSlot.Count > 0) Write(batch, rowOfSlot, taskIndex);
    }

    /// <summary>Memory slots ← batch rows (slots ≥ M are appended, in order).</summary>
    void Write(Batch batch, IReadOnlyDictionary<long, long> rowOfSlot, int taskIndex)
    {
        var rows = rowOfSlot.Values.Distinct().Order().ToArray();
        var position = rows.Select((row, k) => (row, k)).ToDictionary(x => x.row, x => x.k);
        using var rowIndex = tensor(rows, device: batch.Values.First().device);
        var incoming = OnCpu(batch.Select(rowIndex));
        var stored = Stored;
        var newCount = Math.Max(stored, rowOfSlot.Keys.Max() + 1);
        // The combined rows are [memory; incoming]: slot s keeps its row s or takes incoming row k at stored + k.
        var order = new long[newCount];
        for (long s = 0; s < newCount; s++) order[s] = rowOfSlot.TryGetValue(s, out var row) ? stored + position[row] : s;
        using var taskOfIncoming = full([rows.Length], taskIndex, dtype: ScalarType.Int64);
        Replace(incoming, taskOfIncoming, order);
    }

    /// <summary>Class- or task-balanced mode: refills the memory from the data of a task that ended (ignored in reservoir
    /// mode). Task-balanced is the class-balanced rule with every item in one class. <paramref name="choose"/> (positions of
    /// a class's items in the task's data, quota) → the positions to keep, in priority order (iCaRL's herding); by default
    /// a random selection.</summary>
    public void Fill(TaskEndContext context, Func<long[], long, IEnumerable<long>>? choose = null)
    {
        if (selection == MemorySelection.Reservoir) return;
        bool byTask = selection == MemorySelection.TaskBalanced;
        long task = context.TaskIndex;
        var classes = byTask ? new long[context.Data.Sum(b => b.Size)] : ClassesOf(context.Data);
        var positionsOf = Enumerable.Range(0, classes.Length).Where(i => classes[i] != Batch.IgnoreIndex)
            .GroupBy(i => classes[i]).OrderBy(g => g.Key).ToList();

        // The (class, task) of every stored item. Items of the ended task itself (a repeated task end) are chosen anew.
        var stored = Stored;
        var storedPairs = new (long Class, long Task)[stored];
        if (_items != null)
        {
            var storedClass = byTask ? new long[stored] : _items[Batch.Targets].data<long>().ToArray();
            var storedTask = _task!.data<long>().ToArray();
            for (long s = 0; s < stored; s++) storedPairs[s] = (storedClass[s], storedTask[s]);
        }
        var pairs = storedPairs.Where(p => p.Task != task).Concat(positionsOf.Select(g => (Class: g.Key, Task: task)))
            .Distinct().OrderBy(p => p.Class).ThenBy(p => p.Task).ToList();
        if (pairs.Count == 0) return;
        // ⌊budget/K⌋ items per pair, one more for each of the first (budget mod K): the smallest class ids.
        var quota = pairs.Select((p, i) => (p, q: (long)(budget / pairs.Count + (i < budget % pairs.Count ? 1 : 0))))
            .ToDictionary(x => x.p, x => x.q);

        // Older pairs keep their first items up to the new quota.
        var order = new List<long>();
        var taken = new Dictionary<(long, long), long>();
        for (long s = 0; s < stored; s++)
        {
            var pair = storedPairs[s];
            if (pair.Task == task || taken.GetValueOrDefault(pair) >= quota[pair]) continue;
            taken[pair] = taken.GetValueOrDefault(pair) + 1;
            order.Add(s);
        }

        // Each class of the ended task: a random selection of its items (positions in the task's data, in the drawn order).
        var chosen = new List<long>();
        foreach (var positions in positionsOf)
        {
            var items = positions.ToArray();
            if (choose is not null)
            {
                chosen.AddRange(choose(items.Select(i => (long)i).ToArray(), Math.Min(quota[(positions.Key, task)], items.Length)));
                continue;
            }
            using var permutation = randperm(items.Length, generator: context.Random);
            chosen.AddRange(permutation.data<long>().Take((int)Math.Min(quota[(positions.Key, task)], items.Length)).Select(j => (long)items[j]));
        }

        var incoming = Gather(context.Data, chosen, classes.Length);
        using var taskOfIncoming = full([chosen.Count], task, dtype: ScalarType.Int64);
        order.AddRange(Enumerable.Range(0, chosen.Count).Select(k => stored + k));
        Replace(incoming, taskOfIncoming, order.ToArray());
    }

    /// <summary>The class of every item of the task's data, in order; the targets must be [B] class ids.</summary>
    static long[] ClassesOf(IEnumerable<Batch> data)
    {
        var classes = new List<long>();
        foreach (var batch in data)
        {
            var targets = batch.TargetsTensor;
            if (targets.dim() != 1)
                throw new InvalidOperationException(
                    $"selection = \"class-balanced\" needs class targets of shape [B]; this task's targets have shape [{string.Join(", ", targets.shape)}] " +
                    "(token targets have no class per item): use selection = \"reservoir\"");
            using var cpu = targets.to(ScalarType.Int64).cpu();
            classes.AddRange(cpu.data<long>());
        }
        return classes.ToArray();
    }

    /// <summary>The items at <paramref name="positions"/> of the data (in that order), on the CPU; null when none.</summary>
    static Batch? Gather(IEnumerable<Batch> data, IReadOnlyList<long> positions, long expectedItems)
    {
        if (positions.Count == 0) return null;
        var wanted = positions.ToHashSet();
        var parts = new List<Batch>();
        var found = new List<long>();
        long offset = 0;
        foreach (var batch in data)
        {
            var local = Enumerable.Range(0, (int)batch.Size).Where(i => wanted.Contains(offset + i)).Select(i => (long)i).ToArray();
            if (local.Length > 0)
            {
                using var index = tensor(local, device: batch.Values.First().device);
                parts.Add(OnCpu(batch.Select(index)));
                found.AddRange(local.Select(i => offset + i));
            }
            offset += batch.Size;
        }
        if (offset != expectedItems)
            throw new InvalidOperationException($"the task's data gave {expectedItems} items on one pass and {offset} on the next: it must be the same on every pass");
        var all = Batch.Concat(parts);
        var at = found.Select((position, k) => (position, k)).ToDictionary(x => x.position, x => (long)x.k);
        using var reorder = tensor(positions.Select(p => at[p]).ToArray());
        return all.Select(reorder);
    }

    /// <summary>The batch on the CPU (the memory lives there whatever the device of training); for new tensors only, as
    /// it may return them.</summary>
    static Batch OnCpu(Batch batch) => new(batch.Select(kv => KeyValuePair.Create(kv.Key, kv.Value.cpu())));

    /// <summary>The memory becomes rows <paramref name="order"/> of [memory; incoming] (incoming may be null).</summary>
    void Replace(Batch? incoming, Tensor? taskOfIncoming, long[] order)
    {
        using var index = tensor(order);
        // [memory; incoming] in one batch. Concat right-pads token sequences of different lengths (targets with the ignore
        // index), as the core's mixing does. The concatenation and the memory's old tensors are left to the host, which
        // frees what the call made and what the state no longer holds.
        var both = _items != null && incoming != null ? Batch.Concat([new Batch(_items), incoming]) : null;
        var combined = both ?? incoming ?? new Batch(_items!);
        _items = combined.Select(index).ToDictionary(kv => kv.Key, kv => kv.Value);
        using var tasks = _task is null ? taskOfIncoming!.clone() : taskOfIncoming is null ? _task.clone() : cat([_task, taskOfIncoming], 0);
        _task = tasks.index_select(0, index);
    }

    /// <summary>The entries of the owner's state: <c>memory/&lt;batch name&gt;</c>, <c>memory_task</c>, <c>memory_seen</c>,
    /// <c>memory_current_task</c> (those that exist yet).</summary>
    public IEnumerable<KeyValuePair<string, Tensor>> State() =>
        StateEntries.Prefixed(Prefix, _items)
            .Concat(StateEntries.One(TaskKey, _task))
            .Concat(StateEntries.One(SeenKey, _seen))
            .Concat(StateEntries.One(CurrentKey, _current));

    /// <summary>Restores <see cref="State"/>; absent entries (an empty memory) leave the memory empty.</summary>
    public void Load(IReadOnlyDictionary<string, Tensor> state)
    {
        _items = StateEntries.Part(state, Prefix);
        _task = StateEntries.Entry(state, TaskKey);
        _seen = StateEntries.Entry(state, SeenKey);
        _current = StateEntries.Entry(state, CurrentKey);
    }
}
