using System.Text;
using Research.Abstractions;
using static TorchSharp.torch;

namespace Research.Core.Text;

/// <summary>One prompt/response pair and where it came from (for messages: "train.jsonl, line 7").</summary>
public sealed record InstructionPair(string Prompt, string Response, string Where);

/// <summary>
/// Prompt/response pairs as causal-LM rows for supervised fine-tuning with the loss on the response only, one padded row
/// per pair: <c>[EOT] prompt response [EOT]</c>, prompt and response tokenized separately (so the boundary between them
/// is a token boundary, as Hugging Face's TRL masks by the prompt's token count), cut to T = <c>max_tokens</c> and
/// right-padded to the longest row. Targets are the row's ids on the response tokens and the closing end-of-text, and
/// <see cref="Batch.IgnoreIndex"/> (−100) on the opening end-of-text, the prompt and the padding: the causal-LM task
/// shifts inside (position t predicts t + 1), so the last prompt position predicts the first response token and the
/// loss Σℓ / N counts exactly the response tokens (and each end).
/// </summary>
public sealed class InstructionRows
{
    InstructionRows(int rows, int length, long[] inputIds, long[] attentionMask, long[] targets, long counted, long utf8Bytes, int truncated)
    {
        Rows = rows; Length = length; InputIds = inputIds; AttentionMask = attentionMask; Targets = targets;
        CountedTargets = counted; Utf8Bytes = utf8Bytes; Truncated = truncated;
    }

    public int Rows { get; }
    /// <summary>T, the longest row after cutting (≤ max_tokens).</summary>
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
    /// <summary>Pairs whose row was cut to fit.</summary>
    public int Truncated { get; }

    /// <exception cref="InvalidDataException">A prompt leaves no room for its response within <paramref name="maxTokens"/>:
    /// one line naming the pair's file and row.</exception>
    public static InstructionRows Build(IReadOnlyList<InstructionPair> pairs, ITextTokenizer tokenizer, int maxTokens)
    {
        if (maxTokens < 3) throw new ArgumentOutOfRangeException(nameof(maxTokens), $"max_tokens {maxTokens} leaves no room for a prompt and a response between two end-of-text ids");
        var rows = new List<(int[] Ids, int PromptEnd)>(pairs.Count);
        long bytes = 0;
        int truncated = 0;
        foreach (var pair in pairs)
        {
            var prompt = tokenizer.Encode(pair.Prompt);
            var response = tokenizer.Encode(pair.Response);
            // Positions [0, promptEnd) are the opening end-of-text and the prompt: they never count.
            var promptEnd = 1 + prompt.Length;
            if (promptEnd >= maxTokens)
                throw new InvalidDataException($"{pair.Where}: the prompt is {prompt.Length} tokens, which leaves no room for the response within max_tokens = {maxTokens}");
            int[] ids = [tokenizer.EndOfTextId, .. prompt, .. response, tokenizer.EndOfTextId];
            if (ids.Length > maxTokens) { ids = ids[..maxTokens]; truncated++; }
            else bytes += Encoding.UTF8.GetByteCount(pair.Response) + 1;
            rows.Add((ids, promptEnd));
        }
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
                inputIds[k] = real ? rows[i].Ids[j] : tokenizer.PadId;
                mask[k] = real ? 1 : 0;
                var counts = real && j >= rows[i].PromptEnd;
                targets[k] = counts ? rows[i].Ids[j] : Batch.IgnoreIndex;
                if (counts) counted++;
            }
        return new InstructionRows(rows.Count, length, inputIds, mask, targets, counted, truncated > 0 ? 0 : bytes, truncated);
    }

    /// <summary><c>input_ids</c>, <c>attention_mask</c> and <c>targets</c>, each [N, T] int64 — new tensors the caller owns.</summary>
    public Batch ToBatch() => new([
        new(Batch.InputIds, tensor(InputIds, [Rows, Length])),
        new(Batch.AttentionMask, tensor(AttentionMask, [Rows, Length])),
        new(Batch.Targets, tensor(Targets, [Rows, Length])),
    ]);
}
