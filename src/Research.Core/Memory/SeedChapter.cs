namespace Research.Core.Memory;

/// <summary>A worked example as the seed chapter printed it: figures in GB (1e9 bytes) for the components it names.</summary>
/// <param name="AsGiven">The seed's figures in its own order and rounding.</param>
/// <param name="Figures">The components the seed counted, with its figure for each; a component missing here was left out.</param>
/// <param name="Total">The seed's total, in GB.</param>
public sealed record SeedRow(string AsGiven, IReadOnlyDictionary<Component, double> Figures, double Total)
{
    /// <summary>The components that <paramref name="corrected"/> holds (non-zero) and the seed did not count.</summary>
    public IEnumerable<MemoryComponent> OmittedFrom(MemoryEstimate corrected) =>
        corrected.Components.Where(c => c.Bytes > 0 && !Figures.ContainsKey(c.Kind));
}

/// <summary>
/// The seed chapter's example of full fine-tuning at 7e9 parameters with AdamW, kept as it gave them so the command and the
/// tests can set it beside <see cref="MemoryEstimate"/>. Both of its lines are short by 28 GB: the mixed-precision
/// row leaves out the fp32 master copy and the fp32 line leaves out the gradients. Corrected, each model state is
/// 16 B/param = 112 GB (ZeRO, Rajbhandari et al. 2020).
/// </summary>
public static class SeedChapter
{
    public const double Parameters = 7e9;

    public static readonly SeedRow MixedPrecision = new(
        "weights fp16 14 GB, optimizer states fp32 56 GB, gradients fp16 14 GB, activations ~8 GB, total ~92 GB",
        new Dictionary<Component, double>
        {
            [Component.Weights] = 14, [Component.Gradients] = 14, [Component.OptimizerMoments] = 56, [Component.Activations] = 8,
        },
        Total: 92);

    public static readonly SeedRow Fp32 = new(
        "parameters 28 GB + optimizer states 56 GB = 84 GB",
        new Dictionary<Component, double> { [Component.Weights] = 28, [Component.OptimizerMoments] = 56 },
        Total: 84);
}
