using Research.Abstractions;
using System.Text;

namespace Research.Core.Text;

/// <summary>
/// Documents as one causal-LM token stream, each followed by end-of-text and the whole preceded by one:
/// <c>[EOT] d₁ [EOT] d₂ [EOT] … d_N [EOT]</c>. A model predicts every position but the first, so every document token
/// and every document's end is predicted, the first document's first token included, each from a document boundary.
/// </summary>
public sealed class TokenStream
{
    TokenStream(int[] ids, int documents, long utf8Bytes)
    {
        Ids = ids;
        Documents = documents;
        Utf8Bytes = utf8Bytes;
    }

    public static TokenStream FromDocuments(IEnumerable<string> documents, ITextTokenizer tokenizer)
    {
        var ids = new List<int> { tokenizer.EndOfTextId };
        int n = 0;
        long bytes = 0;
        foreach (var d in documents)
        {
            ids.AddRange(tokenizer.Encode(d));
            ids.Add(tokenizer.EndOfTextId);
            bytes += Encoding.UTF8.GetByteCount(d) + 1;
            n++;
        }
        return new TokenStream([.. ids], n, bytes);
    }

    /// <summary>Documents given as token ids (pre-tokenized rows), joined as <see cref="FromDocuments"/> joins texts. The
    /// bytes behind them are unknown: <see cref="Utf8Bytes"/> is 0 (bits per byte not reported).</summary>
    public static TokenStream FromTokenIds(IEnumerable<int[]> documents, ITextTokenizer tokenizer)
    {
        var ids = new List<int> { tokenizer.EndOfTextId };
        int n = 0;
        foreach (var d in documents)
        {
            ids.AddRange(d);
            ids.Add(tokenizer.EndOfTextId);
            n++;
        }
        return new TokenStream([.. ids], n, 0);
    }

    public IReadOnlyList<int> Ids { get; }
    public int Documents { get; }

    /// <summary>
    /// The bytes the predicted tokens stand for: the documents' UTF-8 bytes and one byte per document for its end-of-text
    /// (the separator it replaces). The same for every tokenizer, so bits per byte compare across tokenizers.
    /// </summary>
    public long Utf8Bytes { get; }

    /// <summary>The tokens a model predicts: all but the first end-of-text.</summary>
    public long PredictedTokens => Math.Max(Ids.Count - 1, 0);
}
