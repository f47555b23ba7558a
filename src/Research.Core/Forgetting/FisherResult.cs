using Research.Abstractions;
using System.Globalization;
using static TorchSharp.torch;

namespace Research.Core.Forgetting;

/// <summary>
/// A diagonal Fisher by parameter name, with how it was computed. Owns its tensors (fp32, shaped as the parameters,
/// detached, in no dispose scope of <see cref="Fisher"/>): dispose the result, or take the tensors and dispose them.
/// </summary>
/// <param name="Kind">Which Fisher (<see cref="FisherKind"/>).</param>
/// <param name="Diagonal">F for every trainable parameter (<c>requires_grad</c>), keyed by its name in the model.</param>
/// <param name="Samples">N, the samples used (after <c>maxSamples</c>).</param>
/// <param name="Batches">M, the mini-batches they came in, those with a counted target (the divisor of
/// <see cref="FisherKind.Batched"/>).</param>
/// <param name="Fallback">The parameters computed by the per-sample loop (one backward per sample, and per class for
/// <see cref="FisherKind.Exact"/>) instead of the batched identity Σᵢ(gᵢxᵢᵀ)² = (G²)ᵀ(X²), each with the reason.
/// Empty for <see cref="FisherKind.Batched"/>, which needs no per-sample gradient.</param>
/// <param name="Tokens">For sequence outputs, Σ_b n_b: the counted positions (targets ≠ <see cref="Batch.IgnoreIndex"/>
/// after the task's shift) the per-sample variants are divided by; null for a classifier, whose divisor is N.</param>
public sealed record FisherResult(
    FisherKind Kind,
    IReadOnlyDictionary<string, Tensor> Diagonal,
    long Samples,
    long Batches,
    IReadOnlyDictionary<string, string> Fallback,
    long? Tokens = null) : IDisposable
{
    /// <summary>One paragraph a run log can carry: the kind, N (and the tokens of sequences), M, and which parameters used
    /// the per-sample loop and why.</summary>
    public string Describe()
    {
        var inv = CultureInfo.InvariantCulture;
        var head = Tokens is { } tokens
            ? string.Format(inv, "{0} Fisher over {1:N0} sequences / {2:N0} tokens in {3:N0} batches (teacher-forced, per token)", Kind, Samples, tokens, Batches)
            : string.Format(inv, "{0} Fisher over {1:N0} samples in {2:N0} batches", Kind, Samples, Batches);
        if (Kind == FisherKind.Batched) return head + ": squared mini-batch mean gradients (not a per-sample Fisher).";
        if (Fallback.Count == 0)
            return head + string.Format(inv, ": all {0} parameters by the batched per-sample identity (G²)ᵀ(X²).", Diagonal.Count);
        var reasons = string.Join("; ", Fallback.GroupBy(f => f.Value).Select(g => string.Join(", ", g.Select(f => f.Key)) + ": " + g.Key));
        return head + string.Format(inv, ": {0} of {1} parameters by the per-sample fallback loop: {2}.",
            Fallback.Count, Diagonal.Count, reasons);
    }

    public void Dispose()
    {
        foreach (var t in Diagonal.Values) t.Dispose();
    }
}
