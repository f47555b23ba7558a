using Research.Abstractions;
using static TorchSharp.torch;

namespace Research.Core.Studies;

/// <summary>
/// A model seen through one task's head: only the logits of the task's classes, in order, so class k of the task
/// is output k. The Fisher of a task-incremental task is the Fisher of this distribution (the masked classes have
/// probability 0). The model is registered as <c>m</c>: parameter names gain the prefix <c>m.</c>.
/// </summary>
sealed class ClassSubset : nn.Module<Tensor, Tensor>
{
    readonly nn.Module<Tensor, Tensor> m;
    readonly Tensor _classes;
    readonly Tensor _renumber;

    public ClassSubset(nn.Module<Tensor, Tensor> model, int[] classes, int numClasses) : base("class_subset")
    {
        m = model;
        _classes = tensor(classes.Select(c => (long)c).ToArray()).DetachFromDisposeScope();
        var renumber = Enumerable.Repeat(-100L, numClasses).ToArray();
        for (int k = 0; k < classes.Length; k++) renumber[classes[k]] = k;
        _renumber = tensor(renumber).DetachFromDisposeScope();
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => m.call(x).index_select(1, _classes);

    /// <summary>The batches with targets renumbered to the task's outputs (each lives until the next is asked for).</summary>
    public IEnumerable<Batch> Renumbered(IEnumerable<Batch> batches)
    {
        foreach (var b in batches)
        {
            using var targets = _renumber.index_select(0, b.TargetsTensor);
            yield return new Batch(b[Batch.Input], targets);
        }
    }

    /// <summary>Releases the index tensors only: the wrapped model is not ours, so the base class (which would
    /// dispose registered children) is not called.</summary>
    protected override void Dispose(bool disposing)
    {
        if (disposing) { _classes.Dispose(); _renumber.Dispose(); }
    }
}
