using System.Collections.Concurrent;
using Research.Abstractions;
using Research.Core.Text;

namespace Research.Core.Data;

/// <summary>[data] keys of the fortune corpora (<c>fortunes</c>, <c>fortunes-de</c>).</summary>
public sealed record FortuneOptions : IValidatable
{
    /// <summary>Folder of fortune files; empty: <c>/usr/share/games/fortunes</c> (Debian <c>fortunes</c>) or
    /// <c>/usr/share/games/fortunes/de</c> (<c>fortunes-de</c>). A relative path is from the working directory.</summary>
    public string Path { get; init; } = "";
    /// <summary>What the outputs predict: <c>classify</c> (a fortune's topic) or <c>causal-lm</c> (every next token of the
    /// corpus, documents joined by an end-of-text token).</summary>
    [Option(OneOf = ["classify", "causal-lm"])]
    public string Task { get; init; } = "classify";
    /// <summary><c>bytes</c> (UTF-8 bytes, 257 ids), <c>gpt2</c> (GPT-2's byte-level BPE, 50,257 ids), <c>gpt2-8192</c>
    /// (GPT-2's BPE restricted to the 8,192 ids most used by the training split, lossless byte fallback),
    /// <c>wordpiece</c> (MiniLM's uncased vocabulary: what a <c>bert</c> from all-MiniLM-L6-v2 reads) or
    /// <c>tokenizer.json</c> (a Hugging Face model's own byte-level BPE: <c>tokenizer_file</c>, else the one in the folder
    /// of <c>model.init_from</c>).</summary>
    [Option(OneOf = ["bytes", "gpt2", "gpt2-8192", "wordpiece", TextTokenizers.HfJson])]
    public string Tokenizer { get; init; } = "bytes";
    /// <summary>With <c>tokenizer = "tokenizer.json"</c>: the file (or a folder holding it; tokenizer_config.json and
    /// config.json beside it are read too). Empty: the tokenizer.json in the folder of <c>model.init_from</c>. A relative
    /// path is from the working directory.</summary>
    [Option(AddedIn = "3.0")]
    public string TokenizerFile { get; init; } = "";
    /// <summary>Tokens per row — a causal LM's window T, or the longest text (in tokens, [CLS]/[SEP] included) a classifier reads.</summary>
    [Option(Min = 2, Max = 8192)]
    public int Context { get; init; } = 128;
    /// <summary>Causal LM: window k starts at k·stride; each token is predicted once, the tokens before it in the window being
    /// its context. 0: T − 1 (windows share one token: no overlap, least work); smaller strides give more context per
    /// prediction at more cost. Applies to every split, so evaluation is over the same windows.</summary>
    [Option(Min = 0)]
    public int Stride { get; init; } = 0;
    /// <summary>Classification: the topics (fortune file names) to classify; empty: every topic with at least
    /// <c>min_topic_entries</c> entries.</summary>
    public string[] Topics { get; init; } = [];
    /// <summary>Classification: the fewest entries a topic needs to be chosen when <c>topics</c> is empty.</summary>
    [Option(Min = 1)]
    public int MinTopicEntries { get; init; } = 580;
    /// <summary>Fraction of the entries held out (seeded, by entry) as the test split; the validation split is
    /// <c>validation_fraction</c> of the entries.</summary>
    [Option(Min = 0, Max = 1, MaxExclusive = true)]
    public double TestFraction { get; init; } = 0.1;
    /// <summary>The seed of the split by entry (and of what is fitted to the training split: <c>gpt2-8192</c>'s
    /// vocabulary); −1: the run's seed. Fixed, it keeps one split across a sweep's seeds, as a published dataset's splits
    /// are fixed — so a file built from one split's training entries (an instruction set, say) holds no test entry of any
    /// seed's run, while the model's initialisation and batch order still follow <c>run.seed</c>.</summary>
    [Option(Min = -1, AddedIn = "3.0")]
    public long SplitSeed { get; init; } = -1;

    /// <summary>The outputs predict the next token.</summary>
    public bool CausalLm => Task == "causal-lm";

    /// <summary>The stride windows are cut with: <c>stride</c>, or T − 1 when 0.</summary>
    public int WindowStride => Stride > 0 ? Stride : Context - 1;

    public IEnumerable<OptionError> Validate()
    {
        if (Stride > Context - 1) yield return new("stride", $"is more than context − 1 = {Context - 1}: a window of {Context} tokens predicts {Context - 1}, so a larger stride would skip tokens");
        if (TokenizerFile.Length > 0 && Tokenizer != TextTokenizers.HfJson) yield return new("tokenizer_file", $"names a tokenizer.json, and tokenizer is \"{Tokenizer}\": set tokenizer = \"{TextTokenizers.HfJson}\" to read it");
        if (Task == "classify" && Tokenizer == "wordpiece" && Context < 3) yield return new("context", "leaves no room for text between WordPiece's [CLS] and [SEP]");
    }
}

/// <summary>
/// A fortune corpus (<see cref="Fortunes"/>) as a data source: split by entry (seeded), tokenized, and made into named
/// tensors — packed causal-LM windows (<see cref="LmWindows"/>) or one padded row per entry with its topic
/// (<see cref="TextClassificationData"/>). Deterministic from the config and the seed, so a run, its resume, its
/// evaluation and <c>research generate</c> rebuild the same data and tokenizer. The validation split is drawn by entry
/// with the test split (the windows of one entry stay in one split).
/// </summary>
public abstract class FortuneSource : DataSource<FortuneOptions>
{
    /// <summary>The published model whose vocabulary <c>wordpiece</c> reads, and that vocabulary's size (the rows of its
    /// BERT's token embedding).</summary>
    public const string MiniLm = TextTokenizers.MiniLm;
    public const int MiniLmVocabulary = TextTokenizers.MiniLmVocabulary;

    static readonly ConcurrentDictionary<string, TextCorpus> Corpora = new();

    /// <summary>The Debian package and its folder.</summary>
    protected abstract string Package { get; }
    protected abstract string DefaultDirectory { get; }
    protected abstract TextCorpus Read(string directory);

    /// <summary>The corpus (read once per process and folder).</summary>
    public TextCorpus Corpus(FortuneOptions o)
    {
        var dir = o.Path.Length > 0 ? o.Path : DefaultDirectory;
        if (!Directory.Exists(dir))
            throw new DirectoryNotFoundException($"no fortunes at {dir}: install the Debian package {Package}, or set data.path to a folder of fortune files");
        return Corpora.GetOrAdd($"{Name}\0{System.IO.Path.GetFullPath(dir)}", _ => Read(dir));
    }

    /// <summary>The classes of a topic classification: <c>data.topics</c>, or the topics with at least <c>min_topic_entries</c>.</summary>
    public static IReadOnlyList<string> Topics(FortuneOptions o, TextCorpus corpus) =>
        o.Topics.Length > 0 ? o.Topics : corpus.TopicsWithAtLeast(o.MinTopicEntries);

    /// <summary>A tokenizer's vocabulary size without building it (<see cref="TextTokenizers.VocabularySize"/>).</summary>
    public static int VocabularySize(string tokenizer) => TextTokenizers.VocabularySize(tokenizer);

    /// <summary>The tokenizer.json a request's <c>tokenizer = "tokenizer.json"</c> reads (<see cref="TextTokenizers.JsonPath"/>).</summary>
    static Func<string> JsonPath(DataRequest request, FortuneOptions o) => () => TextTokenizers.JsonPath(o.TokenizerFile, request.InitFrom);

    /// <summary>The split of the corpus by entry, seeded by <c>split_seed</c> or else the run's seed; for classification restricted to its topics and
    /// stratified by topic (<see cref="TextCorpus.StratifiedSplit"/>).</summary>
    public TextSplit Split(DataKeys d, FortuneOptions o, long seed)
    {
        var corpus = Corpus(o);
        if (o.SplitSeed >= 0) seed = o.SplitSeed;
        if (o.CausalLm) return corpus.Split(d.ValidationFraction, o.TestFraction, seed);
        return corpus.WithTopics(Topics(o, corpus).ToList()).StratifiedSplit(d.ValidationFraction, o.TestFraction, seed);
    }

    /// <summary>
    /// The tokenizer: the request's (a study's shared one), else built from the options — <c>gpt2-8192</c> fitted to the
    /// training split's entries (so it depends on the seed's split, never on validation or test text); <c>wordpiece</c>
    /// reading MiniLM's vocabulary from the published model's files.
    /// </summary>
    public override ITextTokenizer Tokenizer(DataRequest request)
    {
        if (request.Tokenizer is { } shared) return shared;
        var o = OptionsOf(request);
        return TextTokenizers.Build(o.Tokenizer, () => Split(request.Data, o, request.Seed).Train.Select(e => e.Text), request.PublishedFile, JsonPath(request, o));
    }

    protected override IEnumerable<OptionError> Validate(DataKeys d, FortuneOptions o)
    {
        if (d.ValidationFraction + o.TestFraction >= 1) yield return new("data.test_fraction", $"with validation_fraction {d.ValidationFraction} leaves no training entries");
        if (d.Classes.Count > 0) yield return new("data.classes", "selects classes of an image dataset; a text classifier chooses its topics with data.topics");
    }

    /// <summary>The folder exists; a classification's topics are the corpus's, at least two of them.</summary>
    public override IEnumerable<OptionError> Check(DataRequest request)
    {
        var o = OptionsOf(request);
        if (o.Path.Length > 0 && !Directory.Exists(o.Path))
        {
            yield return new("data.path", $"\"{o.Path}\" is not a folder of fortune files (a relative path is from the working directory, as for Fashion-MNIST)");
            yield break;
        }
        if (o.CausalLm) yield break;
        var corpus = Corpus(o);
        var unknown = o.Topics.Where(t => !corpus.TopicCounts.ContainsKey(t)).ToList();
        if (unknown.Count > 0)
        {
            yield return new("data.topics", $"{corpus.Name} has no topic {string.Join(", ", unknown.Select(t => $"'{t}'"))} (it has: {string.Join(", ", corpus.TopicCounts.Keys.Order(StringComparer.Ordinal))})");
            yield break;
        }
        var topics = Topics(o, corpus);
        if (topics.Count < 2)
            yield return new(o.Topics.Length > 0 ? "data.topics" : "data.min_topic_entries",
                $"leaves {topics.Count} topic(s) of {corpus.Name}; a classifier needs at least 2 (the largest have {string.Join(", ", corpus.TopicCounts.OrderByDescending(kv => kv.Value).Take(3).Select(kv => $"{kv.Key} {kv.Value}"))} entries)");
    }

    /// <summary>Text is neither permuted nor split by class; a study of several corpora predicts tokens, since each corpus
    /// has its own topics.</summary>
    public override IEnumerable<OptionError> StudyErrors(DataRequest request, string benchmark)
    {
        if (benchmark != "datasets")
            yield return new("data.dataset", $"\"{Name}\": the permuted and split benchmarks are built from an image dataset; a study of text uses study.benchmark = \"datasets\"");
        else if (!OptionsOf(request).CausalLm)
            yield return new("data.task", "\"classify\": each corpus has its own topics, so a study over text datasets is of causal-lm tasks");
    }

    /// <summary>Rows of <c>context</c> tokens; the outputs are the vocabulary (a language model) or the topics (read from
    /// the corpus).</summary>
    public override DataShape Shape(DataRequest request)
    {
        var o = OptionsOf(request);
        var vocabulary = TextTokenizers.VocabularySize(o.Tokenizer, JsonPath(request, o));
        return new DataShape(Name, InputKind.Tokens, o.Context, o.CausalLm ? vocabulary : Topics(o, Corpus(o)).Count)
            { NextToken = o.CausalLm, Tokenizer = TokenizerName(o.Tokenizer, JsonPath(request, o)), Vocabulary = vocabulary };
    }

    /// <summary>Split, tokenizer (or the request's: a study's tasks share [data]'s own), tensors.</summary>
    public override DataSplits Load(DataRequest request)
    {
        var o = OptionsOf(request);
        var split = Split(request.Data, o, request.Seed);
        var tokenizer = request.Tokenizer ?? Tokenizer(request);
        var classes = o.CausalLm ? [] : Topics(o, Corpus(o));
        TensorDataset Make(IReadOnlyList<TextEntry> entries) => o.CausalLm
            ? Windows(entries, tokenizer, o.Context, o.WindowStride)
            : Classification(entries, classes, tokenizer, o.Context);
        TensorDataset? train = null, validation = null;
        try
        {
            train = Make(split.Train);
            validation = Make(split.Validation);
            return LoadedSplits.Handover(train, Make(split.Test), validation);
        }
        catch
        {
            train?.Dispose(); validation?.Dispose();
            throw;
        }
    }

    /// <summary>The tokenizer's name in a shape: the name, or for <c>tokenizer.json</c> the file's path (messages name it).</summary>
    public static string TokenizerName(string tokenizer, Func<string> jsonPath) => tokenizer == TextTokenizers.HfJson ? jsonPath() : tokenizer;

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

/// <summary><c>fortunes</c>: the English epigrams of the Debian package <c>fortunes</c>, one topic per file.</summary>
public sealed class EnglishFortunes : FortuneSource
{
    public override string Name => "fortunes";
    public override string Summary => "English fortunes (Debian package fortunes): topic classification or causal language modelling";
    protected override string Package => "fortunes";
    protected override string DefaultDirectory => Fortunes.EnglishDirectory;
    protected override TextCorpus Read(string directory) => Fortunes.English(directory);
}

/// <summary><c>fortunes-de</c>: the German epigrams of the Debian package <c>fortunes-de</c>.</summary>
public sealed class GermanFortunes : FortuneSource
{
    public override string Name => "fortunes-de";
    public override string Summary => "German fortunes (Debian package fortunes-de): topic classification or causal language modelling";
    protected override string Package => "fortunes-de";
    protected override string DefaultDirectory => Fortunes.GermanDirectory;
    protected override TextCorpus Read(string directory) => Fortunes.German(directory);
}
