using System.Collections.Concurrent;
using Research.Abstractions;

namespace Research.Core.Text;

/// <summary>
/// The tokenizers a text source may name (<c>bytes</c>, <c>gpt2</c>, <c>gpt2-8192</c>, <c>wordpiece</c>, and
/// <c>tokenizer.json</c>: a published model's own, <see cref="HfBpeTokenizer"/>), built one way for every source: the
/// fortune corpora and the text-file sources (JSONL, CSV, Parquet) share this choice, so a model trained on one reads the
/// other's ids.
/// </summary>
public static class TextTokenizers
{
    /// <summary>The names, for an option's <c>OneOf</c>.</summary>
    public static readonly string[] Names = ["bytes", "gpt2", "gpt2-8192", "wordpiece", HfJson];

    /// <summary>The name that means a Hugging Face <c>tokenizer.json</c>: the file <c>tokenizer_file</c> names, else the one
    /// in the folder of <c>model.init_from</c> (<see cref="JsonPath"/>).</summary>
    public const string HfJson = "tokenizer.json";

    static readonly ConcurrentDictionary<string, HfBpeTokenizer> HfTokenizers = new();

    /// <summary>
    /// The <c>tokenizer.json</c> a source reads: <paramref name="tokenizerFile"/> (the file, or a folder holding one; a
    /// relative path is from the working directory, as the data files'), else the one in the folder of the resolved
    /// <c>model.init_from</c> (<paramref name="initFrom"/>: a Hugging Face folder, or a weights file in one).
    /// </summary>
    /// <exception cref="InvalidDataException">One line naming the key and the file that is missing.</exception>
    public static string JsonPath(string tokenizerFile, string initFrom)
    {
        if (tokenizerFile.Length > 0)
        {
            var given = Path.GetFullPath(tokenizerFile);
            var file = Directory.Exists(given) ? Path.Combine(given, HfJson) : given;
            return File.Exists(file) ? file : throw new InvalidDataException($"data.tokenizer_file: no tokenizer.json at {file}");
        }
        if (initFrom.Length == 0)
            throw new InvalidDataException($"tokenizer \"{HfJson}\" reads the tokenizer.json in the folder of model.init_from, and the run has no init_from: set data.tokenizer_file to the file");
        if (!Directory.Exists(initFrom) && !File.Exists(initFrom))
            throw new InvalidDataException($"model.init_from {initFrom} does not exist, so there is no tokenizer.json beside it (tokenizer \"{HfJson}\")");
        var folder = Directory.Exists(initFrom) ? initFrom : Path.GetDirectoryName(Path.GetFullPath(initFrom))!;
        var beside = Path.Combine(folder, HfJson);
        return File.Exists(beside) ? beside
            : throw new InvalidDataException($"no tokenizer.json at {beside} (the folder of model.init_from {initFrom}): tokenizer \"{HfJson}\" reads the model's own; set data.tokenizer_file to another");
    }

    /// <summary>The tokenizer of a <c>tokenizer.json</c> with the <c>tokenizer_config.json</c> and <c>config.json</c>
    /// beside it (<see cref="HfBpeTokenizer.FromJson"/>), read once per process and version of the files.</summary>
    public static HfBpeTokenizer Hf(string path)
    {
        var dir = Path.GetDirectoryName(path)!;
        string Version(string file) => File.Exists(file) ? $"{new FileInfo(file).Length}:{File.GetLastWriteTimeUtc(file).Ticks}" : "-";
        var key = string.Join("\0", path, Version(path), Version(Path.Combine(dir, "tokenizer_config.json")), Version(Path.Combine(dir, "config.json")));
        return HfTokenizers.GetOrAdd(key, _ => HfBpeTokenizer.FromJson(path));
    }

    /// <summary>The published model whose vocabulary <c>wordpiece</c> reads, and that vocabulary's size (the rows of its
    /// BERT's token embedding).</summary>
    public const string MiniLm = "all-MiniLM-L6-v2";
    public const int MiniLmVocabulary = 30_522;

    /// <summary>A tokenizer's vocabulary size without building it (<c>gpt2-8192</c> may use fewer ids; the model has room for
    /// all); <c>tokenizer.json</c>'s is read from the file <paramref name="jsonPath"/> gives.</summary>
    public static int VocabularySize(string tokenizer, Func<string>? jsonPath = null) => tokenizer switch
    {
        "bytes" => ByteLevelTokenizer.FirstMergedId,
        "gpt2" => Gpt2Tokenizer.Vocabulary,
        "gpt2-8192" => RestrictedGpt2Tokenizer.DefaultMaxVocab,
        "wordpiece" => MiniLmVocabulary,
        HfJson when jsonPath is not null => Hf(jsonPath()).VocabSize,
        _ => throw new ArgumentException($"unknown tokenizer '{tokenizer}'"),
    };

    /// <summary>
    /// The tokenizer of a name: <c>gpt2-8192</c> fitted to <paramref name="trainingTexts"/> (a source passes its training
    /// split's texts, so the vocabulary never depends on validation or test text); <c>wordpiece</c> reading MiniLM's
    /// vocabulary through <paramref name="publishedFile"/>. The texts are only enumerated for <c>gpt2-8192</c>.
    /// </summary>
    public static ITextTokenizer Build(string tokenizer, Func<IEnumerable<string>> trainingTexts, Func<string, string, string> publishedFile,
        Func<string>? jsonPath = null) => tokenizer switch
    {
        HfJson when jsonPath is not null => Hf(jsonPath()),
        "bytes" => new ByteTokenizer(),
        "gpt2" => Gpt2Tokenizer.Shared,
        "gpt2-8192" => RestrictedGpt2Tokenizer.Train(trainingTexts()),
        "wordpiece" => WordPieceTextTokenizer.FromVocabFile(publishedFile(MiniLm, "vocab.txt")),
        _ => throw new ArgumentException($"unknown tokenizer '{tokenizer}'"),
    };
}
