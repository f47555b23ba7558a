/// The in-process allocator setting (NativeAllocator) and the kernel counters the benchmarks read (ProcessCounters).
module Research.Tests.AllocatorTests

open System
open System.IO.MemoryMappedFiles
open Expecto
open Research.Core.Memory

let private pageSize = int64 Environment.SystemPageSize

let tests =
    testList "native allocator" [
        test "the minor-fault counter counts: touching 4,096 fresh pages of an anonymous mapping adds at least 4,096 faults" {
            // Other tests run meanwhile and only add faults: "at least" holds whatever they do.
            let pages = 4096L
            use mapping = MemoryMappedFile.CreateNew(null, pages * pageSize)
            use view = mapping.CreateViewAccessor()
            let before = ProcessCounters.MinorFaults()
            for p in 0L .. pages - 1L do view.Write(p * pageSize, 1uy)
            let added = ProcessCounters.MinorFaults() - before
            Expect.isGreaterThanOrEqual added pages "faults counted while touching the pages"
        }

        test "the resident set is read and bounded by its peak: 0 < VmRSS ≤ VmHWM" {
            let now, peak = ProcessCounters.ResidentBytes(), ProcessCounters.PeakResidentBytes()
            Expect.isGreaterThan now 0L "resident bytes"
            Expect.isLessThanOrEqual now peak "the peak is at least the current resident set"
        }

        test "the test runner tuned glibc in-process before any test (M_MMAP_MAX=0), once: a second Configure returns the first outcome" {
            let preloaded = not (String.IsNullOrEmpty(Environment.GetEnvironmentVariable "LD_PRELOAD"))
            let off = Environment.GetEnvironmentVariable NativeAllocator.Variable = "glibc"
            if preloaded || off then skiptest "the allocator is preloaded or RESEARCH_MALLOC=glibc turns the setting off"
            Expect.stringContains NativeAllocator.Setting "M_MMAP_MAX=0" "the setting in effect"
            Expect.equal (NativeAllocator.Configure()) NativeAllocator.Setting "Configure applies once per process"
        }
    ]
