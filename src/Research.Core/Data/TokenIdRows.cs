using Research.Abstractions;
using Research.Core.Text;

namespace Research.Core.Data;

/// <summary>
/// Pre-tokenized rows of the text-file sources (<see cref="TextFileOptions.InputIdsColumn"/>): the ids stand where the
/// tokenizer's ids of a text would, so the tensors are made by the same code as the text path's. <c>causal-lm</c>: each
/// row a document, joined with end-of-text into one stream and cut into windows (<see cref="TokenStream.FromTokenIds"/>,
/// <see cref="LmWindows"/>). <c>instruct</c>: each row as it is (a tokenized dataset's row already holds its
/// end-of-text ids, if any), its tokens counting where its label is not −100 (<see cref="InstructionRows"/> cuts, pads
/// or packs). Bits per byte are not reported: the bytes behind the ids are unknown.
/// </summary>
public static class TokenIdRows
{
    public static TensorDataset Dataset(IReadOnlyList<TextRecord> records, TextFileOptions o, ITextTokenizer tokenizer)
    {
        if (o.Objective == "causal-lm")
        {
            var stream = TokenStream.FromTokenIds(records.Select(r => Ids(r, o.InputIdsColumn, tokenizer, o.TextTokenizer)), tokenizer);
            var windows = LmWindows.Pack(stream, o.MaxTokens, o.MaxTokens - 1, tokenizer.PadId);
            return new TensorDataset(windows.ToBatch(), tokenizer.VocabSize, 0);
        }
        var sequences = records.Select(r => Sequence(r, o, tokenizer)).ToList();
        var rows = InstructionRows.Build(sequences, tokenizer, o.MaxTokens, o.Packing);
        return new TensorDataset(rows.ToBatch(), tokenizer.VocabSize, 0);
    }

    /// <summary>A row's ids, each refused naming the file and the row unless it is an id of the tokenizer (the model's
    /// vocabulary is the tokenizer's).</summary>
    static int[] Ids(TextRecord r, string column, ITextTokenizer tokenizer, string name)
    {
        var ids = r.Ids[column];
        var result = new int[ids.Length];
        for (int j = 0; j < ids.Length; j++)
        {
            if (ids[j] < 0 || ids[j] >= tokenizer.VocabSize)
                throw new InvalidDataException($"{r.Where}: {column}[{j}] = {ids[j]} is not a token id of text_tokenizer \"{name}\" (0 … {tokenizer.VocabSize - 1})");
            result[j] = (int)ids[j];
        }
        return result;
    }

    /// <summary>An instruct row: runs of ids that count (label = id) or do not (label −100). Hugging Face's labels are
    /// unshifted (the model shifts), as our targets are; a label that is neither is refused, since the loss here predicts
    /// each counted token itself.</summary>
    static InstructionSequence Sequence(TextRecord r, TextFileOptions o, ITextTokenizer tokenizer)
    {
        var ids = Ids(r, o.InputIdsColumn, tokenizer, o.TextTokenizer);
        var labels = r.Ids[o.LabelsColumn];
        if (labels.Length != ids.Length)
            throw new InvalidDataException($"{r.Where}: {o.LabelsColumn} has {labels.Length} labels, {o.InputIdsColumn} {ids.Length} ids (one label per token)");
        var pieces = new List<InstructionPiece>();
        for (int start = 0; start < ids.Length;)
        {
            var counts = Counts(labels, ids, start, r, o);
            var end = start + 1;
            while (end < ids.Length && Counts(labels, ids, end, r, o) == counts) end++;
            pieces.Add(new InstructionPiece(ids[start..end], counts, 0));
            start = end;
        }
        return new InstructionSequence(pieces, r.Where);
    }

    static bool Counts(long[] labels, int[] ids, int j, TextRecord r, TextFileOptions o) =>
        labels[j] == Batch.IgnoreIndex ? false
        : labels[j] == ids[j] ? true
        : throw new InvalidDataException($"{r.Where}: {o.LabelsColumn}[{j}] = {labels[j]}, neither −100 (not counted) nor {o.InputIdsColumn}[{j}] = {ids[j]} (counted)");
}
