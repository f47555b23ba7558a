namespace Research.Core.Training;

/// <summary>
/// Crash injection for resume tests: the process sends itself SIGKILL right after its n-th micro-batch's backward
/// (<c>RESEARCH_KILL_AFTER_MICROBATCHES=n</c>: mid-epoch and, with accumulation, mid-window) or after the n-th batch a
/// study's consolidation reads (<c>RESEARCH_KILL_AFTER_CONSOLIDATION_BATCHES=n</c>: inside EWC's Fisher, say) — exactly
/// where a real kill could land. Nothing is flushed or cleaned up, as with a real kill. Unset, each point costs one
/// comparison. <c>RESEARCH_SIGNAL_AFTER_MICROBATCHES=n</c> with <c>RESEARCH_SIGNAL=TERM|INT</c> sends that signal instead,
/// once, through the kernel as <c>kill</c> would: the run's own handler then stops it.
/// </summary>
public static class FaultInjection
{
    static readonly long KillAfterMicroBatches = Read("RESEARCH_KILL_AFTER_MICROBATCHES");
    static readonly long KillAfterConsolidationBatches = Read("RESEARCH_KILL_AFTER_CONSOLIDATION_BATCHES");
    static readonly long SignalAfterMicroBatches = Read("RESEARCH_SIGNAL_AFTER_MICROBATCHES");
    static long _microBatches, _consolidationBatches;

    static long Read(string name) => long.TryParse(Environment.GetEnvironmentVariable(name), out var n) && n > 0 ? n : long.MaxValue;

    public static void AfterMicroBatch()
    {
        if (++_microBatches >= KillAfterMicroBatches) Kill();
        if (_microBatches == SignalAfterMicroBatches)
            _ = SendSignal(Environment.ProcessId, Environment.GetEnvironmentVariable("RESEARCH_SIGNAL") == "INT" ? 2 : 15);
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    static extern int SendSignal(int pid, int signal);

    public static void AfterConsolidationBatch()
    {
        if (++_consolidationBatches >= KillAfterConsolidationBatches) Kill();
    }

    static void Kill() => System.Diagnostics.Process.GetCurrentProcess().Kill();
}
