using System.Text;

namespace Research.Core.Text;

/// <summary>Reading a text file a user named, with the checks every reader makes.</summary>
static class TextFile
{
    static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>
    /// The text of a regular, non-empty file of at most <paramref name="maxBytes"/> bytes that is valid UTF-8 (a leading
    /// byte-order mark dropped). A FIFO or device is refused before it is opened (reading a FIFO would wait forever).
    /// </summary>
    /// <param name="kind">What the file should be, for the message ("a fortune file").</param>
    /// <exception cref="InvalidDataException">One line naming the file and what is wrong.</exception>
    public static string ReadUtf8(string path, long maxBytes, string kind)
    {
        var length = FileChecks.TargetLength(path);
        if (length == 0) throw new InvalidDataException($"{path} is empty or not a regular file");
        if (length > maxBytes) throw new InvalidDataException($"{path} holds {length} bytes, more than {maxBytes >> 20} MB: not {kind}");
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidDataException($"{path} cannot be read ({e.Message})", e);
        }
        try
        {
            var text = StrictUtf8.GetString(bytes);
            return text.Length > 0 && text[0] == '\uFEFF' ? text[1..] : text;
        }
        catch (DecoderFallbackException e)
        {
            throw new InvalidDataException($"{path} is not UTF-8 text (invalid bytes at offset {e.Index})", e);
        }
    }
}
