namespace Research.Abstractions;

/// <summary>
/// The shape of a decoder-only transformer that sets how much the backward pass must keep of the forward pass.
/// Activation memory follows Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
/// Models" (§4.1, Eq. 1, no tensor or sequence parallelism), with 16-bit activations and 1-byte dropout masks:
/// <code>
///   per layer, stored for backward:  s·b·h·(34 + 5·a·s/h) = 34·s·b·h + 5·a·s²·b  bytes
///     34·s·b·h   attention 11 (the QKV input, Q, K, V, the projection input, a dropout mask),
///                MLP 19 (its input, the 4h values before and after GeLU, a dropout mask), two layer norms 4
///     5·a·s²·b   one s×s map per head: the softmax output (2), its dropout mask (1), the dropped-out scores (2)
///   full recomputation (Table 2):  2·s·b·h  bytes per layer — only each layer's input is kept, the rest is
///                recomputed during backward
///   total = layers × per layer
/// </code>
/// The attention term grows with s²: for GPT-3 175B (a = 96, s = 2048, h = 12288) 5·a·s/h = 80, so it outweighs the
/// 34 of the linear terms. Left out, as in the paper's per-layer count: the embedding, the final layer norm and the
/// logits (s·b·V values, large for big vocabularies). fp32 activations take about twice these figures.
/// </summary>
/// <param name="Layers">L, transformer layers.</param>
/// <param name="Hidden">h, the hidden size.</param>
/// <param name="Heads">a, attention heads.</param>
/// <param name="Sequence">s, tokens per sequence.</param>
/// <param name="Batch">b, sequences per micro-batch.</param>
public sealed record TransformerShape(long Layers, long Hidden, long Heads, long Sequence, long Batch)
{
    /// <summary>The ratio 5·a·s/h of attention-score bytes to the s·b·h unit: where it exceeds 34, attention dominates.</summary>
    public double AttentionTerm => 5.0 * Heads * Sequence / Hidden;

    /// <summary>Bytes one layer keeps for backward: s·b·h·(34 + 5·a·s/h), or 2·s·b·h with full recomputation.</summary>
    public double ActivationBytesPerLayer(bool recompute)
    {
        double sbh = (double)Sequence * Batch * Hidden;
        return recompute ? 2 * sbh : sbh * (34 + AttentionTerm);
    }

    /// <summary>Bytes all layers keep for backward: L × the per-layer figure.</summary>
    public double ActivationBytes(bool recompute) => Layers * ActivationBytesPerLayer(recompute);
}
