using Research.Abstractions;
using Research.Core.Data;
using Research.Core.Precision;
using Research.Core.Text;
using static TorchSharp.torch;

namespace Research.Core.Models;

/// <summary>How well a VLM names the class in a caption: over items, the share whose class word it generated exactly, and
/// the share of the class word's tokens it generated right.</summary>
/// <param name="Items">Captions scored.</param>
/// <param name="ExactMatches">Captions whose every class-word token was generated right.</param>
/// <param name="WordTokens">Class-word tokens over all captions.</param>
/// <param name="CorrectTokens">Class-word tokens generated right (position by position).</param>
/// <remarks><see cref="Named"/> is the looser reading of "names the class": the caption the model goes on to write
/// (<see cref="CaptionMetrics.Continuation"/> tokens, to its end id) names the right class first — an adjective before
/// the word ("it is a grey coat" where the truth is "it is a coat") is not an error there, as it is for the exact match.</remarks>
public sealed record CaptionScore(long Items, long ExactMatches, long WordTokens, long CorrectTokens)
{
    /// <summary>Captions whose continuation's first class word is the image's.</summary>
    public long NamedRight { get; init; }
    /// <summary>Captions whose continuation names no class at all (the rest of those not named right name a wrong one).</summary>
    public long NamedNone { get; init; }
    public double ExactMatch => Items == 0 ? double.NaN : (double)ExactMatches / Items;
    public double TokenAccuracy => WordTokens == 0 ? double.NaN : (double)CorrectTokens / WordTokens;
    public double Named => Items == 0 ? double.NaN : (double)NamedRight / Items;
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
    public static CaptionScore Score(Vlm model, TensorDataset items, int limit, ITextTokenizer tokenizer, int batchSize = 128, PrecisionPolicy? precision = null)
    {
        var picks = ClassWordPicks(model, items, limit, batchSize, precision, Continuation);
        var t = items.Tensors;
        var starts = t[FashionCaptionSource.WordStart].data<long>().ToArray();
        var ends = t[FashionCaptionSource.WordEnd].data<long>().ToArray();
        var ids = t[Batch.InputIds];
        var labels = t[TensorDataset.Labels].data<long>().ToArray();
        long exact = 0, tokens = 0, correct = 0, named = 0, none = 0;
        for (int i = 0; i < picks.Length; i++)
        {
            var written = picks[i].TakeWhile(id => id != tokenizer.EndOfTextId).Select(id => (int)id).ToArray();
            var first = FirstClass(tokenizer.Decode(written));
            if (first == labels[i]) named++;
            else if (first < 0) none++;
            using var row = ids[i];
            var truth = row.data<long>().ToArray()[(int)starts[i]..(int)ends[i]];
            var right = truth.Where((token, k) => k < picks[i].Length && picks[i][k] == token).Count();
            tokens += truth.Length;
            correct += right;
            if (right == truth.Length) exact++;
        }
        return new CaptionScore(picks.Length, exact, tokens, correct) { NamedRight = named, NamedNone = none };
    }

    /// <summary>Tokens generated after the prompt for <see cref="CaptionScore.Named"/>: room for an adjective and the longest
    /// class word in bytes (" light" + " pair of trousers" = 23), the longest tokenization there is.</summary>
    public const int Continuation = 24;

    /// <summary>The class of the first class word that stands as a whole word in <paramref name="text"/> (after its start,
    /// a space or punctuation; the longest where two start at one place), or −1.</summary>
    public static int FirstClass(string text)
    {
        var words = FashionCaptionSource.ClassWords;
        for (int at = 0; at < text.Length; at++)
        {
            if (at > 0 && char.IsLetterOrDigit(text[at - 1]) || at > 0 && text[at - 1] == '-') continue;
            var found = -1;
            for (int c = 0; c < words.Count; c++)
                if (string.CompareOrdinal(text, at, words[c], 0, words[c].Length) == 0
                    && (at + words[c].Length == text.Length || !char.IsLetterOrDigit(text[at + words[c].Length]))
                    && (found < 0 || words[c].Length > words[found].Length))
                    found = c;
            if (found >= 0) return found;
        }
        return -1;
    }

    /// <summary>The tokens generated in place of each item's class word (as many as it has), by <see cref="Score"/>'s
    /// decoding.</summary>
    /// <param name="continuation">Tokens generated per item at least (0: as many as its class word has).</param>
    public static long[][] ClassWordPicks(Vlm model, TensorDataset items, int limit, int batchSize = 128, PrecisionPolicy? precision = null, int continuation = 0)
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
                var len = Enumerable.Range(0, b).Select(i => Math.Max(continuation, (int)(ends[b0 + i] - s[i]))).ToArray();
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
