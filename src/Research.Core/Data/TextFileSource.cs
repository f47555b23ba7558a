using System.Collections.Concurrent;
using System.Globalization;
using Research.Abstractions;
using Research.Core.Text;

namespace Research.Core.Data;

/// <summary>
/// [data] keys of the text-file sources (<c>jsonl</c>, <c>csv</c>, <c>parquet</c>). Their names differ from the fortune corpora's
/// (<c>text_tokenizer</c>, not <c>tokenizer</c>): a key is owned by the sources that declare it, and the keys of release
/// 2.2's sources keep their meaning and their messages.
/// </summary>
public sealed record TextFileOptions : IValidatable
{
    /// <summary>The training file (required). A relative path is from the working directory.</summary>
    public string TrainFile { get; init; } = "";
    /// <summary>The test file (required).</summary>
    public string TestFile { get; init; } = "";
    /// <summary>The validation file; empty: the core holds out <c>validation_fraction</c> of the training file (seeded).</summary>
    public string ValidationFile { get; init; } = "";
    /// <summary>What the outputs predict: <c>classify</c> (a label per row, from <c>text_column</c> and <c>label_column</c>),
    /// <c>causal-lm</c> (every next token of <c>text_column</c>, rows joined by end-of-text and cut into windows of
    /// <c>max_tokens</c>), or <c>instruct</c> (<c>prompt_column</c> then <c>response_column</c>, one padded row per
    /// record; the loss counts the response tokens only), or <c>chat</c> (<c>messages_column</c>, a list of
    /// <c>{"role", "content"}</c> written with <c>chat_template</c>; the loss counts the assistant's turns only).</summary>
    [Option(OneOf = ["classify", "causal-lm", "instruct", "chat"])]
    public string Objective { get; init; } = "classify";
    /// <summary>The column (JSON field) holding the text.</summary>
    public string TextColumn { get; init; } = "text";
    /// <summary>Classification: the column holding the label.</summary>
    public string LabelColumn { get; init; } = "label";
    /// <summary>Instruction tuning: the column holding the prompt.</summary>
    public string PromptColumn { get; init; } = "prompt";
    /// <summary>Instruction tuning: the column holding the response.</summary>
    public string ResponseColumn { get; init; } = "response";
    /// <summary>Chat: the column holding the messages, a list of <c>{"role": "system" | "user" | "assistant", "content":
    /// TEXT}</c> (in CSV: that list as JSON text; in Parquet: a nested list of structs, or JSON text in a string column).</summary>
    public string MessagesColumn { get; init; } = "messages";
    /// <summary>Chat: how each message is written, <c>{role}</c> and <c>{content}</c> replaced (<see cref="ChatTemplate"/>);
    /// the text after <c>{content}</c> ends the turn and counts with an assistant's content.</summary>
    public string ChatTemplate { get; init; } = Text.ChatTemplate.Default;
    /// <summary>Instruction tuning and chat: <c>false</c> — one right-padded row per record; <c>true</c> — the records
    /// concatenated into windows of <c>max_tokens</c> (no padding but the last window's; attention is not blocked
    /// between records, <see cref="InstructionRows"/>).</summary>
    public bool Packing { get; init; }
    /// <summary>Classification: <c>names</c> — labels are class names; the classes are the training file's distinct
    /// names in ordinal order, class id = index (a label of another file that the training file lacks is refused);
    /// <c>ids</c> — labels are the class ids 0 … C − 1 themselves (integers; C = 1 + the largest id of the training
    /// file).</summary>
    [Option(OneOf = ["names", "ids"])]
    public string Labels { get; init; } = "names";
    /// <summary>The tokenizer, as the fortune corpora's <c>tokenizer</c>: <c>bytes</c>, <c>gpt2</c>, <c>gpt2-8192</c>
    /// (fitted to the training file's texts), <c>wordpiece</c> or <c>tokenizer.json</c> (a Hugging Face model's own:
    /// <c>tokenizer_file</c>, else the one in the folder of <c>model.init_from</c>).</summary>
    [Option(OneOf = ["bytes", "gpt2", "gpt2-8192", "wordpiece", TextTokenizers.HfJson])]
    public string TextTokenizer { get; init; } = "bytes";
    /// <summary>With <c>text_tokenizer = "tokenizer.json"</c>: the file (or a folder holding it; tokenizer_config.json and
    /// config.json beside it are read too). Empty: the tokenizer.json in the folder of <c>model.init_from</c>. A relative
    /// path is from the working directory.</summary>
    [Option(AddedIn = "3.0")]
    public string TokenizerFile { get; init; } = "";
    /// <summary>Tokens per row: a causal LM's window T (consecutive windows share one token), the longest text a
    /// classifier reads, the longest prompt + response of instruction tuning (cut at the end).</summary>
    [Option(Min = 3, Max = 8192)]
    public int MaxTokens { get; init; } = 128;
    /// <summary>Pre-tokenized rows (<c>causal-lm</c>, <c>instruct</c>): the column holding each row's token ids, a list of
    /// integers (Parquet) or a JSON array (JSONL), as Hugging Face's tokenized datasets hold <c>input_ids</c>; the ids
    /// are <c>text_tokenizer</c>'s and are read instead of text. Empty: text.</summary>
    [Option(AddedIn = "3.0")]
    public string InputIdsColumn { get; init; } = "";
    /// <summary>Pre-tokenized <c>instruct</c> rows: the column holding each row's labels, Hugging Face's convention
    /// (as long as the ids, unshifted; −100 on a token that does not count, such as the prompt's, else the id itself).</summary>
    [Option(AddedIn = "3.0")]
    public string LabelsColumn { get; init; } = "";

    public bool NextToken => Objective != "classify";

    /// <summary>Rows are token ids (<see cref="InputIdsColumn"/>), not text.</summary>
    public bool PreTokenized => InputIdsColumn.Length > 0;

    /// <summary>The columns that hold token ids.</summary>
    public IReadOnlySet<string> IdColumns => PreTokenized ? Columns.ToHashSet(StringComparer.Ordinal) : new HashSet<string>();

    /// <summary>The columns a record must hold.</summary>
    public IReadOnlyList<string> Columns => PreTokenized ? (LabelsColumn.Length > 0 ? [InputIdsColumn, LabelsColumn] : [InputIdsColumn]) : Objective switch
    {
        "classify" => [TextColumn, LabelColumn],
        "instruct" => [PromptColumn, ResponseColumn],
        "chat" => [MessagesColumn],
        _ => [TextColumn],
    };

    public IEnumerable<OptionError> Validate()
    {
        if (TrainFile.Length == 0) yield return new("train_file", "names no file; the training file is required");
        if (TestFile.Length == 0) yield return new("test_file", "names no file; the test file is required");
        if (Objective == "classify" && TextColumn == LabelColumn) yield return new("label_column", $"\"{LabelColumn}\" is also text_column");
        if (Objective == "instruct" && PromptColumn == ResponseColumn) yield return new("response_column", $"\"{ResponseColumn}\" is also prompt_column");
        if (Objective == "chat" && Text.ChatTemplate.Error(ChatTemplate) is { } template) yield return new("chat_template", $"{template}: a template writes each message's {{content}} once (default \"{Text.ChatTemplate.Default.Replace("\n", "\\n")}\")");
        if (TokenizerFile.Length > 0 && TextTokenizer != TextTokenizers.HfJson) yield return new("tokenizer_file", $"names a tokenizer.json, and text_tokenizer is \"{TextTokenizer}\": set text_tokenizer = \"{TextTokenizers.HfJson}\" to read it");
        if (Packing && Objective is not ("instruct" or "chat")) yield return new("packing", $"packs the rows of instruct and chat; objective \"{Objective}\" has its own rows");
        if (PreTokenized && Objective is not ("causal-lm" or "instruct"))
            yield return new("input_ids_column", $"token ids are read for objective causal-lm and instruct, not \"{Objective}\"");
        if (PreTokenized && TextTokenizer == "gpt2-8192")
            yield return new("text_tokenizer", "is fitted to the training file's texts, and input_ids_column gives ids, not texts: name the tokenizer the ids are of");
        if (LabelsColumn.Length > 0 && (!PreTokenized || Objective != "instruct"))
            yield return new("labels_column", "is read with input_ids_column, for objective instruct");
        if (PreTokenized && Objective == "instruct" && LabelsColumn.Length == 0)
            yield return new("labels_column", "names no column: pre-tokenized instruct rows need their labels (−100 on the tokens that do not count) to know which tokens count");
        if (PreTokenized && LabelsColumn == InputIdsColumn)
            yield return new("labels_column", "is also input_ids_column");
    }
}

/// <summary>
/// A data source of text in files of records (<see cref="TextTables"/>): classification, causal language modelling or
/// instruction tuning, tokenized as the fortune corpora are (<see cref="TextTokenizers"/>) and made into the same tensors
/// (<see cref="FortuneSource.Windows"/>, <see cref="FortuneSource.Classification"/>, <see cref="InstructionRows"/>). The
/// files are read once per process and file version (path, length, modification time).
/// </summary>
public abstract class TextFileSource : DataSource<TextFileOptions>
{
    static readonly ConcurrentDictionary<string, IReadOnlyList<TextRecord>> Tables = new();

    /// <summary>The records of one file with the options' columns.</summary>
    protected abstract IReadOnlyList<TextRecord> ReadTable(string path, TextFileOptions o);

    /// <summary>The records of a file, read once per version of it.</summary>
    public IReadOnlyList<TextRecord> Records(string path, TextFileOptions o)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path} does not exist (data.{(path == o.TrainFile ? "train_file" : path == o.TestFile ? "test_file" : "validation_file")}; a relative path is from the working directory)", path);
        var info = new FileInfo(path);
        var key = $"{Name}\0{info.FullName}\0{info.Length}\0{info.LastWriteTimeUtc.Ticks}\0{o.Objective}\0{o.PreTokenized}\0{string.Join("\0", o.Columns)}";
        return Tables.GetOrAdd(key, _ => ReadTable(path, o) is { Count: > 0 } records ? records
            : throw new InvalidDataException($"{path} holds no records"));
    }

    /// <summary>The class names of a classification, class id = index: the training file's names in ordinal order, or
    /// "0" … "C − 1" for ids.</summary>
    public IReadOnlyList<string> Classes(TextFileOptions o)
    {
        var labels = Records(o.TrainFile, o).Select(r => (r, Label(r, o))).ToList();
        if (o.Labels == "ids")
        {
            var count = labels.Count == 0 ? 0 : labels.Max(l => int.Parse(l.Item2, CultureInfo.InvariantCulture)) + 1;
            return Enumerable.Range(0, count).Select(i => i.ToString(CultureInfo.InvariantCulture)).ToList();
        }
        return labels.Select(l => l.Item2).Distinct().Order(StringComparer.Ordinal).ToList();
    }

    /// <summary>A record's label as its class key: the name, or a canonical id (refusing anything else, naming the row).</summary>
    static string Label(TextRecord r, TextFileOptions o)
    {
        var raw = r[o.LabelColumn];
        if (o.Labels == "names") return raw;
        if (!int.TryParse(raw.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var id))
            throw new InvalidDataException($"{r.Where}: label \"{raw}\" is not a class id (labels = \"ids\": a non-negative integer)");
        return id.ToString(CultureInfo.InvariantCulture);
    }

    protected override IEnumerable<OptionError> Validate(DataKeys d, TextFileOptions o)
    {
        if (d.Classes.Count > 0 && o.NextToken) yield return new("data.classes", $"selects classes of a classification; objective \"{o.Objective}\" predicts tokens");
        if (o.PreTokenized && !ReadsTokenIds)
            yield return new("data.input_ids_column", $"{Name} files hold no lists of token ids: pre-tokenized rows are read from jsonl (a JSON array) or parquet (a list column)");
    }

    /// <summary>Whether the format holds lists of token ids (<see cref="TextFileOptions.InputIdsColumn"/>).</summary>
    protected virtual bool ReadsTokenIds => false;

    public override IEnumerable<OptionError> Check(DataRequest request)
    {
        var o = OptionsOf(request);
        foreach (var (key, path) in new[] { ("train_file", o.TrainFile), ("test_file", o.TestFile), ("validation_file", o.ValidationFile) })
            if (path.Length > 0 && !File.Exists(path))
                yield return new($"data.{key}", $"\"{path}\" is not a file (a relative path is from the working directory)");
    }

    /// <summary>A classification may be split by class; token prediction only makes a <c>datasets</c> study.</summary>
    public override IEnumerable<OptionError> StudyErrors(DataRequest request, string benchmark)
    {
        var o = OptionsOf(request);
        if (benchmark == "permuted")
            yield return new("data.dataset", $"\"{Name}\": the permuted benchmark permutes image pixels; text is split by class (split-class, split-task) or studied with study.benchmark = \"datasets\"");
        else if (benchmark != "datasets" && o.NextToken)
            yield return new("data.objective", $"\"{o.Objective}\" predicts tokens, which have no classes to split by: use objective = \"classify\" or study.benchmark = \"datasets\"");
    }

    public override DataShape Shape(DataRequest request)
    {
        var o = OptionsOf(request);
        var vocabulary = TextTokenizers.VocabularySize(o.TextTokenizer, JsonPath(request, o));
        return new DataShape(Name, InputKind.Tokens, o.MaxTokens, o.NextToken ? vocabulary : Classes(o).Count)
            { NextToken = o.NextToken, Tokenizer = FortuneSource.TokenizerName(o.TextTokenizer, JsonPath(request, o)), Vocabulary = vocabulary };
    }

    /// <summary>The tokenizer.json <c>text_tokenizer = "tokenizer.json"</c> reads (<see cref="TextTokenizers.JsonPath"/>).</summary>
    static Func<string> JsonPath(DataRequest request, TextFileOptions o) => () => TextTokenizers.JsonPath(o.TokenizerFile, request.InitFrom);

    /// <summary>The texts the tokenizer is fitted to (<c>gpt2-8192</c>): the training file's.</summary>
    IEnumerable<string> TrainingTexts(TextFileOptions o) => o.PreTokenized ? [] : Records(o.TrainFile, o).SelectMany(r => o.Objective switch
    {
        "instruct" => new[] { r[o.PromptColumn], r[o.ResponseColumn] },
        "chat" => [new ChatTemplate(o.ChatTemplate).Text(ChatTemplate.Parse(r[o.MessagesColumn], o.MessagesColumn, r.Where))],
        _ => [r[o.TextColumn]],
    });

    public override ITextTokenizer Tokenizer(DataRequest request)
    {
        if (request.Tokenizer is { } shared) return shared;
        var o = OptionsOf(request);
        return TextTokenizers.Build(o.TextTokenizer, () => TrainingTexts(o), request.PublishedFile, JsonPath(request, o));
    }

    public override DataSplits Load(DataRequest request)
    {
        var o = OptionsOf(request);
        var tokenizer = request.Tokenizer ?? Tokenizer(request);
        var classes = o.NextToken ? [] : Classes(o);
        var known = classes.ToHashSet(StringComparer.Ordinal);
        TensorDataset Make(string path)
        {
            var records = Records(path, o);
            if (o.PreTokenized) return TokenIdRows.Dataset(records, o, tokenizer);
            switch (o.Objective)
            {
                case "causal-lm":
                    return FortuneSource.Windows(records.Select(r => new TextEntry(r[o.TextColumn], "")).ToList(), tokenizer, o.MaxTokens, o.MaxTokens - 1);
                case "instruct":
                    var rows = InstructionRows.Build(records.Select(r => new InstructionPair(r[o.PromptColumn], r[o.ResponseColumn], r.Where)).ToList(), tokenizer, o.MaxTokens, o.Packing);
                    return new TensorDataset(rows.ToBatch(), tokenizer.VocabSize, rows.Utf8Bytes);
                case "chat":
                    var template = new ChatTemplate(o.ChatTemplate);
                    var chats = InstructionRows.Build(records.Select(r => template.Sequence(ChatTemplate.Parse(r[o.MessagesColumn], o.MessagesColumn, r.Where), tokenizer, r.Where)).ToList(), tokenizer, o.MaxTokens, o.Packing);
                    return new TensorDataset(chats.ToBatch(), tokenizer.VocabSize, chats.Utf8Bytes);
                default:
                    var entries = records.Select(r =>
                    {
                        var label = Label(r, o);
                        if (!known.Contains(label))
                            throw new InvalidDataException(o.Labels == "ids"
                                ? $"{r.Where}: label {label} is not a class of the training file {o.TrainFile} (its ids are 0 … {classes.Count - 1})"
                                : $"{r.Where}: label \"{label}\" is not a class of the training file {o.TrainFile} (its classes: {string.Join(", ", classes)})");
                        return new TextEntry(r[o.TextColumn], label);
                    }).ToList();
                    return FortuneSource.Classification(entries, classes, tokenizer, o.MaxTokens);
            }
        }
        TensorDataset? train = null, validation = null;
        try
        {
            train = Make(o.TrainFile);
            validation = o.ValidationFile.Length > 0 ? Make(o.ValidationFile) : null;
            return LoadedSplits.Handover(train, Make(o.TestFile), validation);
        }
        catch
        {
            train?.Dispose(); validation?.Dispose();
            throw;
        }
    }
}

/// <summary><c>jsonl</c>: text in JSON Lines files, one object a line (System.Text.Json).</summary>
public sealed class JsonlSource : TextFileSource
{
    public override string Name => "jsonl";
    public override string Summary => "text in JSON Lines files (train_file, test_file): classification, causal language modelling or instruction tuning";
    protected override bool ReadsTokenIds => true;
    protected override IReadOnlyList<TextRecord> ReadTable(string path, TextFileOptions o) =>
        TextTables.ReadJsonl(path, o.Columns, o.Objective == "classify" ? new HashSet<string> { o.LabelColumn } : new HashSet<string>(),
            o.Objective == "chat" ? new HashSet<string> { o.MessagesColumn } : null, o.IdColumns);
}

/// <summary><c>csv</c>: text in CSV files with a header row (RFC 4180, CsvHelper).</summary>
public sealed class CsvSource : TextFileSource
{
    public override string Name => "csv";
    public override string Summary => "text in CSV files with a header row (train_file, test_file): classification, causal language modelling or instruction tuning";
    protected override IReadOnlyList<TextRecord> ReadTable(string path, TextFileOptions o) => TextTables.ReadCsv(path, o.Columns);
}

/// <summary><c>parquet</c>: text in Parquet files, Hugging Face's format for published datasets (Parquet.Net): columns
/// by name, strings (a label may be an integer column), or lists of integers for pre-tokenized rows.</summary>
public sealed class ParquetSource : TextFileSource
{
    public override string Name => "parquet";
    public override string Summary => "text in Parquet files (train_file, test_file; columns by name): classification, causal language modelling or instruction tuning";
    protected override bool ReadsTokenIds => true;
    protected override IReadOnlyList<TextRecord> ReadTable(string path, TextFileOptions o) =>
        TextTables.ReadParquet(path, o.Columns, o.Objective == "classify" ? new HashSet<string> { o.LabelColumn } : new HashSet<string>(),
            o.Objective == "chat" ? new HashSet<string> { o.MessagesColumn } : null, o.IdColumns);
}
