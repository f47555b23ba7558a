using static TorchSharp.torch;

namespace Research.Core.Hessian;

/// <summary>
/// While alive, <c>scaled_dot_product_attention</c> runs libtorch's composite "math" kernel instead of the fused flash
/// kernel, whose backward has no derivative: a second backward through it (a Hessian-vector product, or the Gauss-Newton
/// product's J v) aborts the process (measured on CPU: "derivative for
/// aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented", then <c>terminate</c>, exit 134 — no
/// .NET exception to catch). The math kernel is softmax(QKᵀ/√d + mask) V in differentiable operations, the same
/// function, so every model built on the fused call (GPT, BERT, the transformer classifier) gets curvature products.
/// </summary>
/// <remarks>
/// libtorch's choice is a process-global flag (<c>at::globalContext().setSDPUseFlash</c>, which TorchSharp exposes as
/// <c>torch.backends.cuda.enable_flash_sdp</c> and which the CPU kernel selection also reads). It is switched off on the
/// first entry and restored when the last of any nested or concurrent scopes ends; meanwhile attention elsewhere in the
/// process is computed by the math kernel too — the same values up to rounding, somewhat slower.
/// </remarks>
sealed class MathAttention : IDisposable
{
    static readonly object Gate = new();
    static int _depth;
    static bool _saved;

    public MathAttention()
    {
        lock (Gate)
        {
            if (_depth++ == 0)
            {
                _saved = backends.cuda.flash_sdp_enabled();
                backends.cuda.enable_flash_sdp(false);
            }
        }
    }

    public void Dispose()
    {
        lock (Gate)
            if (--_depth == 0) backends.cuda.enable_flash_sdp(_saved);
    }
}
