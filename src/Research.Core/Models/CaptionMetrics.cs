using Research.Abstractions;
using Research.Core.Data;
using static TorchSharp.torch;

namespace Research.Core.Models;

/// <summary>How well a VLM names the class in a caption: over items, the share whose class word it generated exactly, and
/// the share of the class word's tokens it generated right.</summary>
/// <param name="Items">Captions scored.</param>
/// <param name="ExactMatches">Captions whose every class-word token was generated right.</param>
/// <param name="WordTokens">Class-word tokens over all captions.</param>
/// <param name="CorrectTokens">Class-word tokens generated right (position by position).</param>
public sealed record CaptionScore(long Items, long ExactMatches, long WordTokens, long CorrectTokens)
{
    public double ExactMatch => Items == 0 ? double.NaN : (double)ExactMatches / Items;
    public double TokenAccuracy => WordTokens == 0 ? double.NaN : (double)CorrectTokens / WordTokens;
}

/// <summary>The caption metrics of <see cref="FashionCaptionSource"/> items.</summary>
public static class CaptionMetrics
{
    /// <summary>
    /// For each of the first <paramref name="limit"/> items: the caption's tokens before the class word are the prompt
    /// (the begin id, "this is a dark"), the model continues it greedily after the image's prefix for as many tokens as
    /// the class word has, free-running (each token it picked is read by the next step, not the true one), and the
    /// generated tokens are compared with the class word's, position by position.
    /// </summary>
    public static CaptionScore Score(Vlm model, TensorDataset items, int limit)
    {
        var t = items.Tensors;
        var n = (int)Math.Min(limit, items.Count);
        var ids = t[Batch.InputIds];
        var starts = t[FashionCaptionSource.WordStart].data<long>().ToArray();
        var ends = t[FashionCaptionSource.WordEnd].data<long>().ToArray();
        long exact = 0, tokens = 0, correct = 0;
        for (int i = 0; i < n; i++)
        {
            using var scope = NewDisposeScope();
            var row = ids[i].data<long>().ToArray();
            var prompt = row[..(int)starts[i]];
            var truth = row[(int)starts[i]..(int)ends[i]];
            var generated = model.Generate(t[Batch.Image].narrow(0, i, 1), prompt, new GenerationOptions(truth.Length, new Decoding.Greedy()));
            var right = truth.Where((token, k) => k < generated.Length && generated[k] == token).Count();
            tokens += truth.Length;
            correct += right;
            if (right == truth.Length) exact++;
        }
        return new CaptionScore(n, exact, tokens, correct);
    }
}
