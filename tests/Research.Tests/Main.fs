module Research.Tests.Main

open System
open Expecto
open Expecto.Impl

/// The counts of the finished run, written last, straight to the standard output stream (Expecto's own
/// console writer adds colour resets and padding around what goes through Console.Out).
let mutable finalLine = ""

/// Every test prints its name and duration; the last line is exactly "N passed, N failed[, N skipped]".
let printer (inner: TestPrinters) =
    { inner with
        passed = fun name (d: TimeSpan) -> async { printfn "PASS %s (%.2f s)" name d.TotalSeconds }
        failed = fun name msg d -> async { printfn "FAIL %s (%.2f s)\n%s" name d.TotalSeconds msg }
        exn = fun name e d -> async { printfn "FAIL %s (%.2f s)\n%O" name d.TotalSeconds e }
        ignored = fun name msg -> async { printfn "SKIP %s: %s" name msg }
        summary = fun cfg s -> async {
            do! inner.summary cfg s
            let failed = s.failed.Length + s.errored.Length
            finalLine <-
                if s.ignored.IsEmpty then sprintf "%d passed, %d failed" s.passed.Length failed
                else sprintf "%d passed, %d failed, %d skipped" s.passed.Length failed s.ignored.Length } }

/// A shell starts a background job without job control (`./build.sh test &` inside a script or a subshell) with SIGINT
/// and SIGQUIT ignored, and an ignored signal stays ignored across exec: every `research` the tests start would ignore
/// Ctrl-C (.NET installs no handler over an inherited SIG_IGN), and the tests of its handling would fail for a reason
/// outside the code. So an ignored SIGINT is set back to the default here, before any child starts.
module private Signals =
    open System.Runtime.InteropServices

    [<DllImport("libc", SetLastError = true)>]
    extern int sigaction(int signum, nativeint act, nativeint oldact)

    [<DllImport("libc", SetLastError = true)>]
    extern nativeint signal(int signum, nativeint handler)

    let restoreIgnoredInterrupt () =
        if OperatingSystem.IsLinux() then
            // struct sigaction (glibc: 152 bytes on 64-bit), its first field the handler; SIGINT = 2, SIG_IGN = 1, SIG_DFL = 0.
            let old = Marshal.AllocHGlobal 256
            try
                if sigaction (2, 0n, old) = 0 && Marshal.ReadIntPtr old = 1n then signal (2, 0n) |> ignore
            finally
                Marshal.FreeHGlobal old

[<EntryPoint>]
let main argv =
    Signals.restoreIgnoredInterrupt ()
    // Before libtorch's first allocation, as the command line does (NativeAllocator says why).
    Research.Core.Memory.NativeAllocator.Configure() |> ignore
    let all =
        testList "research" [
            NativeTests.tests
            ArchitectureTests.tests
            ModelTests.tests
            GptTests.tests
            BenchGptTests.tests
            AllocatorTests.tests
            MiniLMTests.tests
            ScheduleTests.tests
            HuggingFaceScheduleTests.tests
            ForgettingMetricTests.tests
            OptimizerTests.tests
            ConfigTests.tests
            ResolvedConfigTests.tests
            TrainingTests.tests
            TrainStepTests.tests
            MemoryTests.tests
            MemoryFlatTests.tests
            ParameterGroupTests.tests
            ResumeTests.tests
            RunLifecycleTests.tests
            PreviousReleaseTests.tests
            StudyTests.tests
            RegularizerTests.tests
            FisherTests.tests
            SequenceFisherTests.tests
            HessianTests.tests
            ContractTests.tests
            MethodTests.tests
            BadInputTests.tests
            BadPluginsTests.tests
            PluginHostTests.tests
            ReadmeTests.tests
            DocsTests.tests
            TemplateTests.tests
            TensorBoardTests.tests
            SweepTests.tests
            SweepDependencyTests.tests
            FuzzTests.tests
            CliTests.tests
            TextTests.tests
            FineTuningTests.tests
            ResNetTests.tests
            ModelKindTests.tests
            ModelRegistryTests.tests
            OpenRolesTests.tests
            ProbeTests.tests
            ForgettingDecompositionTests.tests
            DataRegistryTests.tests
            BadKeysTests.tests
            BadFilesTests.tests
            FormatSourceTests.tests
            ChatFormatTests.tests
            ExportFortunesTests.tests
            ImageJpegTests.tests
            BadWeightsTests.tests
            BadStatusTests.tests
            ConventionTests.tests
            ModelMetricTests.tests
            ReplayContractTests.tests
            CallbackTests.tests
            StructureHookTests.tests
            StructureHookTests.resumeTests
            PredictorTests.tests
            LlamaTests.tests
            HfTokenizerTests.tests
            FormatFixtureTests.tests
            HfRunTests.tests
            VlmTests.tests
            LanguageProbesTests.tests
            VlmMemoryTests.tests
        ]
    let config = { defaultConfig with printer = printer defaultConfig.printer }
    // Plain output (no colours, no spinner) so logs and CI read cleanly and the last line is exact.
    let code = runTestsWithCLIArgs [ CLIArguments.Printer config.printer; CLIArguments.Colours 0; CLIArguments.No_Spinner ] argv all
    Console.Out.Flush()
    if finalLine <> "" then
        use stdout = Console.OpenStandardOutput()
        let bytes = Text.Encoding.UTF8.GetBytes("\n" + finalLine + "\n")
        stdout.Write(bytes, 0, bytes.Length)
    code
