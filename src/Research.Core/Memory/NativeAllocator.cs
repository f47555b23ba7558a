using System.Runtime.InteropServices;

namespace Research.Core.Memory;

/// <summary>
/// Tunes glibc's malloc, which serves libtorch's tensors, from inside the process at start-up: every block comes from the
/// heap (no block gets a mapping of its own) and freed memory is never handed back to the kernel, so a training step
/// reuses the pages of the step before instead of faulting in fresh zeroed ones. Called first thing by the command line's
/// and the test runner's <c>Main</c>, before libtorch allocates; so it holds for runs, sweeps, Slurm jobs and tests alike,
/// with no launcher, <c>LD_PRELOAD</c> or <c>GLIBC_TUNABLES</c> to forget.
/// </summary>
/// <remarks>
/// <para>Why: by default glibc maps every block of at least the mmap threshold (128 KiB, raised by frees up to 32 MiB)
/// with its own <c>mmap</c> and unmaps it on free, and gives the top of the heap back once more than the trim threshold
/// is free there. A training step frees and reallocates the same large tensors every step, so it touches them as new
/// pages: one minor page fault, and a page the kernel zeroes, per 4 KiB.</para>
/// <para>Settings (<c>mallopt</c>): <c>M_MMAP_MAX = 0</c>, no block gets its own mapping (glibc still maps one that a
/// thread's secondary arena, 64 MiB at most, cannot hold); <c>M_TRIM_THRESHOLD = 2³¹ − 1</c>, the heap is never
/// trimmed. The price: the resident set stays at the process's peak instead of following the live tensors — flat over a
/// run, as with jemalloc's decay switched off. Raising <c>M_MMAP_THRESHOLD</c> to its cap of 32 MiB instead measured the
/// same on these workloads, but leaves every larger block mapped per step (GPT-2's 50,257-id logits on the same batch
/// take 206 MB).</para>
/// <para>Measured with <c>research bench step</c> on a quiet machine (AMD EPYC, 2 cores, 2 intra-op threads, 7 repetitions
/// × 10 steps, one process per allocator; hand-written loop / trainer step in ms per step, minor page faults per step in
/// parentheses). GPT d256×4 with 8,192 ids, whose logits take 32 MiB: default glibc 405 / 515 (11,585 / 23,610), these
/// settings 281 / 283 (0 / 0), <c>LD_PRELOAD=libjemalloc.so.2</c> with <c>MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1</c>
/// 270 / 270 (0 / 1). The same GPT with the 257-id byte vocabulary: 212 / 175 (3,196 / 1), 178 / 174, 180 / 179. The demo
/// MLP (~2.2 ms) and the 28×28 CNN (~30 ms): the same under all three. Debian's jemalloc as configured (decay on, an
/// earlier run of 5 × 3 steps) was the slowest: 931 / 960 and 426 / 530 on the two GPTs, 289 on the CNN, 19–84 k faults
/// per step. So the in-process setting comes within 4% of jemalloc without decay and needs no library.</para>
/// <para>Memory: over 2,012 steps of the 8,192-id GPT the heap grew to 1,172 MiB within the first ~400 steps and then
/// stayed there (default glibc's resident set moved between 740 and 1,040 MiB, peak 1,198; jemalloc without decay held
/// 650 MiB flat). Native memory stays flat; it is just not given back.</para>
/// <para>Off, to compare: <c>RESEARCH_MALLOC=glibc</c> keeps glibc's defaults. A preloaded allocator (<c>LD_PRELOAD</c>)
/// is left alone, as is a C library without glibc's <c>mallopt</c>.</para>
/// </remarks>
public static class NativeAllocator
{
    /// <summary>The environment variable: <c>glibc</c> keeps glibc's defaults; unset or <c>tuned</c> applies the settings.</summary>
    public const string Variable = "RESEARCH_MALLOC";

    const int M_TRIM_THRESHOLD = -1, M_MMAP_MAX = -4;

    static readonly Lock Gate = new();
    static string? setting;

    /// <summary>A mistake in the environment <see cref="Configure"/> found (the command prints it); null when none.</summary>
    public static string? Warning { get; private set; }

    /// <summary>What <see cref="Configure"/> did, for benchmark reports.</summary>
    public static string Setting => setting ?? "glibc defaults (NativeAllocator.Configure was not called)";

    /// <summary>Applies the settings once per process (later calls return the first outcome) and describes the outcome.</summary>
    public static string Configure()
    {
        lock (Gate) return setting ??= Apply();
    }

    static string Apply()
    {
        if (!OperatingSystem.IsLinux()) return "the platform's own allocator (not Linux)";
        if (Environment.GetEnvironmentVariable("LD_PRELOAD") is { Length: > 0 } preload) return $"preloaded: {preload}";
        var choice = Environment.GetEnvironmentVariable(Variable);
        if (choice == "glibc") return $"glibc defaults ({Variable}=glibc)";
        if (choice is { Length: > 0 } and not "tuned")
            Warning = $"warning: {Variable}={choice} is neither 'tuned' nor 'glibc'; using 'tuned'";
        try
        {
            // mallopt returns 1 on success, 0 when glibc refuses the value.
            if (mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, int.MaxValue) == 1)
                return $"glibc, tuned in-process: M_MMAP_MAX=0, M_TRIM_THRESHOLD={int.MaxValue} ({Variable}=glibc for the defaults)";
            return "glibc defaults (mallopt refused the settings)";
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return "the C library's allocator (no glibc mallopt)";
        }
    }

    [DllImport("libc", EntryPoint = "mallopt")]
    static extern int mallopt(int param, int value);
}
