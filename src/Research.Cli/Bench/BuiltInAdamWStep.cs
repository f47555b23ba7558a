using Research.Abstractions;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

using Research.Core;
namespace Research.Cli.Bench;

/// <summary>
/// TorchSharp's built-in AdamW step alone — no forward, no backward — on gradients filled once beforehand, to
/// measure an optimizer by its per-tensor cost. Two parameter groups as the core's default: decay λ on
/// tensors of rank ≥ 2, none on the rest. Every option is passed explicitly, because
/// <see cref="AdamW.ParamGroup"/> fills in its own default for any option left out.
/// The gradients are never zeroed, so another optimizer may step the same model between these steps.
/// </summary>
public sealed class BuiltInAdamWStep : IDisposable
{
    readonly AdamW optimizer;

    /// <summary>Parameter tensors in the decay group and in the no-decay group.</summary>
    public (int Decay, int NoDecay) TensorCounts { get; }

    /// <param name="model">Every parameter must hold a gradient (see <see cref="FillGradients"/>).</param>
    public BuiltInAdamWStep(nn.Module model, double lr = 1e-3, double weightDecay = 0.01,
        double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8)
    {
        var ps = model.named_parameters().ToList();
        var missing = ps.Where(p => p.parameter.grad is null).Select(p => p.name).ToList();
        if (missing.Count > 0)
            throw new InvalidOperationException($"parameters without a gradient ({string.Join(", ", missing.Take(3))}…): fill the gradients once before stepping");
        var decay = ps.Where(p => p.parameter.dim() >= 2).Select(p => p.parameter).ToList();
        var noDecay = ps.Where(p => p.parameter.dim() < 2).Select(p => p.parameter).ToList();
        TensorCounts = (decay.Count, noDecay.Count);
        optimizer = optim.AdamW(
        [
            new AdamW.ParamGroup(decay, lr, beta1, beta2, eps, weightDecay, amsgrad: false, maximize: false),
            new AdamW.ParamGroup(noDecay, lr, beta1, beta2, eps, 0.0, amsgrad: false, maximize: false),
        ], lr, beta1, beta2, eps, weightDecay);
    }

    /// <summary>One forward and backward of mean cross-entropy on <paramref name="batch"/>: leaves a gradient on every parameter.</summary>
    public static void FillGradients(nn.Module<Tensor, Tensor> model, Batch batch)
    {
        using var scope = NewDisposeScope();
        model.zero_grad();
        HandWrittenLoop.CrossEntropy(model, batch).backward();
    }

    /// <summary>One AdamW update of every parameter from its current gradient.</summary>
    public void Step()
    {
        using var scope = NewDisposeScope();
        optimizer.step();
    }

    public void Dispose() => optimizer.Dispose();
}
