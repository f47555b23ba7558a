using static TorchSharp.torch;

namespace Research.Core.Tasks;

/// <summary>
/// A head per task on one output layer (task-incremental learning, van de Ven et al. 2022 "Three types of
/// incremental learning"): an item of task t may only use the logits of t's classes; the others are set to −∞,
/// so its softmax and gradient see only its task. The task of an item is the task its label belongs to — the
/// task identity that task-incremental learning is given at test time.
/// </summary>
public sealed class TaskHeads : IDisposable
{
    readonly Tensor _allowed;      // [tasks, classes] bool
    readonly Tensor _taskOfClass;  // [classes] int64

    public TaskHeads(IReadOnlyList<int[]> classesPerTask, int numClasses)
    {
        var allowed = new bool[classesPerTask.Count * numClasses];
        var taskOf = new long[numClasses];
        for (int t = 0; t < classesPerTask.Count; t++)
            foreach (var c in classesPerTask[t]) { allowed[t * numClasses + c] = true; taskOf[c] = t; }
        _allowed = tensor(allowed, [classesPerTask.Count, numClasses]).DetachFromDisposeScope();
        _taskOfClass = tensor(taskOf).DetachFromDisposeScope();
    }

    /// <summary>The logits each item may use (ignored targets, −100, are treated as class 0; their loss is not counted).</summary>
    public Tensor Apply(Tensor logits, Tensor targets)
    {
        using var classes = targets.clamp_min(0);
        using var task = _taskOfClass.index_select(0, classes);
        using var mask = _allowed.index_select(0, task);
        using var outside = mask.logical_not();
        return logits.masked_fill(outside, double.NegativeInfinity);
    }

    public void Dispose() { _allowed.Dispose(); _taskOfClass.Dispose(); }
}
