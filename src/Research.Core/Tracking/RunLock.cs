using System.Runtime.InteropServices;

namespace Research.Core.Tracking;

/// <summary>Another process is writing the run: a second writer would duplicate its rows and race its checkpoints.</summary>
public sealed class RunLockedException(string message) : Exception(message);

/// <summary>A run folder that cannot be written (a read-only file system, no permission): a writer needs its lock, store
/// and checkpoints there.</summary>
public sealed class RunFolderNotWritableException(string message, Exception inner) : IOException(message, inner);

/// <summary>
/// One writer per run folder: <c>train</c>, <c>study</c> and <c>--resume</c> hold <c>run.lock</c> for as long as they write
/// (an exclusive <c>flock</c> the operating system drops when the process ends, however it ends, so a killed run leaves
/// nothing to clean up), and write their pid to <c>run.pid</c> so a refused writer can say who holds it. Readers ask
/// <see cref="IsHeld"/> whether a run recorded as running still has its writer.
/// </summary>
public sealed class RunLock : IDisposable
{
    public const string FileName = "run.lock", PidFile = "run.pid";
    readonly FileStream _lock;

    RunLock(FileStream held) => _lock = held;

    /// <summary>Takes the run folder's lock, or throws <see cref="RunLockedException"/> naming the holder's pid, or
    /// <see cref="RunFolderNotWritableException"/> when the folder cannot be written.</summary>
    public static RunLock Acquire(string runDir)
    {
        if (!Directory.Exists(runDir)) throw new DirectoryNotFoundException($"no run folder {runDir}");
        var path = Path.Combine(runDir, FileName);
        FileStream held;
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                held = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
                break;
            }
            catch (IOException e) when (IsLockConflict(e))
            {
                // A reader asking IsHeld holds a shared lock for an instant: only a lock that stays is a writer's.
                if (attempt < 10) { Thread.Sleep(20); continue; }
                var holder = File.Exists(Path.Combine(runDir, PidFile)) ? File.ReadAllText(Path.Combine(runDir, PidFile)).Trim() : "?";
                throw new RunLockedException($"{runDir} is being written by another process (pid {holder}); wait for it to end or stop it, then resume");
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw NotWritable(runDir, e);
            }
        }
        try
        {
            File.WriteAllText(Path.Combine(runDir, PidFile), Environment.ProcessId.ToString());
            return new RunLock(held);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            held.Dispose();
            throw NotWritable(runDir, e);
        }
    }

    static RunFolderNotWritableException NotWritable(string runDir, Exception e) =>
        new($"{runDir} is not writable ({e.Message}); a run writes its lock, store and checkpoints there: make it writable, " +
            "or copy the run folder somewhere writable and resume the copy", e);

    /// <summary>The lock is held by another open file (another process, or another handle of this one): errno EWOULDBLOCK
    /// on Linux and macOS, a sharing violation on Windows.</summary>
    static bool IsLockConflict(IOException e) => e.HResult is 11 or 35 or unchecked((int)0x80070020);

    /// <summary>
    /// Whether a process holds the lock of <paramref name="runDir"/> now: true, false, or null when that cannot be told —
    /// no lock file (a store written before locks, or a sweep's store of merged runs), not Linux, file locking switched
    /// off for .NET (<c>DOTNET_SYSTEM_IO_DISABLEFILELOCKING</c>, so writers take none), or the file cannot be opened. Asks
    /// with a shared <c>flock</c> that is let go at once, on a descriptor opened non-blocking, so a FIFO or a device put in
    /// the lock's place cannot hang the reader.
    /// </summary>
    public static bool? IsHeld(string runDir)
    {
        if (!OperatingSystem.IsLinux() || LockingDisabled) return null;
        var path = Path.Combine(runDir, FileName);
        if (!File.Exists(path)) return null;
        try
        {
            var fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
            if (fd < 0) return null;
            try
            {
                if (flock(fd, LOCK_SH | LOCK_NB) == 0) return false;
                return Marshal.GetLastPInvokeError() == EWOULDBLOCK ? true : null;
            }
            finally { close(fd); }
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return null; }
    }

    static bool LockingDisabled =>
        (AppContext.TryGetSwitch("System.IO.DisableFileLocking", out var off) && off)
        || Environment.GetEnvironmentVariable("DOTNET_SYSTEM_IO_DISABLEFILELOCKING") is "1" or "true";

    // Linux's values (x86-64 and arm64 alike).
    const int O_RDONLY = 0, O_NONBLOCK = 0x800, O_CLOEXEC = 0x80000, LOCK_SH = 1, LOCK_NB = 4, EWOULDBLOCK = 11;

    [DllImport("libc", SetLastError = true)]
    static extern int open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

    [DllImport("libc", SetLastError = true)]
    static extern int flock(int fd, int operation);

    [DllImport("libc")]
    static extern int close(int fd);

    public void Dispose() => _lock.Dispose();
}
