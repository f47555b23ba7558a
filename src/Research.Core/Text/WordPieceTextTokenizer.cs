using Research.Abstractions;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;
using Research.Core.Files;

namespace Research.Core.Text;

/// <summary>
/// BERT's WordPiece over a vocab.txt (one token per line; the id is the line's index), uncased as Hugging Face's
/// <c>BertTokenizer(do_lower_case=True)</c>: text is lower-cased and its accents stripped (NFD, then the non-spacing
/// marks removed), split on whitespace and punctuation, and each word split greedily into the longest vocabulary pieces
/// (continuations prefixed <c>##</c>); a word that cannot be split is [UNK] whole. So Ä/ä → a, Ö/ö → o, Ü/ü → u, while ß
/// has no decomposition and stays ß (a word with ß is [UNK] unless the vocabulary has the piece). The work is
/// Microsoft.ML.Tokenizers' <c>BertTokenizer</c> (2.0.1), with three corrections that make it split text as Hugging Face
/// does — checked on every fortune entry against a transcription of Hugging Face's <c>BasicTokenizer</c> and
/// <c>WordpieceTokenizer</c>: its normaliser deletes TAB, LF and CR instead of treating them as spaces, gluing the words
/// around a line break (dotnet/machinelearning#7724), and keeps format characters (U+200B, soft hyphen) that BERT
/// deletes, so <see cref="CleanLikeBert"/> runs first; its default pre-tokenizer (<c>\w+|\p{P}</c>) silently drops
/// symbols such as $ + = &lt; &gt; | ~ ^ ` and keeps _ inside words (#7725), so <see cref="BasicSplit"/> replaces it; and
/// special tokens written in the text ([SEP], [UNK] …) are split out before normalisation, as Hugging Face's added-token
/// matching does, so that decoded text encodes back to the same ids. Lossy: decoding gives the normalised words.
/// </summary>
public sealed partial class WordPieceTextTokenizer : ITextTokenizer
{
    /// <summary>
    /// Hugging Face's <c>BasicTokenizer</c> split after cleaning: one punctuation character alone — any ASCII character
    /// that is not a letter, digit or space (BERT counts $ ^ ` as punctuation "for consistency"), or any Unicode P* —
    /// and any other run of non-space characters as a word.
    /// </summary>
    [GeneratedRegex(@"[!-/:-@\[-`{-~\p{P}]|[^\s!-/:-@\[-`{-~\p{P}]+")]
    private static partial Regex BasicSplit();

    static readonly string[] Specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

    [GeneratedRegex(@"\[(?:PAD|UNK|CLS|SEP|MASK)\]")]
    private static partial Regex SpecialText();

    /// <summary>
    /// BERT's text cleaning (<c>BasicTokenizer._clean_text</c>): TAB, LF and CR become spaces; NUL, U+FFFD and every
    /// other character of a Unicode category C* (controls, format characters, private use, unassigned) are deleted.
    /// </summary>
    static string CleanLikeBert(string text)
    {
        var sb = new StringBuilder(text.Length);
        foreach (var r in text.EnumerateRunes())
        {
            if (r.Value is '\t' or '\n' or '\r') sb.Append(' ');
            else if (r.Value != 0 && r != Rune.ReplacementChar && Rune.GetUnicodeCategory(r) is not (UnicodeCategory.Control
                or UnicodeCategory.Format or UnicodeCategory.PrivateUse or UnicodeCategory.OtherNotAssigned or UnicodeCategory.Surrogate))
                sb.Append(r.ToString());
        }
        return sb.ToString();
    }

    readonly BertTokenizer _bert;
    readonly Dictionary<string, int> _specials;

    WordPieceTextTokenizer(BertTokenizer bert, int vocabSize, Dictionary<string, int> specials)
    {
        _bert = bert;
        VocabSize = vocabSize;
        _specials = specials;
    }

    /// <summary>The largest vocabulary file accepted (BERT's is 232 kB).</summary>
    const long MaxVocabBytes = 16L << 20;

    /// <summary>
    /// Reads a vocab.txt after the checks every reader makes (a regular, non-empty UTF-8 file of bounded size holding
    /// [PAD], [UNK], [CLS], [SEP] and [MASK]); every problem is one line naming the file.
    /// </summary>
    public static WordPieceTextTokenizer FromVocabFile(string path)
    {
        if (!Path.Exists(path)) throw new FileNotFoundException($"no WordPiece vocabulary at {path}", path);
        // Line ends as Python's universal newlines read them (Hugging Face's load_vocab): MiniLM's package ships CRLF.
        var text = InputFile.ReadUtf8(path, MaxVocabBytes, "a WordPiece vocabulary").Replace("\r\n", "\n");
        var lines = text.Split('\n');
        var count = lines[^1].Length == 0 ? lines.Length - 1 : lines.Length;
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < count; i++) ids[lines[i]] = i; // a repeated token keeps its last line, as Hugging Face's load_vocab
        var missing = Specials.Where(t => !ids.ContainsKey(t)).ToList();
        if (missing.Count > 0) throw new InvalidDataException($"{path} lacks the special token(s) {string.Join(", ", missing)}: not a BERT vocabulary");
        var specials = Specials.ToDictionary(t => t, t => ids[t], StringComparer.Ordinal);
        var options = new BertOptions
        {
            LowerCaseBeforeTokenization = true, RemoveNonSpacingMarks = true, SplitOnSpecialTokens = false, PreTokenizer = new RegexPreTokenizer(BasicSplit(), null),
        };
        using var stream = new MemoryStream(Encoding.UTF8.GetBytes(text), writable: false);
        return new WordPieceTextTokenizer(BertTokenizer.Create(stream, options), count, specials);
    }

    public string Name => "wordpiece";
    public int VocabSize { get; }

    /// <summary>[SEP]: BERT ends a segment with it.</summary>
    public int EndOfTextId => _bert.SeparatorTokenId;
    public int PadId => _bert.PaddingTokenId;
    public int UnknownId => _bert.UnknownTokenId;
    public IReadOnlyList<int> SequencePrefix => [_bert.ClassificationTokenId];
    public IReadOnlyList<int> SequenceSuffix => [_bert.SeparatorTokenId];
    public bool IsLossless => false;

    public int[] Encode(string text)
    {
        var ids = new List<int>();
        void Words(string piece) =>
            ids.AddRange(_bert.EncodeToIds(CleanLikeBert(piece), addSpecialTokens: false, considerPreTokenization: true, considerNormalization: true));
        var last = 0;
        foreach (Match m in SpecialText().Matches(text))
        {
            Words(text[last..m.Index]);
            ids.Add(_specials[m.Value]);
            last = m.Index + m.Length;
        }
        Words(text[last..]);
        return [.. ids];
    }

    public string Decode(IReadOnlyList<int> ids)
    {
        foreach (var id in ids)
            if ((uint)id >= VocabSize) throw new ArgumentOutOfRangeException(nameof(ids), $"token id {id} is outside the vocabulary's [0, {VocabSize})");
        return _bert.Decode(ids);
    }
}
