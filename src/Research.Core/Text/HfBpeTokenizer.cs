using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;
using Research.Abstractions;
using Research.Core.Files;

namespace Research.Core.Text;

/// <summary>
/// A Hugging Face <c>tokenizer.json</c> of the byte-level BPE kind (GPT-2, Llama 3, Qwen2, Mistral Nemo …) read into
/// Microsoft.ML.Tokenizers' <c>BpeTokenizer</c> (2.0.1, <c>ByteLevel = true</c>). Read: <c>model</c> of type BPE
/// (vocab, merges as "a b" strings or [a, b] pairs), <c>added_tokens</c> (matched in the text before anything else, as
/// Hugging Face does), <c>normalizer</c> none or NFC (Qwen2), <c>pre_tokenizer</c> ByteLevel with its regex (GPT-2's
/// pattern) or Sequence[Split(pattern, Isolated), ByteLevel without regex] (Llama 3, Qwen2), <c>decoder</c> ByteLevel;
/// the <c>post_processor</c> is not read (a ByteLevel one only trims offsets). From <c>tokenizer_config.json</c>, when it
/// lies beside the file: eos_token (end of text; else <c>&lt;|endoftext|&gt;</c>), pad_token (else end of text) and
/// bos_token, put before a sequence when add_bos_token is true. Anything else the file asks for is refused with one line
/// naming the file and the field, rather than tokenized differently from the model's own tokenizer. Checked on every
/// English fortune entry against an independent transcription (tests/Fixtures/hf-tokenizer/make.py).
/// </summary>
public sealed class HfBpeTokenizer : ITextTokenizer
{
    /// <summary>GPT-2's pre-tokenizer pattern (openai/gpt-2 encoder.py), which ByteLevel with use_regex = true applies.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    /// <summary>The largest tokenizer.json accepted (Qwen2's, 151,643 tokens and 151,387 merges, has 7 MB).</summary>
    const long MaxFileBytes = 64L << 20;

    readonly BpeTokenizer _bpe;
    readonly bool _nfc;
    readonly PreTokenizer _preTokenizer;
    /// <summary>The model's vocabulary when <c>ignore_merges</c> is true (a word that is a token is that token); else null.</summary>
    readonly IReadOnlyDictionary<string, int>? _wholeWords;

    HfBpeTokenizer(BpeTokenizer bpe, bool nfc, PreTokenizer preTokenizer, IReadOnlyDictionary<string, int>? wholeWords, int vocabSize, int endOfText, int pad,
        IReadOnlyList<int> prefix, IReadOnlyDictionary<string, int> added)
    {
        _bpe = bpe;
        _nfc = nfc;
        _preTokenizer = preTokenizer;
        _wholeWords = wholeWords;
        VocabSize = vocabSize;
        EndOfTextId = endOfText;
        PadId = pad;
        SequencePrefix = prefix;
        AddedTokens = added;
    }

    public string Name => "tokenizer.json";
    public int VocabSize { get; }
    public int EndOfTextId { get; }
    public int PadId { get; }
    public IReadOnlyList<int> SequencePrefix { get; }
    public IReadOnlyList<int> SequenceSuffix => [];

    /// <summary>Lossless unless an NFC normalizer rewrites text that is not already NFC.</summary>
    public bool IsLossless => !_nfc;

    /// <summary>The added tokens (special or not) and their ids.</summary>
    public IReadOnlyDictionary<string, int> AddedTokens { get; }

    /// <summary>Whether the file sets <c>model.ignore_merges</c> (Llama 3): a pre-tokenized word that is itself in the
    /// vocabulary is that one id, whatever the merges would make of it.</summary>
    public bool IgnoresMerges => _wholeWords is not null;

    /// <summary>
    /// The ids of a text as Hugging Face's tokenizers computes them: normalize (NFC or nothing), cut out the added tokens and
    /// split the rest with the pre-tokenizer's regex, then each word on its own: an added token is its id; with
    /// <c>ignore_merges</c> a word whose byte-level form is in the vocabulary is that id (tokenizers' <c>BPE::tokenize</c>
    /// looks the whole word up before merging); any other word is merged by rank (Microsoft.ML.Tokenizers' BPE, which has
    /// no ignore_merges option in 2.0.1, given the single word with its own pre-tokenization and normalization off).
    /// </summary>
    public int[] Encode(string text)
    {
        if (_wholeWords is null) return [.. _bpe.EncodeToIds(text)];
        var normalized = _nfc ? text.Normalize(NormalizationForm.FormC) : text;
        var ids = new List<int>();
        foreach (var (offset, length) in _preTokenizer.PreTokenize(normalized))
        {
            var word = normalized.Substring(offset, length);
            if (AddedTokens.TryGetValue(word, out var id) || _wholeWords.TryGetValue(ByteLevelForm(word), out id)) ids.Add(id);
            else ids.AddRange(_bpe.EncodeToIds(word, considerPreTokenization: false, considerNormalization: false));
        }
        return [.. ids];
    }

    /// <summary>GPT-2's <c>bytes_to_unicode</c> (openai/gpt-2 encoder.py): the printable bytes ! … ~, ¡ … ¬ and ® … ÿ stand
    /// for themselves, the other 68 bytes for U+0100 onwards in byte order; a byte-level vocabulary spells its tokens so.</summary>
    static readonly char[] ByteChars = BuildByteChars();

    static char[] BuildByteChars()
    {
        var chars = new char[256];
        var next = 256;
        for (var b = 0; b < 256; b++)
            chars[b] = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF ? (char)b : (char)next++;
        return chars;
    }

    /// <summary>A word as a byte-level vocabulary spells it: each UTF-8 byte as its <see cref="ByteChars"/> character.</summary>
    static string ByteLevelForm(string word)
    {
        var bytes = Encoding.UTF8.GetBytes(word);
        var chars = new char[bytes.Length];
        for (var i = 0; i < bytes.Length; i++) chars[i] = ByteChars[bytes[i]];
        return new string(chars);
    }

    public string Decode(IReadOnlyList<int> ids)
    {
        foreach (var id in ids)
            if ((uint)id >= VocabSize) throw new ArgumentOutOfRangeException(nameof(ids), $"token id {id} is outside the vocabulary's [0, {VocabSize})");
        return _bpe.Decode(ids, considerSpecialTokens: true);
    }

    /// <summary>tokenizer.json in <paramref name="folder"/>, with tokenizer_config.json and config.json when they are there.</summary>
    public static HfBpeTokenizer FromFolder(string folder) => FromJson(Path.Combine(folder, "tokenizer.json"));

    /// <summary>A tokenizer.json with the tokenizer_config.json and the model's config.json beside it, when they are there.</summary>
    public static HfBpeTokenizer FromJson(string path)
    {
        var folder = Path.GetDirectoryName(Path.GetFullPath(path))!;
        string? Beside(string name) => Path.Combine(folder, name) is var f && File.Exists(f) ? f : null;
        return FromFile(path, Beside("tokenizer_config.json"), Beside("config.json"));
    }

    /// <summary>Reads a tokenizer.json (and optionally its tokenizer_config.json and the model's config.json). End of
    /// text is tokenizer_config.json's eos_token, else config.json's eos_token_id (an integer, or the first of a list:
    /// Llama 3 Instruct lists two), else the added token <c>&lt;|endoftext|&gt;</c>.</summary>
    /// <exception cref="InvalidDataException">One line naming the file and the field that cannot be honoured.</exception>
    public static HfBpeTokenizer FromFile(string path, string? configPath = null, string? modelConfigPath = null)
    {
        if (!Path.Exists(path)) throw new FileNotFoundException($"no tokenizer.json at {path}", path);
        using var doc = Parse(path);
        var root = doc.RootElement;
        InvalidDataException Refuse(string field, string why) => new($"{path}: {field} {why}");

        if (root.ValueKind != JsonValueKind.Object) throw Refuse("(root)", "is not a JSON object");
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object) throw Refuse("model", "is missing");
        var type = Str(model, "type");
        if (type != "BPE") throw Refuse("model.type", $"is {Show(type)}; only byte-level BPE (\"BPE\") is read");
        if (model.TryGetProperty("dropout", out var dropout) && dropout.ValueKind == JsonValueKind.Number && dropout.GetDouble() != 0)
            throw Refuse("model.dropout", "is set; BPE dropout is for training, not for reading a model's ids");
        foreach (var field in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
            if (Str(model, field) is { Length: > 0 } v) throw Refuse($"model.{field}", $"is {Show(v)}; byte-level BPE has none");
        if (model.TryGetProperty("byte_fallback", out var fallback) && fallback.ValueKind == JsonValueKind.True)
            throw Refuse("model.byte_fallback", "is true, which Microsoft.ML.Tokenizers 2.0.1's BpeTokenizer does not honour");
        // Microsoft.ML.Tokenizers 2.0.1's BpeOptions has no ignore_merges: Encode applies it itself, word by word.
        var ignoreMerges = model.TryGetProperty("ignore_merges", out var ignore) && ignore.ValueKind == JsonValueKind.True;

        var nfc = false;
        if (root.TryGetProperty("normalizer", out var normalizer) && normalizer.ValueKind != JsonValueKind.Null)
        {
            if (Str(normalizer, "type") != "NFC") throw Refuse("normalizer.type", $"is {Show(Str(normalizer, "type"))}; only none or NFC is honoured");
            nfc = true;
        }
        var pattern = PreTokenizerPattern(root, Refuse);
        if (root.TryGetProperty("decoder", out var decoder) && decoder.ValueKind != JsonValueKind.Null && Str(decoder, "type") != "ByteLevel")
            throw Refuse("decoder.type", $"is {Show(Str(decoder, "type"))}; byte-level BPE decodes with ByteLevel");

        if (!model.TryGetProperty("vocab", out var vocabJson) || vocabJson.ValueKind != JsonValueKind.Object) throw Refuse("model.vocab", "is missing or not an object");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        var maxId = -1;
        foreach (var p in vocabJson.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out var id) || id < 0) throw Refuse("model.vocab", $"gives {Show(p.Name)} the id {p.Value}, not an integer ≥ 0");
            vocab[p.Name] = id;
            maxId = Math.Max(maxId, id);
        }
        var merges = Merges(model, Refuse);

        var added = new Dictionary<string, int>(StringComparer.Ordinal);
        if (root.TryGetProperty("added_tokens", out var addedJson) && addedJson.ValueKind == JsonValueKind.Array)
        {
            var i = 0;
            foreach (var t in addedJson.EnumerateArray())
            {
                var content = Str(t, "content");
                if (content is not { Length: > 0 } || !t.TryGetProperty("id", out var idJson) || !idJson.TryGetInt32(out var id) || id < 0)
                    throw Refuse($"added_tokens[{i}]", "lacks a content or an integer id ≥ 0");
                foreach (var flag in new[] { "single_word", "lstrip", "rstrip" })
                    if (t.TryGetProperty(flag, out var f) && f.ValueKind == JsonValueKind.True) throw Refuse($"added_tokens[{i}].{flag}", "is true, which is not honoured");
                added[content] = id;
                maxId = Math.Max(maxId, id);
                i++;
            }
        }

        // Names of special tokens from tokenizer_config.json: a string, or an AddedToken object with its "content".
        string? bos = null, eos = null, pad = null;
        var addBos = false;
        if (configPath != null)
        {
            using var cdoc = Parse(configPath);
            var c = cdoc.RootElement;
            string? Name(string field) => c.TryGetProperty(field, out var v) ? v.ValueKind switch
            {
                JsonValueKind.String => v.GetString(),
                JsonValueKind.Object => Str(v, "content"),
                _ => null,
            } : null;
            (bos, eos, pad) = (Name("bos_token"), Name("eos_token"), Name("pad_token"));
            addBos = c.TryGetProperty("add_bos_token", out var ab) && ab.ValueKind == JsonValueKind.True;
        }
        int IdOf(string token, string field)
        {
            if (added.TryGetValue(token, out var id) || vocab.TryGetValue(token, out id)) return id;
            throw new InvalidDataException($"{configPath}: {field} {Show(token)} is not a token of {path}");
        }
        int? modelEos = null;
        if (eos == null && modelConfigPath != null)
        {
            using var mdoc = Parse(modelConfigPath);
            var m = mdoc.RootElement;
            var id = m.ValueKind != JsonValueKind.Object || !m.TryGetProperty("eos_token_id", out var v) ? (JsonElement?)null
                : v.ValueKind == JsonValueKind.Array && v.GetArrayLength() > 0 ? v[0] : v;
            if (id is { ValueKind: JsonValueKind.Number } n)
                modelEos = n.TryGetInt32(out var k) && k >= 0 && k <= maxId ? k
                    : throw new InvalidDataException($"{modelConfigPath}: eos_token_id {n} is not an id of {path} (0 … {maxId})");
        }
        int endOfText = eos != null ? IdOf(eos, "eos_token")
            : modelEos is { } me ? me
            : added.TryGetValue(ByteLevelTokenizer.EndOfTextText, out var e) ? e
            : throw Refuse("added_tokens", $"holds no {ByteLevelTokenizer.EndOfTextText} and neither a tokenizer_config.json beside it names an eos_token nor a config.json an eos_token_id: no end-of-text id");
        var padId = pad != null ? IdOf(pad, "pad_token") : endOfText;
        IReadOnlyList<int> prefix = addBos && bos != null ? [IdOf(bos, "bos_token")] : [];

        var preTokenizer = new RegexPreTokenizer(new Regex(pattern, RegexOptions.Compiled), added);
        var options = new BpeOptions(vocab)
        {
            Merges = merges,
            ByteLevel = true,
            SpecialTokens = added,
            PreTokenizer = preTokenizer,
            Normalizer = nfc ? new NfcNormalizer() : null,
        };
        return new HfBpeTokenizer(BpeTokenizer.Create(options), nfc, preTokenizer, ignoreMerges ? vocab : null, maxId + 1, endOfText, padId, prefix, added);
    }

    /// <summary>The regex the pre-tokenizer splits with, or a refusal naming the field.</summary>
    static string PreTokenizerPattern(JsonElement root, Func<string, string, InvalidDataException> refuse)
    {
        if (!root.TryGetProperty("pre_tokenizer", out var pre) || pre.ValueKind != JsonValueKind.Object) throw refuse("pre_tokenizer", "is missing; byte-level BPE needs ByteLevel");
        static bool Flag(JsonElement e, string name, bool absent) => e.TryGetProperty(name, out var v) ? v.ValueKind == JsonValueKind.True : absent;
        void ByteLevel(JsonElement e, string field, bool useRegex)
        {
            if (Str(e, "type") != "ByteLevel") throw refuse($"{field}.type", $"is {Show(Str(e, "type"))}; expected ByteLevel");
            if (Flag(e, "add_prefix_space", false)) throw refuse($"{field}.add_prefix_space", "is true, which is not honoured");
            if (Flag(e, "use_regex", true) != useRegex) throw refuse($"{field}.use_regex", $"is {(useRegex ? "false" : "true")}; expected {(useRegex ? "true" : "false")} here");
        }
        switch (Str(pre, "type"))
        {
            case "ByteLevel":
                ByteLevel(pre, "pre_tokenizer", useRegex: true);
                return Gpt2Pattern;
            case "Sequence":
                if (!pre.TryGetProperty("pretokenizers", out var seq) || seq.ValueKind != JsonValueKind.Array || seq.GetArrayLength() != 2)
                    throw refuse("pre_tokenizer.pretokenizers", "is not [Split, ByteLevel]");
                var split = seq[0];
                if (Str(split, "type") != "Split") throw refuse("pre_tokenizer.pretokenizers[0].type", $"is {Show(Str(split, "type"))}; expected Split");
                if (Str(split, "behavior") != "Isolated") throw refuse("pre_tokenizer.pretokenizers[0].behavior", $"is {Show(Str(split, "behavior"))}; only Isolated is honoured");
                if (Flag(split, "invert", false)) throw refuse("pre_tokenizer.pretokenizers[0].invert", "is true, which is not honoured");
                var pattern = split.TryGetProperty("pattern", out var p) && p.ValueKind == JsonValueKind.Object ? Str(p, "Regex") : null;
                if (pattern == null) throw refuse("pre_tokenizer.pretokenizers[0].pattern", "is not a {\"Regex\": …} object");
                try { _ = new Regex(pattern); }
                catch (ArgumentException ex) { throw refuse("pre_tokenizer.pretokenizers[0].pattern.Regex", $"is not a .NET regex: {ex.Message}"); }
                ByteLevel(seq[1], "pre_tokenizer.pretokenizers[1]", useRegex: false);
                return pattern;
            default:
                throw refuse("pre_tokenizer.type", $"is {Show(Str(pre, "type"))}; only ByteLevel or Sequence[Split, ByteLevel] is read");
        }
    }

    /// <summary>The merges as "a b" strings, from either form tokenizers writes (strings before 0.20, pairs after).</summary>
    static List<string> Merges(JsonElement model, Func<string, string, InvalidDataException> refuse)
    {
        if (!model.TryGetProperty("merges", out var json) || json.ValueKind != JsonValueKind.Array) throw refuse("model.merges", "is missing or not an array");
        var merges = new List<string>(json.GetArrayLength());
        var i = 0;
        foreach (var m in json.EnumerateArray())
        {
            if (m.ValueKind == JsonValueKind.String && m.GetString()!.Split(' ') is { Length: 2 }) merges.Add(m.GetString()!);
            else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2 && m[0].ValueKind == JsonValueKind.String && m[1].ValueKind == JsonValueKind.String
                     && !m[0].GetString()!.Contains(' ') && !m[1].GetString()!.Contains(' '))
                merges.Add($"{m[0].GetString()} {m[1].GetString()}");
            else throw refuse($"model.merges[{i}]", "is neither \"a b\" nor [\"a\", \"b\"] (tokens without spaces)");
            i++;
        }
        return merges;
    }

    static JsonDocument Parse(string path)
    {
        var text = InputFile.ReadUtf8(path, MaxFileBytes, "a tokenizer file");
        try { return JsonDocument.Parse(text); }
        catch (JsonException ex) { throw new InvalidDataException($"{path}: not JSON ({ex.Message})"); }
    }

    static string? Str(JsonElement e, string name) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    static string Show(string? s) => s == null ? "absent" : $"\"{s}\"";

    /// <summary>Unicode NFC (Qwen2's normalizer), for the library's normalizer slot.</summary>
    sealed class NfcNormalizer : Normalizer
    {
        public override string Normalize(string original) => original.Normalize(NormalizationForm.FormC);
        public override string Normalize(ReadOnlySpan<char> original) => original.ToString().Normalize(NormalizationForm.FormC);
    }
}
