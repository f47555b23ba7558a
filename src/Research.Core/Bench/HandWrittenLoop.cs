using Research.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Bench;

/// <summary>
/// The baseline a training step is measured against: the plainest idiomatic TorchSharp loop — TorchSharp's
/// own AdamW over <c>model.parameters()</c> (one group, decay λ on every tensor, as PyTorch's
/// <c>AdamW(model.parameters())</c>), and per step a dispose scope, <c>zero_grad</c>, mean cross-entropy,
/// <c>backward</c>, <c>step</c>. No logging, no loss read back, no clipping.
/// </summary>
public sealed class HandWrittenLoop : IDisposable
{
    readonly nn.Module<Tensor, Tensor> model;
    readonly IReadOnlyList<Batch> batches;
    readonly optim.Optimizer optimizer;
    int next;

    /// <param name="model">Trained in place.</param>
    /// <param name="batches">Stepped through in order, cycling; owned by the caller.</param>
    public HandWrittenLoop(nn.Module<Tensor, Tensor> model, IReadOnlyList<Batch> batches, double lr = 1e-3,
        double weightDecay = 0.01, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8)
    {
        if (batches.Count == 0) throw new ArgumentException("the loop needs at least one batch", nameof(batches));
        this.model = model;
        this.batches = batches;
        optimizer = optim.AdamW(model.parameters(), lr, beta1, beta2, eps, weightDecay);
    }

    /// <summary>One optimizer step on the next batch.</summary>
    public void Step()
    {
        var batch = batches[next];
        next = (next + 1) % batches.Count;
        using var scope = NewDisposeScope();
        optimizer.zero_grad();
        var loss = nn.functional.cross_entropy(model.forward(batch[Batch.Input]), batch.TargetsTensor);
        loss.backward();
        optimizer.step();
    }

    public void Dispose() => optimizer.Dispose();
}
