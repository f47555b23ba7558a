using System.Diagnostics;
using Research.Core.Plugins;

namespace Research.Core.Training;

/// <summary>
/// Watches the plugin calls of the thread that trains, since a call cannot be cancelled from outside and stopping the
/// process is the only sure way to end one. Two things end the run through the callbacks given to <see cref="Start"/>:
/// <list type="bullet">
/// <item>a call older than <c>[plugins] call_timeout_s</c> (0: no limit): a plugin that loops forever in <c>Penalty</c>
/// would otherwise hold a run, its lock and a Slurm allocation until someone notices. The run is recorded as failed,
/// naming the plugin, and the process exits 1.</item>
/// <item>SIGINT or SIGTERM while a call is under way: the signal asks the loop to stop at its next step boundary, which a
/// stuck call never reaches. A call still running <see cref="SignalGrace"/> after the signal (or after it began, if it
/// began later) ends the run: recorded as interrupted, naming the plugin, exit 130 / 143; a resume continues from the last
/// checkpoint. The core's own work is never cut short: with no plugin call under way the step finishes as usual.</item>
/// </list>
/// The thread that trains marks the start and end of the outermost plugin call; a timer on another thread looks at it.
/// </summary>
public sealed class Watchdog : IDisposable
{
    /// <summary>
    /// How long a plugin call may go on after SIGINT or SIGTERM before the run stops without it: long enough for a call
    /// that was about to return (a penalty, a schedule), well inside the 30 s Slurm leaves between SIGTERM and SIGKILL.
    /// A long task-end call (a Fisher over a large model) is cut off too; the resume computes it again.
    /// </summary>
    public static readonly TimeSpan SignalGrace = TimeSpan.FromSeconds(5);

    [ThreadStatic] static Watchdog? _current;

    /// <summary>The outermost plugin call under way: who, which member, at which step, since when (a Stopwatch timestamp).</summary>
    sealed record Call(PluginDescriptor Plugin, string Member, long Step, long Started)
    {
        public string Who => $"{PluginHost.RoleName(Plugin.Role)} '{Plugin.Name}' ({Plugin.AssemblyPath})";
        public string At => Step >= 0 ? $" at step {Step}" : "";
    }

    readonly TimeSpan? _limit;
    readonly Interruption _signals;
    readonly Action<string> _expired;
    readonly Action<string, string> _stopped;
    readonly Timer _timer;
    readonly Thread _owner = Thread.CurrentThread;
    int _depth, _fired;
    Call? _call;

    Watchdog(TimeSpan? limit, Interruption signals, Action<string> expired, Action<string, string> stopped)
    {
        (_limit, _signals, _expired, _stopped) = (limit, signals, expired, stopped);
        var shortest = limit is { } l && l < SignalGrace ? l : SignalGrace;
        var period = TimeSpan.FromMilliseconds(Math.Clamp(shortest.TotalMilliseconds / 4, 50, 250));
        _timer = new Timer(_ => Check(), null, period, period);
    }

    /// <summary>
    /// Watches the plugin calls this thread makes until disposed. <paramref name="expired"/> gets the line saying which
    /// call exceeded <paramref name="limitSeconds"/> (0: no limit); <paramref name="stopped"/> the signal and the line saying
    /// which call was under way when the signal's grace ran out. Both are called once at most, on the timer's thread, and
    /// are expected to end the process.
    /// </summary>
    public static Watchdog Start(double limitSeconds, Interruption signals, Action<string> expired, Action<string, string> stopped) =>
        _current = new Watchdog(limitSeconds > 0 ? TimeSpan.FromSeconds(limitSeconds) : null, signals, expired, stopped);

    /// <summary>Runs a plugin call under the current thread's watchdog, if any.</summary>
    internal static T Watch<T>(PluginDescriptor d, string member, long step, Func<T> call)
    {
        var w = _current;
        if (w is null) return call();
        if (w._depth++ == 0) Volatile.Write(ref w._call, new Call(d, member, step, Stopwatch.GetTimestamp()));
        try { return call(); }
        finally
        {
            if (--w._depth == 0) Volatile.Write(ref w._call, null);
        }
    }

    void Check()
    {
        if (Volatile.Read(ref _call) is not { } call) return;
        if (_signals.Requested is { } signal
            && Stopwatch.GetElapsedTime(Math.Max(call.Started, _signals.RequestedAt)) >= SignalGrace)
        {
            if (Interlocked.Exchange(ref _fired, 1) == 0)
                _stopped(signal, $"stopped by {signal} while {call.Who} was in {call.Member}{call.At} (it had not returned " +
                                 $"{SignalGrace.TotalSeconds:G} s after the signal)");
            return;
        }
        if (_limit is { } limit && Stopwatch.GetElapsedTime(call.Started) >= limit && Interlocked.Exchange(ref _fired, 1) == 0)
            _expired($"{call.Who} did not return from {call.Member}{call.At} within {limit.TotalSeconds:G} s ([plugins] call_timeout_s)");
    }

    public void Dispose()
    {
        _timer.Dispose();
        if (Thread.CurrentThread == _owner && _current == this) _current = null;
    }
}
