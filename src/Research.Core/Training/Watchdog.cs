using System.Diagnostics;
using Research.Core.Plugins;

namespace Research.Core.Training;

/// <summary>
/// A time limit on each plugin call (<c>[plugins] call_timeout_s</c>): a plugin that loops forever in <c>Penalty</c> would
/// otherwise hold a run, its lock and a Slurm allocation until someone notices. The thread that trains marks the start and
/// end of the outermost plugin call; a timer on another thread sees a call older than the limit and ends the run through
/// the callback given to <see cref="Start"/> (the trainer records the run as failed, naming the plugin, and exits 1). A call cannot be cancelled
/// from outside: stopping the process is the only sure way.
/// </summary>
public sealed class Watchdog : IDisposable
{
    [ThreadStatic] static Watchdog? _current;

    readonly TimeSpan _limit;
    readonly Action<string> _expired;
    readonly Timer _timer;
    readonly Thread _owner = Thread.CurrentThread;
    int _depth, _fired;
    long _started;                 // Stopwatch timestamp of the outermost call, 0 when none
    string _call = "";

    Watchdog(TimeSpan limit, Action<string> expired)
    {
        _limit = limit;
        _expired = expired;
        var period = TimeSpan.FromMilliseconds(Math.Clamp(limit.TotalMilliseconds / 4, 50, 1000));
        _timer = new Timer(_ => Check(), null, period, period);
    }

    /// <summary>Watches the plugin calls this thread makes until disposed; no watchdog for a limit of 0 (off).</summary>
    public static Watchdog? Start(double limitSeconds, Action<string> expired)
    {
        if (limitSeconds <= 0) return null;
        return _current = new Watchdog(TimeSpan.FromSeconds(limitSeconds), expired);
    }

    /// <summary>Runs a plugin call under the current thread's watchdog, if any.</summary>
    internal static T Watch<T>(PluginDescriptor d, string member, long step, Func<T> call)
    {
        var w = _current;
        if (w is null) return call();
        if (w._depth++ == 0)
        {
            w._call = $"{PluginHost.RoleName(d.Role)} '{d.Name}' ({d.AssemblyPath}) did not return from {member}" + (step >= 0 ? $" at step {step}" : "");
            Volatile.Write(ref w._started, Stopwatch.GetTimestamp());
        }
        try { return call(); }
        finally
        {
            if (--w._depth == 0) Volatile.Write(ref w._started, 0);
        }
    }

    void Check()
    {
        var started = Volatile.Read(ref _started);
        if (started == 0 || Stopwatch.GetElapsedTime(started) < _limit) return;
        if (Interlocked.Exchange(ref _fired, 1) == 1) return;
        _expired($"{_call} within {_limit.TotalSeconds:G} s ([plugins] call_timeout_s)");
    }

    public void Dispose()
    {
        _timer.Dispose();
        if (Thread.CurrentThread == _owner && _current == this) _current = null;
    }
}
