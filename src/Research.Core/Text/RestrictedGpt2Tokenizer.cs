namespace Research.Core.Text;

/// <summary>
/// GPT-2's BPE cut to at most K ids with a lossless byte fallback, for models whose output layer cannot afford 50,257
/// classes. Ids 0–255 are bytes and 256 is end-of-text (<see cref="ByteLevelTokenizer"/>); ids 257 … are the K − 257
/// GPT-2 tokens of two or more bytes that occur most often in a training text (ties: the lower GPT-2 id first). A text
/// is encoded by GPT-2 and each GPT-2 token kept maps to its id; any other becomes its bytes. The vocabulary is a pure
/// function of the training text and K; decoding concatenates bytes, so Decode(Encode(t)) = t.
/// </summary>
public sealed class RestrictedGpt2Tokenizer : ByteLevelTokenizer
{
    public const int DefaultMaxVocab = 8192;

    readonly Gpt2Tokenizer _gpt2;
    readonly int[] _toRestricted;

    /// <summary>A restricted tokenizer from its kept GPT-2 ids, in id order 257, 258, … (as <see cref="KeptGpt2Ids"/> lists them).</summary>
    public RestrictedGpt2Tokenizer(IReadOnlyList<int> keptGpt2Ids, Gpt2Tokenizer? gpt2 = null)
        : base(TokenBytes(keptGpt2Ids, gpt2 ?? Gpt2Tokenizer.Shared))
    {
        _gpt2 = gpt2 ?? Gpt2Tokenizer.Shared;
        KeptGpt2Ids = keptGpt2Ids.ToArray();
        _toRestricted = Enumerable.Repeat(-1, Gpt2Tokenizer.Vocabulary).ToArray();
        for (int i = 0; i < KeptGpt2Ids.Count; i++)
        {
            if (_toRestricted[KeptGpt2Ids[i]] >= 0) throw new ArgumentException($"GPT-2 id {KeptGpt2Ids[i]} is kept twice", nameof(keptGpt2Ids));
            _toRestricted[KeptGpt2Ids[i]] = FirstMergedId + i;
        }
    }

    static byte[][] TokenBytes(IReadOnlyList<int> kept, Gpt2Tokenizer gpt2) =>
        kept.Select(id => id == Gpt2Tokenizer.EndOfText
            ? throw new ArgumentException("GPT-2's end-of-text is id 256 here, not a kept token", nameof(kept))
            : gpt2.TokenBytes(id).ToArray()).ToArray();

    /// <summary>
    /// Counts GPT-2 tokens over <paramref name="trainingTexts"/> (each text encoded on its own) and keeps the
    /// <paramref name="maxVocab"/> − 257 most frequent of two or more bytes; fewer when the text has fewer.
    /// </summary>
    public static RestrictedGpt2Tokenizer Train(IEnumerable<string> trainingTexts, int maxVocab = DefaultMaxVocab, Gpt2Tokenizer? gpt2 = null)
    {
        if (maxVocab < FirstMergedId) throw new ArgumentOutOfRangeException(nameof(maxVocab), $"K = {maxVocab} must be at least {FirstMergedId} (256 bytes and end-of-text)");
        gpt2 ??= Gpt2Tokenizer.Shared;
        var counts = new long[Gpt2Tokenizer.Vocabulary];
        foreach (var text in trainingTexts)
            foreach (var id in gpt2.Encode(text)) counts[id]++;
        var kept = Enumerable.Range(0, Gpt2Tokenizer.EndOfText)
            .Where(id => counts[id] > 0 && gpt2.TokenBytes(id).Length >= 2)
            .OrderByDescending(id => counts[id]).ThenBy(id => id)
            .Take(maxVocab - FirstMergedId).ToArray();
        return new RestrictedGpt2Tokenizer(kept, gpt2);
    }

    /// <summary>The GPT-2 id behind each id from 257 on, in order: what to save to rebuild this tokenizer.</summary>
    public IReadOnlyList<int> KeptGpt2Ids { get; }

    public override string Name => $"gpt2-{VocabSize}";

    public override int[] Encode(string text)
    {
        var gpt2Ids = _gpt2.Encode(text);
        var ids = new List<int>(gpt2Ids.Length * 2);
        foreach (var g in gpt2Ids)
        {
            var mapped = _toRestricted[g];
            if (mapped >= 0) { ids.Add(mapped); continue; }
            foreach (var b in _gpt2.TokenBytes(g)) ids.Add(b);
        }
        return [.. ids];
    }
}
