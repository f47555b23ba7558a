using Research.Abstractions;
using System.Text;

namespace Research.Core.Text;

/// <summary>
/// A vocabulary over bytes: ids 0–255 are the 256 byte values, 256 is end-of-text, and ids from 257 on (if any) are
/// longer byte strings. Any text is UTF-8 bytes, and any byte has an id, so nothing is ever unknown; decoding
/// concatenates the ids' bytes and reads them as UTF-8 (a byte sequence that is not UTF-8, as a model may generate,
/// decodes to U+FFFD where it breaks).
/// </summary>
public abstract class ByteLevelTokenizer : ITextTokenizer
{
    /// <summary>The end-of-text id, after the 256 bytes.</summary>
    public const int EndOfText = 256;

    /// <summary>The first id of a longer byte string.</summary>
    public const int FirstMergedId = 257;

    /// <summary>How end-of-text decodes: GPT-2's written form.</summary>
    public const string EndOfTextText = "<|endoftext|>";

    readonly byte[][] _bytes;

    /// <param name="merged">The byte strings of ids 257, 258, … (each at least two bytes).</param>
    protected ByteLevelTokenizer(IReadOnlyList<byte[]> merged)
    {
        _bytes = new byte[FirstMergedId + merged.Count][];
        for (int b = 0; b < 256; b++) _bytes[b] = [(byte)b];
        _bytes[EndOfText] = Encoding.UTF8.GetBytes(EndOfTextText);
        for (int i = 0; i < merged.Count; i++)
        {
            if (merged[i].Length < 2) throw new ArgumentException($"merged token {FirstMergedId + i} has {merged[i].Length} byte(s); single bytes are ids 0–255", nameof(merged));
            _bytes[FirstMergedId + i] = merged[i];
        }
    }

    public abstract string Name { get; }
    public int VocabSize => _bytes.Length;
    public int EndOfTextId => EndOfText;
    public int PadId => EndOfText;
    public IReadOnlyList<int> SequencePrefix => [];
    public IReadOnlyList<int> SequenceSuffix => [];
    public bool IsLossless => true;

    public abstract int[] Encode(string text);

    /// <summary>The bytes an id stands for.</summary>
    public ReadOnlySpan<byte> TokenBytes(int id) =>
        (uint)id < (uint)_bytes.Length ? _bytes[id] : throw new ArgumentOutOfRangeException(nameof(id), $"token id {id} is outside [0, {_bytes.Length})");

    public string Decode(IReadOnlyList<int> ids)
    {
        var bytes = new List<byte>(ids.Count * 2);
        foreach (var id in ids) bytes.AddRange(TokenBytes(id));
        return Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes));
    }
}

/// <summary>UTF-8 bytes as ids: V = 257 (256 bytes and end-of-text), one id per byte, lossless.</summary>
public sealed class ByteTokenizer() : ByteLevelTokenizer([])
{
    public override string Name => "bytes";

    public override int[] Encode(string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        var ids = new int[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) ids[i] = bytes[i];
        return ids;
    }
}
