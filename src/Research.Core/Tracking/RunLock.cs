namespace Research.Core.Tracking;

/// <summary>Another process is writing the run: a second writer would duplicate its rows and race its checkpoints.</summary>
public sealed class RunLockedException(string message) : Exception(message);

/// <summary>
/// One writer per run folder: <c>train</c>, <c>study</c> and <c>--resume</c> hold <c>run.lock</c> for as long as they write
/// (an exclusive lock the operating system drops when the process ends, however it ends, so a killed run leaves nothing
/// to clean up), and write their pid to <c>run.pid</c> so a refused writer can say who holds it.
/// </summary>
public sealed class RunLock : IDisposable
{
    public const string FileName = "run.lock", PidFile = "run.pid";
    readonly FileStream _lock;

    RunLock(FileStream held) => _lock = held;

    /// <summary>Takes the run folder's lock, or throws <see cref="RunLockedException"/> naming the holder's pid.</summary>
    public static RunLock Acquire(string runDir)
    {
        if (!Directory.Exists(runDir)) throw new DirectoryNotFoundException($"no run folder {runDir}");
        try
        {
            var held = new FileStream(Path.Combine(runDir, FileName), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            File.WriteAllText(Path.Combine(runDir, PidFile), Environment.ProcessId.ToString());
            return new RunLock(held);
        }
        catch (IOException)
        {
            var holder = File.Exists(Path.Combine(runDir, PidFile)) ? File.ReadAllText(Path.Combine(runDir, PidFile)).Trim() : "?";
            throw new RunLockedException($"{runDir} is being written by another process (pid {holder}); wait for it to end or stop it, then resume");
        }
    }

    public void Dispose() => _lock.Dispose();
}
