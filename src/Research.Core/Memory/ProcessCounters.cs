using System.Globalization;

namespace Research.Core.Memory;

/// <summary>
/// What the kernel counts for this process, read from <c>/proc/self</c> (Linux; elsewhere −1): minor page faults — each a
/// page the allocator handed back to the kernel and then touched again, the cost a native allocator that returns memory
/// too eagerly adds to every training step — and the resident set (now and its peak), to see that native memory stays flat.
/// </summary>
public static class ProcessCounters
{
    /// <summary>Minor page faults of the whole process so far (<c>minflt</c>, field 10 of <c>/proc/self/stat</c>).</summary>
    public static long MinorFaults()
    {
        if (!OperatingSystem.IsLinux()) return -1;
        var stat = File.ReadAllText("/proc/self/stat");
        // Field 2, the command name, is in parentheses and may hold spaces: count fields after the last ')'.
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return long.Parse(fields[10 - 3], CultureInfo.InvariantCulture);
    }

    /// <summary>Resident bytes now (<c>VmRSS</c>).</summary>
    public static long ResidentBytes() => StatusBytes("VmRSS:");

    /// <summary>The largest resident set so far (<c>VmHWM</c>).</summary>
    public static long PeakResidentBytes() => StatusBytes("VmHWM:");

    /// <summary>A line of <c>/proc/self/status</c> such as <c>VmRSS:   123456 kB</c>, in bytes.</summary>
    static long StatusBytes(string key)
    {
        if (!OperatingSystem.IsLinux()) return -1;
        var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith(key, StringComparison.Ordinal));
        return line is null ? -1 : 1024 * long.Parse(line[key.Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture);
    }
}
