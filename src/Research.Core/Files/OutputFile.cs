using System.Text;

namespace Research.Core.Files;

/// <summary>
/// The one way the framework writes a file at a path a user chose or can steer (<c>-o</c> outputs, plots, sweep
/// summaries, weights, a run's config copy, published models): written whole under a temporary name beside the target,
/// then renamed over it, so a reader never sees half a file and a failure leaves the old one in place. The rename
/// replaces whatever entry has the name, so the target's kind is checked first: a FIFO, a device, a socket or a directory
/// (or a link to one) is refused, never replaced and never written into — as root, a rename over <c>/dev/full</c> would
/// replace the system's device node with a regular file. A symbolic link to a regular file (or to nothing yet) is written
/// through: its final target gets the new contents and the link stays a link, as a shell's <c>&gt;</c> would do.
/// </summary>
/// <remarks>
/// The kind is checked again just before the rename; what another process puts at the path between that check and the
/// rename is not seen (POSIX has no rename that refuses to replace a non-regular file).
/// </remarks>
public static class OutputFile
{
    /// <summary>
    /// The path the contents go to: <paramref name="path"/> itself, or the final target of a link; refused when it exists
    /// and is not a regular file.
    /// </summary>
    /// <exception cref="NotAFileException">One line naming the path and what it is.</exception>
    public static string Target(string path)
    {
        if (path.Trim().Length == 0 || Path.EndsInDirectorySeparator(path))
            throw new NotAFileException(path, $"'{path}' names no file (it is empty or ends in a folder separator): choose a file path");
        var full = Path.GetFullPath(path);
        if (FileKinds.NotAFile(full) is { } what) throw new NotAFileException(path, $"{path} is {what}, not a file: choose a file path");
        if (FileKinds.OfEntry(full) != FileKind.SymbolicLink) return full;
        return FileKinds.FinalTarget(full) ?? throw new NotAFileException(path, $"{path} is a loop of symbolic links, not a file: choose a file path");
    }

    /// <summary>
    /// Writes <paramref name="path"/> through <paramref name="writeTemporary"/>, which writes the whole file at the path it
    /// is given (a library that only writes to a path: safetensors); that file then replaces the target (see the class).
    /// The folder is created when missing.
    /// </summary>
    /// <exception cref="NotAFileException">The path leads to a FIFO, a device, a socket or a directory.</exception>
    public static void Write(string path, Action<string> writeTemporary)
    {
        var target = Target(path);
        var folder = Path.GetDirectoryName(target)!;
        Directory.CreateDirectory(folder);
        // Beside the target, so that the rename stays inside one file system (atomic); a name too long for the folder is
        // cut, the random part kept.
        var name = Path.GetFileName(target);
        var temporary = Path.Combine(folder, $".{(name.Length > 200 ? name[..200] : name)}.{Guid.NewGuid():N}.tmp");
        try
        {
            writeTemporary(temporary);
            Target(target);
            if (!OperatingSystem.IsWindows() && File.Exists(target)) File.SetUnixFileMode(temporary, File.GetUnixFileMode(target));
            File.Move(temporary, target, overwrite: true);
        }
        finally { File.Delete(temporary); }
    }

    /// <summary>Writes <paramref name="path"/> from a stream (see <see cref="Write(string, Action{string})"/>).</summary>
    public static void WriteStream(string path, Action<Stream> write) => Write(path, temporary =>
    {
        using var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write);
        write(stream);
    });

    /// <summary>Writes <paramref name="bytes"/> to <paramref name="path"/> (see <see cref="Write(string, Action{string})"/>).</summary>
    public static void WriteAllBytes(string path, byte[] bytes) => WriteStream(path, s => s.Write(bytes));

    /// <summary>Writes <paramref name="text"/> as UTF-8 without a byte-order mark (see <see cref="Write(string, Action{string})"/>).</summary>
    public static void WriteAllText(string path, string text) => WriteAllBytes(path, new UTF8Encoding(false).GetBytes(text));
}
