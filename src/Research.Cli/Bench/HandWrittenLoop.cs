using Research.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

using Research.Core;
namespace Research.Cli.Bench;

/// <summary>
/// The baseline a training step is measured against: the plainest idiomatic TorchSharp loop — TorchSharp's
/// own AdamW over <c>model.parameters()</c> (one group, decay λ on every tensor, as PyTorch's
/// <c>AdamW(model.parameters())</c>), and per step a dispose scope, <c>zero_grad</c>, the workload's mean loss,
/// <c>backward</c>, <c>step</c>. No logging, no loss read back, no clipping.
/// </summary>
public sealed class HandWrittenLoop : IDisposable
{
    readonly nn.Module<Tensor, Tensor> model;
    readonly IReadOnlyList<Batch> batches;
    readonly Func<nn.Module<Tensor, Tensor>, Batch, Tensor> meanLoss;
    readonly optim.Optimizer optimizer;
    int next;

    /// <param name="model">Trained in place.</param>
    /// <param name="batches">Stepped through in order, cycling; owned by the caller.</param>
    /// <param name="meanLoss">The scalar the step minimises, from the model and a batch (its forward included);
    /// <see cref="CrossEntropy"/> when null.</param>
    public HandWrittenLoop(nn.Module<Tensor, Tensor> model, IReadOnlyList<Batch> batches,
        Func<nn.Module<Tensor, Tensor>, Batch, Tensor>? meanLoss = null, double lr = 1e-3,
        double weightDecay = 0.01, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8)
    {
        if (batches.Count == 0) throw new ArgumentException("the loop needs at least one batch", nameof(batches));
        this.model = model;
        this.batches = batches;
        this.meanLoss = meanLoss ?? CrossEntropy;
        optimizer = optim.AdamW(model.parameters(), lr, beta1, beta2, eps, weightDecay);
    }

    /// <summary>Mean cross-entropy of the logits of <c>input</c> (or of a token model's <c>input_ids</c>) against
    /// <c>targets</c> (classification).</summary>
    public static Tensor CrossEntropy(nn.Module<Tensor, Tensor> model, Batch batch) =>
        nn.functional.cross_entropy(model.forward(batch.TryGetValue(Batch.Input, out var x) ? x : batch[Batch.InputIds]), batch.TargetsTensor);

    /// <summary>
    /// Mean next-token cross-entropy, written out: logits [B, T, V] of <c>input_ids</c>, position t scored against
    /// token t + 1 of <c>targets</c> — the B·(T − 1) predictions of the sequence.
    /// </summary>
    public static Tensor NextTokenCrossEntropy(nn.Module<Tensor, Tensor> model, Batch batch)
    {
        var logits = model.forward(batch[Batch.InputIds]);
        var (t, v) = (logits.shape[1], logits.shape[2]);
        return nn.functional.cross_entropy(logits.narrow(1, 0, t - 1).reshape(-1, v), batch.TargetsTensor.narrow(1, 1, t - 1).reshape(-1));
    }

    /// <summary>One optimizer step on the next batch.</summary>
    public void Step()
    {
        var batch = batches[next];
        next = (next + 1) % batches.Count;
        using var scope = NewDisposeScope();
        optimizer.zero_grad();
        meanLoss(model, batch).backward();
        optimizer.step();
    }

    public void Dispose() => optimizer.Dispose();
}
