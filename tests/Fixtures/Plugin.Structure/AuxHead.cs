using Research.Abstractions;
using static TorchSharp.torch;

namespace Research.Fixtures.Structure;

public sealed record AuxHeadOptions
{
    /// <summary>The first task that gets a head of its own (tasks before it train without one).</summary>
    public int StartTask { get; init; } = 1;

    /// <summary>The coefficient of the head's cross-entropy, summed over the counted items.</summary>
    public double Weight { get; init; } = 1.0;
}

/// <summary>
/// At the start of each task from <see cref="AuxHeadOptions.StartTask"/> on, adds a head of its own, aux.task{i}.weight
/// [C, C] and aux.task{i}.bias [C], and trains it with a loss term: weight · Σᵢ CE(W·zᵢ + b, yᵢ) over the logits z. Its
/// initial values come from a generator seeded by the task's index, so every process adds the same head. Each micro-batch
/// logs the head's norm, so a resumed run's rows show the head's trajectory too.
/// </summary>
[Plugin("aux-head", Summary = "fixture: adds a head per task at its start and trains it through a loss term")]
public sealed class AuxHead(AuxHeadOptions options) : ITaskHooks, ILossTerm
{
    public void TaskStart(TaskStartContext context)
    {
        if (context.TaskIndex < options.StartTask) return;
        long classes = context.Parameters[^1].Value.shape[0];
        using var g = new Generator((ulong)(1000 + context.TaskIndex));
        var w = randn([classes, classes], generator: g).mul(0.3);
        var b = randn([classes], generator: g).mul(0.1);
        context.AddParameters([new($"aux.task{context.TaskIndex}.weight", w), new($"aux.task{context.TaskIndex}.bias", b)]);
    }

    public Tensor? Loss(LossTermContext context)
    {
        if (!context.AddedParameters.TryGetValue($"aux.task{context.TaskIndex}.weight", out var w)) return null;
        var b = context.AddedParameters[$"aux.task{context.TaskIndex}.bias"];
        var aux = context.Logits.matmul(w.t()).add(b);
        var loss = nn.functional.cross_entropy(aux, context.Batch.TargetsTensor, ignore_index: Batch.IgnoreIndex, reduction: nn.Reduction.Sum);
        context.Log.Scalar("head_norm", w.detach().norm().item<float>());
        return loss.mul(options.Weight);
    }
}
