using Research.Abstractions;
using Research.Core.Optim;
using Research.Core.Precision;
using Research.Core.Training;
using static TorchSharp.torch;

using Research.Core;
namespace Research.Cli.Bench;

/// <summary>
/// The candidate of a step benchmark: the trainer's <see cref="TrainStep"/> on a <see cref="StepWorkload"/>, set up to do
/// the work of <see cref="HandWrittenLoop"/> — the core AdamW with decay λ on every tensor (one group, as the loop's
/// <c>AdamW(model.parameters())</c>), fp32, no clipping, the given methods (none unless a workload turns EWC on), the
/// workload's task as the loss, ‖g‖ not measured.
/// </summary>
public sealed class TrainerLoop : IDisposable
{
    readonly IReadOnlyList<Batch> batches;
    readonly Optimizer optimizer;
    readonly TrainStep step;
    readonly double lr;
    int next;

    /// <param name="workload">Its model is trained in place (the optimizer adopts the parameters into flat buffers).</param>
    public TrainerLoop(StepWorkload workload, double lr = 1e-3, double weightDecay = 0.01, MethodSet? methods = null)
    {
        batches = workload.Batches;
        this.lr = lr;
        var everyTensorDecays = new[] { new GroupRule(new ParameterGroup("all", 1.0, weightDecay), (_, _) => true) };
        optimizer = Optimizer.AdamW(ParameterGroups.Assign(
            workload.Model.named_parameters().Select(p => (p.name, (Tensor)p.parameter)), everyTensorDecays));
        step = new TrainStep(workload.Model, optimizer, PrecisionPolicy.Fp32, methods ?? MethodSet.None, clipNorm: 0, task: workload.Task);
    }

    /// <summary>One optimizer step on the next batch, cycling; its outcome carries the loss before the update.</summary>
    public StepOutcome Step()
    {
        var batch = batches[next];
        next = (next + 1) % batches.Count;
        return step.Run([batch], lr, measureNorm: false);
    }

    public void Dispose() => optimizer.Dispose();
}
