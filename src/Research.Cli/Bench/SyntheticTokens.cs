using Research.Core.Data;
using static TorchSharp.torch;

using Research.Core;
namespace Research.Cli.Bench;

/// <summary>
/// Random token sequences whose label is a function of the tokens: the residue class r = token mod C that
/// occurs most often in the sequence, ties going to the smaller r. A mean-pooled model can represent it
/// exactly (the pooled embedding can carry the residue histogram; the head picks its argmax), so a few hundred
/// steps learn it — unlike Σ tokens mod C, which is parity-like and needs far longer.
/// Tokens are uniform on [0, vocab), drawn from the given generator only.
/// </summary>
public static class SyntheticTokens
{
    /// <summary><paramref name="samples"/> sequences of <paramref name="length"/> int64 tokens with their labels.</summary>
    public static TensorDataset Make(int samples, int length, int vocab, int classes, Generator generator)
    {
        if (vocab < classes) throw new ArgumentException($"a vocabulary of {vocab} cannot cover {classes} residue classes");
        using var _ = NewDisposeScope();
        var tokens = randint(0, vocab, [samples, length], dtype: ScalarType.Int64, generator: generator);
        return new TensorDataset(tokens.DetachFromDisposeScope(), Labels(tokens, classes).DetachFromDisposeScope(), classes);
    }

    /// <summary>The label of each row of <paramref name="tokens"/> [N, T]: argmax_r #{t : token_t mod C = r}, smallest r on ties.</summary>
    public static Tensor Labels(Tensor tokens, int classes)
    {
        using var _ = NewDisposeScope();
        var counts = nn.functional.one_hot(tokens.remainder(classes), classes).sum(1);
        // Scaling by C and adding C−1−r makes every score distinct and keeps the smallest r on ties.
        var score = counts.mul(classes).add(arange(classes - 1, -1, -1, dtype: ScalarType.Int64));
        return score.argmax(1).MoveToOuterDisposeScope();
    }
}
