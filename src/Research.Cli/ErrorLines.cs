using System.Text;
using Microsoft.Win32.SafeHandles;

namespace Research.Cli;

/// <summary>
/// The command's error lines, written so that writing them cannot fail the command again. The first write to
/// <see cref="Console.Error"/> sets up .NET's console (terminal settings and a signal-handling thread); when the process
/// has just run out of memory — under a virtual-memory limit (<c>ulimit -v</c>) the failed allocation is often the
/// reason for the error being reported — that set-up throws too, and an exception thrown from the last catch ends the
/// process as .NET's unhandled-exception abort (134) instead of with one line. So a line that <see cref="Console.Error"/>
/// cannot take goes straight to file descriptor 2 through a stream opened before anything else ran.
/// </summary>
static class ErrorLines
{
    static Stream? _raw;

    /// <summary>Opens the fallback stream on descriptor 2 (no console set-up, no allocation when used but the line's bytes).
    /// Nothing when descriptor 2 is closed.</summary>
    public static void Open()
    {
        if (_raw is not null) return;
        try { _raw = new FileStream(new SafeFileHandle(2, ownsHandle: false), FileAccess.Write, bufferSize: 0); }
        catch (Exception) { _raw = null; }
    }

    /// <summary>Writes one line to standard error; never throws.</summary>
    public static void Write(string line)
    {
        try
        {
            Console.Error.WriteLine(line);
            return;
        }
        catch (Exception) { }
        try { _raw?.Write(Encoding.UTF8.GetBytes(line + "\n")); }
        catch (Exception) { }   // standard error is gone: there is nowhere left to say anything
    }

    /// <summary>
    /// When <paramref name="e"/> (or an exception inside it) says memory ran out and the process has an address-space
    /// limit, one line saying so with the limit; otherwise null. Native allocations (libtorch's tensors, thread stacks)
    /// report running out as errno 12 in their own words, hence the message test.
    /// </summary>
    public static string? OutOfMemory(Exception e)
    {
        var outOfMemory = false;
        for (Exception? x = e; x is not null; x = x.InnerException)
            outOfMemory |= x is OutOfMemoryException || (x is System.ComponentModel.Win32Exception { NativeErrorCode: 12 })
                           || x.Message.Contains("allocate memory", StringComparison.OrdinalIgnoreCase);
        if (!outOfMemory || AddressSpaceLimit() is not { } limit) return null;
        return string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"error: out of memory under this process's virtual-memory limit of {limit / (1024.0 * 1024 * 1024):F1} GiB (ulimit -v {limit / 1024}): " +
            $"{e.Message.Split('\n', 2)[0].TrimEnd()}; raise the limit, or make the run smaller (batch_size, the model, the data)");
    }

    /// <summary>The soft limit on the address space in bytes (<c>ulimit -v</c>, RLIMIT_AS), or null when unlimited or unknown.</summary>
    static long? AddressSpaceLimit()
    {
        try
        {
            // "Max address space           8192000000           unlimited            bytes"
            foreach (var line in File.ReadLines("/proc/self/limits"))
                if (line.StartsWith("Max address space", StringComparison.Ordinal))
                    return long.TryParse(line["Max address space".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries)[0], out var bytes) ? bytes : null;
        }
        catch (Exception) { }
        return null;
    }
}
