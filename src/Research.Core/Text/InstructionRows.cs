using System.Text;
using Research.Abstractions;
using static TorchSharp.torch;

namespace Research.Core.Text;

/// <summary>One prompt/response pair and where it came from (for messages: "train.jsonl, line 7").</summary>
public sealed record InstructionPair(string Prompt, string Response, string Where);

/// <summary>A run of token ids of one row, whether its positions count toward the loss, and the UTF-8 bytes behind them
/// when they count (for bits per byte).</summary>
public sealed record InstructionPiece(int[] Ids, bool Counts, long Utf8Bytes);

/// <summary>One row before cutting: its pieces in order, and where it came from ("FILE, line N").</summary>
public sealed record InstructionSequence(IReadOnlyList<InstructionPiece> Pieces, string Where);

/// <summary>
/// Prompt/response pairs (or conversations, <see cref="ChatTemplate"/>) as causal-LM rows for supervised fine-tuning with
/// the loss on the response only: <c>[EOT] prompt response [EOT]</c>, prompt and response tokenized separately (so the
/// boundary between them is a token boundary, as Hugging Face's TRL masks by the prompt's token count), cut to T =
/// <c>max_tokens</c>. Targets are the row's ids on the response tokens and the closing end-of-text, and
/// <see cref="Batch.IgnoreIndex"/> (−100) on the opening end-of-text, the prompt and the padding: the causal-LM task
/// shifts inside (position t predicts t + 1), so the last prompt position predicts the first response token and the
/// loss Σℓ / N counts exactly the response tokens (and each end).
/// <para>Padded (the default): one row per record, right-padded to the longest row. Packed: the cut rows concatenated in
/// order into one stream and cut into windows of T that share one token (window w starts at w·(T − 1), as the causal-LM
/// windows of <c>FortuneSource.Windows</c>), the last window right-padded; each window's first target is −100, since that
/// token is predicted at the end of the window before. So every counted token is counted once, after the same previous
/// token, as in the padded rows. Attention is not blocked across rows: a row's prompt may see the rows before it in its
/// window (each row begins with end-of-text, the document boundary of pre-training's packing, as TRL's
/// <c>packing=True</c> without flash-attention's position reset does), and a row cut by a window boundary sees only its
/// own part in the next window.</para>
/// </summary>
public sealed class InstructionRows
{
    InstructionRows(int rows, int length, long[] inputIds, long[] attentionMask, long[] targets, long counted, long utf8Bytes, int truncated)
    {
        Rows = rows; Length = length; InputIds = inputIds; AttentionMask = attentionMask; Targets = targets;
        CountedTargets = counted; Utf8Bytes = utf8Bytes; Truncated = truncated;
    }

    public int Rows { get; }
    /// <summary>T, the longest row after cutting (≤ max_tokens), or the window when packed.</summary>
    public int Length { get; }
    /// <summary>[N, T] row-major.</summary>
    public long[] InputIds { get; }
    /// <summary>[N, T] row-major: 1 on ids, 0 on padding.</summary>
    public long[] AttentionMask { get; }
    /// <summary>[N, T] row-major: response ids and the closing end-of-text; −100 elsewhere.</summary>
    public long[] Targets { get; }
    /// <summary>Targets that count, over all rows.</summary>
    public long CountedTargets { get; }
    /// <summary>The UTF-8 bytes behind the counted targets (each response's bytes and one per closing end-of-text), for
    /// bits per byte; 0 when any row was cut (its counted tokens no longer stand for whole bytes of text).</summary>
    public long Utf8Bytes { get; }
    /// <summary>Records whose row was cut to fit.</summary>
    public int Truncated { get; }

    /// <exception cref="InvalidDataException">A prompt leaves no room for its response within <paramref name="maxTokens"/>:
    /// one line naming the pair's file and row.</exception>
    public static InstructionRows Build(IReadOnlyList<InstructionPair> pairs, ITextTokenizer tokenizer, int maxTokens, bool packing = false)
    {
        CheckMaxTokens(maxTokens);
        var sequences = pairs.Select(pair =>
        {
            var prompt = tokenizer.Encode(pair.Prompt);
            // Positions [0, 1 + prompt) are the opening end-of-text and the prompt: they never count.
            if (1 + prompt.Length >= maxTokens)
                throw new InvalidDataException($"{pair.Where}: the prompt is {prompt.Length} tokens, which leaves no room for the response within max_tokens = {maxTokens}");
            return new InstructionSequence([
                new([tokenizer.EndOfTextId], false, 0), new(prompt, false, 0),
                new(tokenizer.Encode(pair.Response), true, Encoding.UTF8.GetByteCount(pair.Response)),
                new([tokenizer.EndOfTextId], true, 1)], pair.Where);
        }).ToList();
        return Build(sequences, tokenizer, maxTokens, packing);
    }

    /// <summary>Rows of pieces (<see cref="ChatTemplate.Sequence"/>), cut to <paramref name="maxTokens"/>, padded or packed.</summary>
    /// <exception cref="InvalidDataException">A row whose first counted token lies beyond <paramref name="maxTokens"/>: one
    /// line naming its file and row.</exception>
    public static InstructionRows Build(IReadOnlyList<InstructionSequence> sequences, ITextTokenizer tokenizer, int maxTokens, bool packing = false)
    {
        CheckMaxTokens(maxTokens);
        var rows = new List<(int[] Ids, bool[] Counts)>(sequences.Count);
        long bytes = 0;
        int truncated = 0;
        foreach (var s in sequences)
        {
            var ids = s.Pieces.SelectMany(p => p.Ids).ToArray();
            var counts = s.Pieces.SelectMany(p => Enumerable.Repeat(p.Counts, p.Ids.Length)).ToArray();
            var first = Array.IndexOf(counts, true);
            if (first < 0 || first >= maxTokens)
                throw new InvalidDataException($"{s.Where}: {(first < 0 ? "no token counts toward the loss (every counted turn is empty)" : $"the first counted token is token {first + 1}, beyond max_tokens = {maxTokens}")}");
            if (ids.Length > maxTokens) { ids = ids[..maxTokens]; counts = counts[..maxTokens]; truncated++; }
            else bytes += s.Pieces.Sum(p => p.Utf8Bytes);
            rows.Add((ids, counts));
        }
        return packing ? Packed(rows, tokenizer.PadId, maxTokens, bytes, truncated) : Padded(rows, tokenizer.PadId, bytes, truncated);
    }

    static void CheckMaxTokens(int maxTokens)
    {
        if (maxTokens < 3) throw new ArgumentOutOfRangeException(nameof(maxTokens), $"max_tokens {maxTokens} leaves no room for a prompt and a response between two end-of-text ids");
    }

    static InstructionRows Padded(List<(int[] Ids, bool[] Counts)> rows, int padId, long bytes, int truncated)
    {
        var length = rows.Count == 0 ? 0 : rows.Max(r => r.Ids.Length);
        var inputIds = new long[(long)rows.Count * length];
        var mask = new long[inputIds.Length];
        var targets = new long[inputIds.Length];
        long counted = 0;
        for (int i = 0; i < rows.Count; i++)
            for (int j = 0; j < length; j++)
            {
                var k = (long)i * length + j;
                var real = j < rows[i].Ids.Length;
                inputIds[k] = real ? rows[i].Ids[j] : padId;
                mask[k] = real ? 1 : 0;
                var counts = real && rows[i].Counts[j];
                targets[k] = counts ? rows[i].Ids[j] : Batch.IgnoreIndex;
                if (counts) counted++;
            }
        return new InstructionRows(rows.Count, length, inputIds, mask, targets, counted, truncated > 0 ? 0 : bytes, truncated);
    }

    static InstructionRows Packed(List<(int[] Ids, bool[] Counts)> rows, int padId, int window, long bytes, int truncated)
    {
        var ids = rows.SelectMany(r => r.Ids).ToArray();
        var counts = rows.SelectMany(r => r.Counts).ToArray();
        var length = Math.Min(window, ids.Length);
        // Windows start at w·(T − 1) while a token remains to be predicted after the start.
        var windows = ids.Length < 2 ? 0 : (ids.Length - 2) / (length - 1) + 1;
        var inputIds = new long[(long)windows * length];
        var mask = new long[inputIds.Length];
        var targets = new long[inputIds.Length];
        long counted = 0;
        for (int w = 0; w < windows; w++)
            for (int j = 0; j < length; j++)
            {
                var k = (long)w * length + j;
                var p = (long)w * (length - 1) + j;
                var real = p < ids.Length;
                inputIds[k] = real ? ids[p] : padId;
                mask[k] = real ? 1 : 0;
                var isCounted = real && j > 0 && counts[p];
                targets[k] = isCounted ? ids[p] : Batch.IgnoreIndex;
                if (isCounted) counted++;
            }
        return new InstructionRows(windows, length, inputIds, mask, targets, counted, truncated > 0 ? 0 : bytes, truncated);
    }

    /// <summary><c>input_ids</c>, <c>attention_mask</c> and <c>targets</c>, each [N, T] int64 — new tensors the caller owns.</summary>
    public Batch ToBatch() => new([
        new(Batch.InputIds, tensor(InputIds, [Rows, Length])),
        new(Batch.AttentionMask, tensor(AttentionMask, [Rows, Length])),
        new(Batch.Targets, tensor(Targets, [Rows, Length])),
    ]);
}
