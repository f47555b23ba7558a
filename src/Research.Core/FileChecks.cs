namespace Research.Core;

/// <summary>What every reader checks before it opens a file a user named.</summary>
public static class FileChecks
{
    /// <summary>
    /// The length of the file a path leads to, symbolic links followed (a link's own length is that of its target's
    /// name). A FIFO or a device (/dev/null, /dev/zero) reports 0, like an empty file: readers refuse all of them, since
    /// reading a FIFO blocks and reading /dev/zero never ends.
    /// </summary>
    public static long TargetLength(string path)
    {
        var info = new FileInfo(path);
        if (info.LinkTarget != null && info.ResolveLinkTarget(returnFinalTarget: true) is FileInfo target) info = target;
        return info.Exists ? info.Length : 0;
    }
}
