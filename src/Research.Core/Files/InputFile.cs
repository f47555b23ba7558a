using System.Text;

namespace Research.Core.Files;

/// <summary>
/// The guard before every file a command opens by a path a user can choose (a config, a run store, checkpoints and
/// weights, manifests, data files, ONNX models, plugin DLLs): a path that leads to anything but a regular file is refused
/// before it is opened, by its kind (<see cref="FileKinds"/>), since opening a FIFO for reading blocks in <c>open(2)</c>
/// and reading a device (a link to <c>/dev/zero</c>) never ends.
/// </summary>
public static class InputFile
{
    /// <summary>
    /// Why <paramref name="path"/> cannot be read as a file, to follow the path in a message ("is a FIFO (named pipe), not a
    /// regular file"), or null when it is a regular file or missing (each reader names a missing file in its own words). A
    /// link to nothing is refused here, naming where it points.
    /// </summary>
    public static string? Problem(string path)
    {
        if (FileKinds.NotAFile(path) is { } what) return $"is {what}, not a regular file";
        if (FileKinds.Of(path) == FileKind.Missing && FileKinds.OfEntry(path) == FileKind.SymbolicLink)
            return $"is a symbolic link to nothing ({new FileInfo(path).LinkTarget})";
        return null;
    }

    /// <summary>Refuses a path that exists and is not a regular file (<see cref="Problem"/>).</summary>
    /// <exception cref="NotAFileException">One line naming the path and what it is.</exception>
    public static void Require(string path)
    {
        if (Problem(path) is { } problem) throw new NotAFileException(path, $"{path} {problem}");
    }

    /// <summary>The length of the regular file <paramref name="path"/> leads to (links followed); 0 when it is missing.</summary>
    /// <exception cref="NotAFileException">The path leads to something else.</exception>
    public static long Length(string path)
    {
        Require(path);
        var info = new FileInfo(path);
        if (info.LinkTarget != null && info.ResolveLinkTarget(returnFinalTarget: true) is FileInfo target) info = target;
        return info.Exists ? info.Length : 0;
    }

    static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>
    /// The text of a regular, non-empty file of at most <paramref name="maxBytes"/> bytes that is UTF-8 (a leading UTF-8
    /// byte-order mark dropped). Text in another encoding is refused rather than guessed at: a UTF-16 or UTF-32 file by its
    /// byte-order mark, one without a mark by its NUL bytes (ASCII in UTF-16 is valid UTF-8 with a NUL after every letter).
    /// </summary>
    /// <param name="kind">What the file should be, for the message ("a fortune file").</param>
    /// <exception cref="NotAFileException">The path leads to a FIFO, a device, a socket or a directory.</exception>
    /// <exception cref="InvalidDataException">One line naming the file and what is wrong.</exception>
    public static string ReadUtf8(string path, long maxBytes, string kind)
    {
        var length = Length(path);
        if (length == 0) throw new InvalidDataException(File.Exists(path) ? $"{path} is empty" : $"{path} does not exist");
        if (length > maxBytes) throw new InvalidDataException($"{path} holds {length} bytes, more than {maxBytes >> 20} MB: not {kind}");
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidDataException($"{path} cannot be read ({e.Message})", e);
        }
        var (text, problem) = DecodeUtf8(bytes);
        return problem is null ? text! : throw new InvalidDataException($"{path} {problem}");
    }

    /// <summary>
    /// Bytes read as UTF-8 text (a leading UTF-8 byte-order mark dropped), or why they are not, to follow the file's path
    /// in a message: another encoding's byte-order mark, bytes that are not UTF-8, or a NUL character.
    /// </summary>
    public static (string? Text, string? Problem) DecodeUtf8(byte[] bytes)
    {
        if (OtherEncoding(bytes) is { } encoding) return (null, $"is {encoding} text, not UTF-8: save it as UTF-8");
        string text;
        try { text = StrictUtf8.GetString(bytes); }
        catch (DecoderFallbackException e) { return (null, $"is not UTF-8 text (invalid bytes at offset {e.Index})"); }
        if (text.IndexOf('\0') is var nul and >= 0)
            return (null, $"holds a NUL character at byte {Encoding.UTF8.GetByteCount(text.AsSpan(0, nul))}: not UTF-8 text (UTF-16 without a byte-order mark?)");
        return (text.Length > 0 && text[0] == '\uFEFF' ? text[1..] : text, null);
    }

    /// <summary>The encoding a byte-order mark other than UTF-8's names (UTF-32 little-endian's begins with UTF-16's, so it is tried first).</summary>
    static string? OtherEncoding(ReadOnlySpan<byte> b) => b switch
    {
        [0xFF, 0xFE, 0x00, 0x00, ..] => "UTF-32 (little-endian)",
        [0x00, 0x00, 0xFE, 0xFF, ..] => "UTF-32 (big-endian)",
        [0xFF, 0xFE, ..] => "UTF-16 (little-endian)",
        [0xFE, 0xFF, ..] => "UTF-16 (big-endian)",
        _ => null,
    };
}
