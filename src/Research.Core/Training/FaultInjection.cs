namespace Research.Core.Training;

/// <summary>
/// Crash injection for resume tests: with <c>RESEARCH_KILL_AFTER_MICROBATCHES=n</c> in the environment, the process
/// sends itself SIGKILL right after its n-th micro-batch's backward — mid-epoch and, with accumulation, mid-window,
/// exactly where a real kill could land. Nothing is flushed or cleaned up, as with a real kill.
/// </summary>
public static class FaultInjection
{
    static readonly long KillAfter =
        long.TryParse(Environment.GetEnvironmentVariable("RESEARCH_KILL_AFTER_MICROBATCHES"), out var n) && n > 0 ? n : long.MaxValue;
    static long _microBatches;

    public static void AfterMicroBatch()
    {
        if (++_microBatches >= KillAfter) System.Diagnostics.Process.GetCurrentProcess().Kill();
    }
}
