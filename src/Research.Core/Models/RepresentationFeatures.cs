using Research.Abstractions;
using Research.Core.Precision;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Models;

/// <summary>
/// The representation of a model's inputs at a submodule: what that module reads. The probes read it
/// (<see cref="Probes.Representation"/>), and so do methods through <see cref="PredictContext.Representation"/> and
/// <see cref="TaskEndContext.Representation"/>; it lives with the models so that the training loop and the probes both
/// use it without depending on each other.
/// </summary>
public static class RepresentationFeatures
{
    /// <summary>
    /// The input of <paramref name="model"/>'s submodule <paramref name="module"/> for every item of <paramref name="batches"/>, float32 [N, d] on
    /// the CPU, in batch order. The model runs as <see cref="ModelInput.Logits"/> runs it (with the precision policy's
    /// input cast), in eval mode and without gradients; every module's training flag is restored afterwards and the hook
    /// removed, also when a batch fails.
    /// </summary>
    /// <remarks>
    /// A forward pre-hook sees the head's input when the model invokes it through <c>head.call(x)</c>, as every model here
    /// does (<c>head.forward(x)</c> would bypass TorchSharp's hooks: that batch is refused, not silently skipped). The hook
    /// keeps an <c>alias()</c> of what it is handed, because a model may dispose its intermediates once the next layer
    /// has run (see <see cref="Forgetting.LinearCapture"/>).
    /// </remarks>
    public static Tensor Of(nn.Module<Tensor, Tensor> model, IEnumerable<Batch> batches, PrecisionPolicy? precision, string module)
    {
        var found = model.named_modules().FirstOrDefault(m => m.name == module).module
            ?? throw new ArgumentException($"{model.GetType().Name} has no submodule named '{module}': the representation is the input of that module (the model's final Linear, unless its kind names another)");
        var head = found as nn.Module<Tensor, Tensor>
            ?? throw new ArgumentException($"the '{module}' of {model.GetType().Name} is a {found.GetType().Name}, which does not map one tensor to one tensor");
        // train(flag) recurses into children, so flags are restored parents first: a child whose flag differed from its
        // parent's (a frozen BatchNorm kept in eval mode, say) gets its own back last.
        var training = model.named_modules().Select(m => (Depth: m.name.Count(c => c == '.') + 1, Module: m.module))
            .Prepend((Depth: 0, Module: (nn.Module)model)).OrderBy(m => m.Depth)
            .Select(m => (m.Module, Flag: m.Module.training)).ToList();
        var seen = new List<Tensor>();
        var parts = new List<Tensor>();
        var hook = head.register_forward_pre_hook((_, x) => { seen.Add(x.alias()); return null!; });
        try
        {
            model.eval();
            using var noGrad = no_grad();
            foreach (var batch in batches)
            {
                using var scope = NewDisposeScope();
                seen.Clear();
                ModelInput.Logits(model, batch, precision);
                if (seen.Count != 1)
                    throw new InvalidOperationException($"{model.GetType().Name} called its '{module}' {seen.Count} times on one batch (expected once through head.call: head.forward bypasses hooks)");
                var x = seen[0];
                if (x.dim() != 2 || x.shape[0] != batch.Size)
                    throw new InvalidOperationException($"the input of {model.GetType().Name}'s '{module}' is [{string.Join(", ", x.shape)}], not [{batch.Size}, d]: one representation per item is needed");
                parts.Add(x.detach().to(float32, CPU, copy: true).DetachFromDisposeScope());
            }
            if (parts.Count == 0) throw new ArgumentException("no batches: there is nothing to represent");
            return cat(parts, 0);
        }
        finally
        {
            hook.remove();
            foreach (var p in parts) p.Dispose();
            foreach (var (owner, flag) in training) owner.train(flag);
        }
    }
}
