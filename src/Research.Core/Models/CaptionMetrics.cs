using Research.Abstractions;
using Research.Core.Data;
using Research.Core.Precision;
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
    /// <remarks>
    /// Items are decoded <paramref name="batchSize"/> at a time, each in its own row: the prompt at the row's start, the
    /// picks written after it, padding after that. Attention is causal, so the logits at a row's position s + k − 1 read
    /// only that row's prompt and first k picks, never the padding: the result is the item-by-item greedy decoding
    /// (<see cref="Generation.Generate(Vlm, Tensor, IReadOnlyList{long}, GenerationOptions, Generator?)"/>), with the
    /// image prefix computed once per batch instead of once per token.
    /// </remarks>
    public static CaptionScore Score(Vlm model, TensorDataset items, int limit, int batchSize = 128, PrecisionPolicy? precision = null)
    {
        var picks = ClassWordPicks(model, items, limit, batchSize, precision);
        var t = items.Tensors;
        var starts = t[FashionCaptionSource.WordStart].data<long>().ToArray();
        var ends = t[FashionCaptionSource.WordEnd].data<long>().ToArray();
        var ids = t[Batch.InputIds];
        long exact = 0, tokens = 0, correct = 0;
        for (int i = 0; i < picks.Length; i++)
        {
            using var row = ids[i];
            var truth = row.data<long>().ToArray()[(int)starts[i]..(int)ends[i]];
            var right = truth.Where((token, k) => picks[i][k] == token).Count();
            tokens += truth.Length;
            correct += right;
            if (right == truth.Length) exact++;
        }
        return new CaptionScore(picks.Length, exact, tokens, correct);
    }

    /// <summary>The tokens generated in place of each item's class word (as many as it has), by <see cref="Score"/>'s
    /// decoding.</summary>
    public static long[][] ClassWordPicks(Vlm model, TensorDataset items, int limit, int batchSize = 128, PrecisionPolicy? precision = null)
    {
        precision ??= PrecisionPolicy.Fp32;
        var t = items.Tensors;
        var n = (int)Math.Min(limit, items.Count);
        var starts = t[FashionCaptionSource.WordStart].data<long>().ToArray();
        var ends = t[FashionCaptionSource.WordEnd].data<long>().ToArray();
        var lm = model.LanguageModel;
        var p = model.PrefixTokens;
        var device = model.parameters().First().device;
        var result = new long[n][];
        var wasTraining = model.training;
        model.eval();
        try
        {
            using var _ = no_grad();
            for (int b0 = 0; b0 < n; b0 += batchSize)
            {
                using var scope = NewDisposeScope();
                int b = Math.Min(batchSize, n - b0);
                var s = starts[b0..(b0 + b)];
                var len = Enumerable.Range(0, b).Select(i => (int)(ends[b0 + i] - s[i])).ToArray();
                int steps = len.Max();
                // Positions read: up to s + steps − 2 for the longest word; a row holds max(s) + steps − 1 of them.
                int width = (int)s.Max() + Math.Max(steps - 1, 0);
                if (p + width > lm.MaxPositions)
                    throw new ArgumentException($"captions of {width} tokens after {p} prefix tokens exceed the language model's {lm.MaxPositions} positions");
                // The prompts, then zeros (the picks overwrite them); a row may need more positions than the data's T.
                var rows = new long[b * width];
                var given = t[Batch.InputIds].narrow(0, b0, b).data<long>().ToArray();
                long tokensPerRow = t[Batch.InputIds].shape[1];
                for (int i = 0; i < b; i++)
                    for (int q = 0; q < s[i]; q++) rows[i * width + q] = given[i * tokensPerRow + q];
                var prefix = model.Prefix(precision.Input(t[Batch.Image].narrow(0, b0, b).to(device)));
                var picked = Enumerable.Range(0, b).Select(i => new long[len[i]]).ToArray();
                for (int k = 0; k < steps; k++)
                {
                    using var stepScope = NewDisposeScope();
                    var ids = tensor(rows, [b, width], device: device);
                    var logits = PrecisionPolicy.Output(lm.LogitsOfEmbeddings(cat([prefix, lm.EmbedTokens(ids)], 1)));
                    var at = tensor(s.Select(x => p + x + k - 1).ToArray(), device: device).view(b, 1, 1).expand(b, 1, logits.shape[2]);
                    var next = logits.gather(1, at).squeeze(1).argmax(-1).cpu().data<long>().ToArray();
                    for (int i = 0; i < b; i++)
                    {
                        if (k < len[i]) picked[i][k] = next[i];
                        if (s[i] + k < width) rows[i * width + s[i] + k] = next[i];
                    }
                }
                for (int i = 0; i < b; i++) result[b0 + i] = picked[i];
            }
        }
        finally { model.train(wasTraining); }
        return result;
    }
}
