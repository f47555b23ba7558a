using System.Runtime.InteropServices;

namespace Research.Core.Training;

/// <summary>
/// A run stopped by SIGINT (Ctrl-C) or SIGTERM (<c>kill</c>, Slurm's time limit, <c>scancel</c>): the step under way was
/// finished, a resumable checkpoint written, and the run recorded as <c>interrupted</c>. The command exits with the shell's
/// code for the signal, 130 or 143, and <c>--resume RUN_DIR</c> continues it bitwise.
/// </summary>
public sealed class RunInterruptedException(string signal, int exitCode, string message) : Exception(message)
{
    public string Signal { get; } = signal;
    public int ExitCode { get; } = exitCode;
}

/// <summary>
/// Catches SIGINT and SIGTERM while a run trains, so that the loop stops at the next point where its state is whole (after
/// an optimizer step, or between a study's phases) instead of in the middle of a write. A second signal is not caught:
/// the process ends at once, as without this, and the run resumes from its last checkpoint. A plugin call that does not
/// return after the signal is the <see cref="Watchdog"/>'s to end.
/// </summary>
public sealed class Interruption : IDisposable
{
    readonly List<PosixSignalRegistration> _registrations = [];
    volatile string? _signal;
    long _requestedAt;

    /// <summary>The signal that asked the run to stop, or null.</summary>
    public string? Requested => _signal;

    /// <summary>When it came (a <see cref="System.Diagnostics.Stopwatch"/> timestamp); meaningful once <see cref="Requested"/> is set.</summary>
    public long RequestedAt => Volatile.Read(ref _requestedAt);

    /// <summary>The shell's exit code for a process ended by the signal: 128 + its number.</summary>
    public static int ExitCode(string signal) => signal == "SIGINT" ? 130 : 143;

    public static Interruption Watch(Action<string> message)
    {
        var watch = new Interruption();
        foreach (var signal in new[] { PosixSignal.SIGINT, PosixSignal.SIGTERM })
            watch._registrations.Add(PosixSignalRegistration.Create(signal, context =>
            {
                if (watch._signal != null) return;          // the second signal ends the process
                context.Cancel = true;
                Volatile.Write(ref watch._requestedAt, System.Diagnostics.Stopwatch.GetTimestamp());
                watch._signal = context.Signal == PosixSignal.SIGINT ? "SIGINT" : "SIGTERM";
                message($"{watch._signal}: finishing the current step and writing a checkpoint (send it again to stop at once)");
            }));
        return watch;
    }

    /// <summary>Throws when a signal asked the run to stop; the caller has made its state resumable first.</summary>
    public void ThrowIfRequested(string where)
    {
        if (_signal is not { } s) return;
        throw new RunInterruptedException(s, ExitCode(s), $"interrupted by {s} {where}");
    }

    public void Dispose()
    {
        foreach (var r in _registrations) r.Dispose();
    }
}
