using Research.Abstractions;
using static TorchSharp.torch;

namespace Research.Core.Text;

/// <summary>
/// A token stream cut into rows of T = <c>context</c> tokens for a causal LM, as in Hugging Face's perplexity guide
/// ("Perplexity of fixed-length models", sliding window): window k starts at k·stride; its targets count only the tokens
/// the previous windows did not count, so each of them is predicted once, with at least T − stride tokens of context
/// where the stream has them. Targets are the stream's ids where counted and <see cref="Batch.IgnoreIndex"/> elsewhere
/// (context already counted, padding); the task shifts inside (position t predicts t + 1), so a row's first target
/// never counts, and a window of T tokens predicts at most T − 1: hence stride ≤ T − 1. With stride = T − 1
/// consecutive windows share one token and nothing is predicted twice (training); a smaller stride gives every
/// prediction more context at more cost (evaluation). The last window is padded on the right (attention mask 0,
/// target −100). N = ⌈(L − T) / stride⌉ + 1 windows for a stream of L > T tokens.
/// </summary>
/// <remarks>
/// Identity (a property test checks it): over all windows, every stream position p ≥ 1 is counted exactly once and
/// position 0 never, for any 1 ≤ stride ≤ T − 1 — so Σ counted = <see cref="TokenStream.PredictedTokens"/>.
/// </remarks>
public sealed class LmWindows
{
    LmWindows(int rows, int context, long[] inputIds, long[] attentionMask, long[] targets, long counted)
    {
        Rows = rows;
        Context = context;
        InputIds = inputIds;
        AttentionMask = attentionMask;
        Targets = targets;
        CountedTargets = counted;
    }

    /// <summary>N, the windows.</summary>
    public int Rows { get; }

    /// <summary>T, the tokens of a window.</summary>
    public int Context { get; }

    /// <summary>[N, T] row-major: the stream's ids, the pad id after its end.</summary>
    public long[] InputIds { get; }

    /// <summary>[N, T] row-major: 1 on stream tokens, 0 on padding.</summary>
    public long[] AttentionMask { get; }

    /// <summary>[N, T] row-major: the ids that count, −100 elsewhere.</summary>
    public long[] Targets { get; }

    /// <summary>Targets that count (≠ −100) over all windows.</summary>
    public long CountedTargets { get; }

    public static LmWindows Pack(TokenStream stream, int context, int stride, int padId) => Pack(stream.Ids, context, stride, padId);

    /// <exception cref="ArgumentOutOfRangeException">context &lt; 2, or stride outside [1, context − 1].</exception>
    public static LmWindows Pack(IReadOnlyList<int> stream, int context, int stride, int padId)
    {
        if (context < 2) throw new ArgumentOutOfRangeException(nameof(context), $"context {context} must be at least 2 (a window predicts context − 1 tokens)");
        if (stride < 1 || stride > context - 1)
            throw new ArgumentOutOfRangeException(nameof(stride),
                $"stride {stride} must be in [1, context − 1 = {context - 1}]: a window of {context} tokens predicts {context - 1} (the task shifts inside), so a larger stride would skip tokens");
        var length = stream.Count;
        // Window k covers [k·stride, k·stride + T); the last is the first that reaches the end: k = ⌈(L − T) / stride⌉.
        var rows = length < 2 ? 0 : length <= context ? 1 : (length - context + stride - 1) / stride + 1;
        var inputs = new long[(long)rows * context];
        var mask = new long[inputs.Length];
        var targets = new long[inputs.Length];
        long counted = 0;
        // prevEnd: the first position no window has counted yet; position 0 is never predicted.
        for (int row = 0, prevEnd = 1; row < rows; row++)
        {
            var start = row * stride;
            var end = Math.Min(start + context, length);
            for (int j = 0; j < context; j++)
            {
                var p = start + j;
                var i = (long)row * context + j;
                var real = p < end;
                inputs[i] = real ? stream[p] : padId;
                mask[i] = real ? 1 : 0;
                var counts = real && j >= 1 && p >= prevEnd;
                targets[i] = counts ? stream[p] : Batch.IgnoreIndex;
                if (counts) counted++;
            }
            prevEnd = end;
        }
        return new LmWindows(rows, context, inputs, mask, targets, counted);
    }

    /// <summary>
    /// The windows as a batch: <c>input_ids</c>, <c>attention_mask</c> and <c>targets</c>, each [N, T] int64 — new
    /// tensors the caller owns (<see cref="Batch.DisposeTensors"/>); <see cref="Batch.Narrow"/> gives mini-batches.
    /// </summary>
    public Batch ToBatch() => new([
        new(Batch.InputIds, tensor(InputIds, [Rows, Context])),
        new(Batch.AttentionMask, tensor(AttentionMask, [Rows, Context])),
        new(Batch.Targets, tensor(Targets, [Rows, Context])),
    ]);
}
