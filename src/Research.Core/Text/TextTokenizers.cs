using Research.Abstractions;

namespace Research.Core.Text;

/// <summary>
/// The tokenizers a text source may name (<c>bytes</c>, <c>gpt2</c>, <c>gpt2-8192</c>, <c>wordpiece</c>), built one way
/// for every source: the fortune corpora and the text-file sources (JSONL, CSV) share this choice, so a model trained on
/// one reads the other's ids.
/// </summary>
public static class TextTokenizers
{
    /// <summary>The names, for an option's <c>OneOf</c>.</summary>
    public static readonly string[] Names = ["bytes", "gpt2", "gpt2-8192", "wordpiece"];

    /// <summary>The published model whose vocabulary <c>wordpiece</c> reads, and that vocabulary's size (the rows of its
    /// BERT's token embedding).</summary>
    public const string MiniLm = "all-MiniLM-L6-v2";
    public const int MiniLmVocabulary = 30_522;

    /// <summary>A tokenizer's vocabulary size without building it (<c>gpt2-8192</c> may use fewer ids; the model has room for all).</summary>
    public static int VocabularySize(string tokenizer) => tokenizer switch
    {
        "bytes" => ByteLevelTokenizer.FirstMergedId,
        "gpt2" => Gpt2Tokenizer.Vocabulary,
        "gpt2-8192" => RestrictedGpt2Tokenizer.DefaultMaxVocab,
        "wordpiece" => MiniLmVocabulary,
        _ => throw new ArgumentException($"unknown tokenizer '{tokenizer}'"),
    };

    /// <summary>
    /// The tokenizer of a name: <c>gpt2-8192</c> fitted to <paramref name="trainingTexts"/> (a source passes its training
    /// split's texts, so the vocabulary never depends on validation or test text); <c>wordpiece</c> reading MiniLM's
    /// vocabulary through <paramref name="publishedFile"/>. The texts are only enumerated for <c>gpt2-8192</c>.
    /// </summary>
    public static ITextTokenizer Build(string tokenizer, Func<IEnumerable<string>> trainingTexts, Func<string, string, string> publishedFile) => tokenizer switch
    {
        "bytes" => new ByteTokenizer(),
        "gpt2" => Gpt2Tokenizer.Shared,
        "gpt2-8192" => RestrictedGpt2Tokenizer.Train(trainingTexts()),
        "wordpiece" => WordPieceTextTokenizer.FromVocabFile(publishedFile(MiniLm, "vocab.txt")),
        _ => throw new ArgumentException($"unknown tokenizer '{tokenizer}'"),
    };
}
