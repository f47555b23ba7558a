namespace Research.Core.Text;

/// <summary>
/// Language-model scores from a summed loss. A model's loss per token depends on its tokenizer (fewer, longer tokens
/// make each harder to predict), so perplexities of models with different tokenizers do not compare; bits per byte
/// divide the same total information by a count that does not depend on the tokenizer.
/// </summary>
public static class LanguageModelMetrics
{
    /// <summary>Perplexity = exp(ℓ̄), with ℓ̄ the mean cross-entropy per predicted token in nats.</summary>
    public static double Perplexity(double meanLossNats) => Math.Exp(meanLossNats);

    /// <summary>
    /// Bits per byte = (Σ ℓ / ln 2) / B: the total cross-entropy of the evaluated tokens Σ ℓ in nats, converted to bits,
    /// over the B UTF-8 bytes of the text those tokens stand for. Gao et al. 2020, "The Pile" (arXiv 2101.00027), write it
    /// BPB = (L_T / L_B)·ℓ̄ / ln 2 with L_T tokens, L_B bytes and ℓ̄ the mean loss per token — the same number. Use
    /// <see cref="TokenStream.Utf8Bytes"/> for B when Σ ℓ is over a stream's predicted tokens.
    /// </summary>
    public static double BitsPerByte(double totalLossNats, long utf8Bytes)
    {
        if (utf8Bytes <= 0) throw new ArgumentOutOfRangeException(nameof(utf8Bytes), $"bits per byte need a positive number of bytes, not {utf8Bytes}");
        return totalLossNats / Math.Log(2) / utf8Bytes;
    }
}
