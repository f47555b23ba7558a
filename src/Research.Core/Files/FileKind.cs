using System.Runtime.InteropServices;

namespace Research.Core.Files;

/// <summary>What a path is on disk, as its inode says, read without opening it.</summary>
public enum FileKind
{
    /// <summary>Nothing there (or a link whose target is missing, when links are followed).</summary>
    Missing,
    Regular,
    Directory,
    /// <summary>A named pipe: opening it for reading waits in open(2) until a writer comes, possibly forever.</summary>
    Fifo,
    CharacterDevice,
    BlockDevice,
    Socket,
    /// <summary>Only from <see cref="FileKinds.OfEntry"/>, which does not follow a link.</summary>
    SymbolicLink,
    /// <summary>The kind could not be read (a folder on the way that may not be searched, a loop of links): opening the
    /// path fails with the system's own reason, so nothing blocks.</summary>
    Unknown,
}

/// <summary>
/// The kind of a path, read from its inode by <c>statx(2)</c> without opening it: opening a FIFO for reading blocks in
/// <c>open(2)</c>, so its kind must be known before. .NET 10 does not say it: on Linux <see cref="FileInfo"/> reports a
/// FIFO, a device and a socket alike as an existing, empty file with <see cref="FileAttributes.Normal"/>. <c>statx</c> is
/// used rather than <c>stat</c> because its <c>struct statx</c> has one layout on every Linux architecture (the mode is
/// the 16 bits at byte 28 of a 256-byte record), where <c>struct stat</c> differs between architectures and C libraries;
/// it is looked up in the process's own symbols (glibc ≥ 2.28, musl ≥ 1.2.5 export it), so no library is named and no
/// package is needed. Elsewhere (macOS, Windows, an older libc or kernel) the kind falls back to what
/// <see cref="FileSystemInfo"/> tells — a directory, a link, or else a regular file — as .NET itself would open it.
/// </summary>
public static class FileKinds
{
    [UnmanagedFunctionPointer(CallingConvention.Cdecl, SetLastError = true)]
    delegate int StatxFunction(int directory, [MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags, uint mask, byte[] buffer);

    const int AtCurrentDirectory = -100, AtSymlinkNoFollow = 0x100;
    const uint StatxType = 0x1;
    const int StatxSize = 256, ModeOffset = 28;
    const int ENOENT = 2, ENOTDIR = 20, ENOSYS = 38;

    static readonly StatxFunction? Statx = OperatingSystem.IsLinux()
        && NativeLibrary.TryGetExport(NativeLibrary.GetMainProgramHandle(), "statx", out var address)
            ? Marshal.GetDelegateForFunctionPointer<StatxFunction>(address) : null;

    /// <summary>The kind of what <paramref name="path"/> leads to, links followed.</summary>
    public static FileKind Of(string path) => Read(path, followLinks: true);

    /// <summary>The kind of the entry <paramref name="path"/> itself: a link is <see cref="FileKind.SymbolicLink"/>.</summary>
    public static FileKind OfEntry(string path) => Read(path, followLinks: false);

    static FileKind Read(string path, bool followLinks)
    {
        if (path.Length == 0 || path.Contains('\0')) return FileKind.Missing;
        if (Statx is { } statx)
        {
            var buffer = new byte[StatxSize];
            if (statx(AtCurrentDirectory, path, followLinks ? 0 : AtSymlinkNoFollow, StatxType, buffer) == 0)
                return FromMode(BitConverter.ToUInt16(buffer, ModeOffset));
            var errno = Marshal.GetLastPInvokeError();
            if (errno is ENOENT or ENOTDIR) return FileKind.Missing;
            if (errno != ENOSYS) return FileKind.Unknown;
        }
        return FromFileSystemInfo(path, followLinks);
    }

    /// <summary>The file-type bits of <c>st_mode</c> (S_IFMT), the same numbers on every Unix.</summary>
    static FileKind FromMode(ushort mode) => (mode & 0xF000) switch
    {
        0x8000 => FileKind.Regular,
        0x4000 => FileKind.Directory,
        0x1000 => FileKind.Fifo,
        0x2000 => FileKind.CharacterDevice,
        0x6000 => FileKind.BlockDevice,
        0xC000 => FileKind.Socket,
        0xA000 => FileKind.SymbolicLink,
        _ => FileKind.Unknown,
    };

    static FileKind FromFileSystemInfo(string path, bool followLinks)
    {
        try
        {
            FileSystemInfo info = Directory.Exists(path) ? new DirectoryInfo(path) : new FileInfo(path);
            if (info.LinkTarget != null)
            {
                if (!followLinks) return FileKind.SymbolicLink;
                if (info.ResolveLinkTarget(returnFinalTarget: true) is not { Exists: true } target) return FileKind.Missing;
                info = target;
            }
            return !info.Exists ? FileKind.Missing : info is DirectoryInfo ? FileKind.Directory : FileKind.Regular;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return FileKind.Unknown; }
    }

    /// <summary>The kind in words, with its article: "a FIFO (named pipe)", "a character device".</summary>
    public static string Describe(FileKind kind) => kind switch
    {
        FileKind.Missing => "missing",
        FileKind.Regular => "a regular file",
        FileKind.Directory => "a directory",
        FileKind.Fifo => "a FIFO (named pipe)",
        FileKind.CharacterDevice => "a character device",
        FileKind.BlockDevice => "a block device",
        FileKind.Socket => "a socket",
        FileKind.SymbolicLink => "a symbolic link",
        _ => "of an unknown kind",
    };

    /// <summary>
    /// What <paramref name="path"/> is when that is not a file to read or write — "a FIFO (named pipe)", "a symbolic link
    /// to a character device (/dev/full)" — or null when it is a regular file (links followed), is missing, or its kind
    /// cannot be read.
    /// </summary>
    public static string? NotAFile(string path)
    {
        var kind = Of(path);
        if (kind is FileKind.Regular or FileKind.Missing or FileKind.Unknown) return null;
        return OfEntry(path) == FileKind.SymbolicLink && FinalTarget(path) is { } target
            ? $"a symbolic link to {Describe(kind)} ({target})" : Describe(kind);
    }

    /// <summary>The path a symbolic link finally leads to (links of links followed), or null for a loop or a path that is
    /// not a link.</summary>
    public static string? FinalTarget(string path)
    {
        try { return new FileInfo(path).ResolveLinkTarget(returnFinalTarget: true)?.FullName; }
        catch (IOException) { return null; }
    }
}
