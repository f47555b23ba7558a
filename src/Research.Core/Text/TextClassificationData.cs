using Research.Abstractions;
using static TorchSharp.torch;

namespace Research.Core.Text;

/// <summary>
/// Entries as a sequence-classification set: each entry's ids, wrapped in the tokenizer's sequence prefix and suffix
/// (BERT: [CLS] … [SEP]) and cut to at most L ids (the text is cut, the prefix and suffix kept), right-padded with the pad
/// id to T = the longest row (≤ L); the class is the index of the entry's topic in <see cref="Classes"/>.
/// </summary>
public sealed class TextClassificationData
{
    TextClassificationData(IReadOnlyList<string> classes, int rows, int length, long[] inputIds, long[] attentionMask, long[] labels, int truncated)
    {
        Classes = classes;
        Rows = rows;
        Length = length;
        InputIds = inputIds;
        AttentionMask = attentionMask;
        Labels = labels;
        Truncated = truncated;
    }

    /// <summary>The class names: class c is topic <c>Classes[c]</c>.</summary>
    public IReadOnlyList<string> Classes { get; }
    public int Rows { get; }

    /// <summary>T, the longest row after cutting (≤ L).</summary>
    public int Length { get; }

    /// <summary>[N, T] row-major.</summary>
    public long[] InputIds { get; }

    /// <summary>[N, T] row-major: 1 on ids, 0 on padding.</summary>
    public long[] AttentionMask { get; }

    /// <summary>[N]: class ids.</summary>
    public long[] Labels { get; }

    /// <summary>Entries whose ids were cut to fit L.</summary>
    public int Truncated { get; }

    /// <exception cref="ArgumentException">An entry's topic is not one of <paramref name="classes"/>, or L leaves no room for text.</exception>
    public static TextClassificationData Build(IReadOnlyList<TextEntry> entries, IReadOnlyList<string> classes, ITextTokenizer tokenizer, int maxLength)
    {
        var prefix = tokenizer.SequencePrefix;
        var suffix = tokenizer.SequenceSuffix;
        var room = maxLength - prefix.Count - suffix.Count;
        if (room < 1) throw new ArgumentOutOfRangeException(nameof(maxLength), $"maximum length {maxLength} leaves no room for text between {prefix.Count} prefix and {suffix.Count} suffix id(s)");
        var classOf = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int c = 0; c < classes.Count; c++) classOf.Add(classes[c], c);
        var rows = new List<int[]>(entries.Count);
        var labels = new long[entries.Count];
        int truncated = 0;
        for (int i = 0; i < entries.Count; i++)
        {
            if (!classOf.TryGetValue(entries[i].Topic, out var c))
                throw new ArgumentException($"entry {i} has topic '{entries[i].Topic}', which is not one of the classes ({string.Join(", ", classes)})", nameof(entries));
            labels[i] = c;
            var ids = tokenizer.Encode(entries[i].Text);
            if (ids.Length > room) { ids = ids[..room]; truncated++; }
            rows.Add([.. prefix, .. ids, .. suffix]);
        }
        var length = rows.Count == 0 ? 0 : rows.Max(r => r.Length);
        var inputIds = new long[rows.Count * length];
        var mask = new long[rows.Count * length];
        for (int i = 0; i < rows.Count; i++)
            for (int j = 0; j < length; j++)
            {
                var real = j < rows[i].Length;
                inputIds[i * length + j] = real ? rows[i][j] : tokenizer.PadId;
                mask[i * length + j] = real ? 1 : 0;
            }
        return new TextClassificationData(classes.ToArray(), rows.Count, length, inputIds, mask, labels, truncated);
    }

    /// <summary>
    /// <c>input_ids</c> and <c>attention_mask</c> [N, T] and <c>targets</c> [N], int64 — new tensors the caller owns
    /// (<see cref="Batch.DisposeTensors"/>).
    /// </summary>
    public Batch ToBatch() => new([
        new(Batch.InputIds, tensor(InputIds, [Rows, Length])),
        new(Batch.AttentionMask, tensor(AttentionMask, [Rows, Length])),
        new(Batch.Targets, tensor(Labels, [Rows])),
    ]);
}
