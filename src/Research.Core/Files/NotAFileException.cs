namespace Research.Core.Files;

/// <summary>
/// A path a command was to read or write leads to something that is not a regular file (a FIFO, a device, a socket, a
/// directory): refused before it is opened. A user's mistake, reported as the message's one line.
/// </summary>
public sealed class NotAFileException(string path, string message) : IOException(message)
{
    /// <summary>The path as the command was given it.</summary>
    public string Path { get; } = path;
}
