using Research.Core;
namespace Research.Cli.Bench;

/// <summary>The processor a benchmark ran on, as the kernel names it: timings are only comparable on the same one.</summary>
public static class CpuModel
{
    /// <summary>The first "model name" of <c>/proc/cpuinfo</c> and the logical CPUs the process may use; "unknown" where
    /// there is no such file.</summary>
    public static string Describe()
    {
        var name = File.Exists("/proc/cpuinfo")
            ? File.ReadLines("/proc/cpuinfo").Where(l => l.StartsWith("model name", StringComparison.Ordinal))
                .Select(l => l[(l.IndexOf(':') + 1)..].Trim()).FirstOrDefault()
            : null;
        return $"{name ?? "unknown CPU"}, {Environment.ProcessorCount} logical CPUs";
    }
}
