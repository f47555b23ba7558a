/// Shared helpers: paths of the build, running the `research` command as a real process, temp folders.
module Research.Tests.TestSupport

open System
open System.Diagnostics
open System.IO
open System.Threading
open System.Threading.Tasks
open Expecto

/// The repository root: the first folder above the test assembly that holds Research.sln.
let repoRoot =
    let rec up (d: DirectoryInfo) =
        if isNull d then failwith "Research.sln not found above the test assembly"
        elif File.Exists(Path.Combine(d.FullName, "Research.sln")) then d.FullName
        else up d.Parent
    up (DirectoryInfo AppContext.BaseDirectory)

/// artifacts/bin: the `research` command, the tests and libtorch share it.
let binDir = AppContext.BaseDirectory

/// Output folder of a plugin fixture project (tests/Fixtures/NAME).
let fixtureDir name = Path.Combine(repoRoot, "artifacts", "fixtures", name)

/// A fresh folder under the system temp folder, unique per call.
let tempDir (prefix: string) =
    let d = Path.Combine(Path.GetTempPath(), "research-tests", sprintf "%s-%s" prefix (Guid.NewGuid().ToString("N").Substring(0, 8)))
    Directory.CreateDirectory d |> ignore
    d

type ProcessResult = { ExitCode: int; Out: string; Err: string }

/// Runs a program to completion with extra environment variables, capturing both streams.
let runProcessWith (environment: (string * string) list) (workDir: string) (file: string) (args: string list) =
    let psi = ProcessStartInfo(file, WorkingDirectory = workDir, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    for a in args do psi.ArgumentList.Add a
    psi.Environment["TERM"] <- "dumb"
    for name, value in environment do psi.Environment[name] <- value
    use p = Process.Start psi
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    p.WaitForExit()
    { ExitCode = p.ExitCode; Out = out.Result; Err = err.Result }

/// Runs a program to completion, capturing both streams.
let runProcess workDir file args = runProcessWith [] workDir file args

/// Runs `research ARGS` (the built command in artifacts/bin) in a working folder.
let research (workDir: string) (args: string list) =
    runProcess workDir "dotnet" (Path.Combine(binDir, "research.dll") :: args)

/// Runs `research ARGS` with crash injection: the process sends itself SIGKILL after its n-th micro-batch (exit 137).
let researchKilledAfter (n: int) (workDir: string) (args: string list) =
    runProcessWith [ "RESEARCH_KILL_AFTER_MICROBATCHES", string n ] workDir "dotnet" (Path.Combine(binDir, "research.dll") :: args)

/// The folder the build writes the contract's and the templates' NuGet packages to.
let packagesDir = Path.Combine(repoRoot, "artifacts", "packages")

/// Writes a NuGet.config into `dir` for projects built there against the packed contract: artifacts/packages as a
/// source beside the machine's own, packages restored into `dir/packages`, and the user's global packages folder as a
/// read-only fallback (TorchSharp, FSharp.Core: no download). Restoring into the test's own folder means a contract
/// rebuilt at the same version is not served from an earlier restore.
let packageConfig (dir: string) =
    let globalFolder =
        match Environment.GetEnvironmentVariable "NUGET_PACKAGES" with
        | null | "" -> Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".nuget", "packages")
        | folder -> folder
    File.WriteAllText(Path.Combine(dir, "NuGet.config"), $"""<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <config><add key="globalPackagesFolder" value="{Path.Combine(dir, "packages")}" /></config>
  <packageSources><add key="research-artifacts" value="{packagesDir}" /></packageSources>
  <fallbackPackageFolders><add key="user-global" value="{globalFolder}" /></fallbackPackageFolders>
</configuration>
""")

/// A small, fast run config on synthetic data (Gaussian clusters), with extra TOML appended.
let syntheticConfig (dir: string) (extra: string) =
    let path = Path.Combine(dir, "run.toml")
    File.WriteAllText(path, sprintf """
[run]
name = "t"
seed = 3
threads = 1
output_dir = "%s"

[data]
dataset = "synthetic"
synthetic_samples = 512
synthetic_features = 8
synthetic_classes = 3
batch_size = 64

[model]
hidden = [16]

[train]
epochs = 2
%s
""" (Path.Combine(dir, "runs").Replace("\\", "/")) extra)
    path

/// A small GPT (d 64, 2 layers, 32-byte windows) on real English fortunes, byte tokens, 480 training windows, one epoch
/// with a cosine schedule; runs under DIR/runs; `extra` continues the [train] table or adds sections.
let fortunesGptConfig (dir: string) (extra: string) =
    let path = Path.Combine(dir, "gpt.toml")
    File.WriteAllText(path, sprintf """
[run]
name = "gpt"
seed = 3
output_dir = "%s"
[data]
dataset = "fortunes"
task = "causal-lm"
tokenizer = "bytes"
context = 32
validation_fraction = 0.01
test_fraction = 0.01
train_limit = 480
batch_size = 16
eval_batch_size = 256
[model]
kind = "gpt"
width = 64
layers = 2
heads = 2
[optimizer]
lr = 3e-3
[schedule]
name = "cosine"
warmup_ratio = 0.1
[train]
epochs = 1
log_every = 5
%s
""" (Path.Combine(dir, "runs").Replace("\\", "/")) extra)
    path

/// A small study on synthetic data: 2 permuted tasks of one epoch, runs under DIR/runs; `extra` adds sections (it
/// must not repeat [run], [data], [model], [train] or [study]).
let syntheticStudy (dir: string) (name: string) (extra: string) =
    let path = Path.Combine(dir, name + ".toml")
    File.WriteAllText(path, sprintf """
[run]
name = "%s"
seed = 4
threads = 1
output_dir = "%s"
[data]
dataset = "synthetic"
synthetic_samples = 400
synthetic_features = 8
synthetic_classes = 3
batch_size = 32
[model]
hidden = [16]
[train]
epochs = 1
log_every = 1
[study]
benchmark = "permuted"
tasks = 2
%s
""" name (Path.Combine(dir, "runs").Replace("\\", "/")) extra)
    path

/// The single run directory a test run created under DIR/runs.
let onlyRunDir (dir: string) =
    match Directory.GetDirectories(Path.Combine(dir, "runs")) with
    | [| d |] -> d
    | ds -> failtestf "expected one run directory, found %d" ds.Length

/// FsCheck settings for properties: fixed test count, replayable.
let propConfig = { FsCheckConfig.defaultConfig with maxTest = 100 }

// ---------------------------------------------------------------------------------------------------------------------
// The command line in this process.

let private currentOut = AsyncLocal<TextWriter>()
let private currentErr = AsyncLocal<TextWriter>()

/// Console output of an in-process call goes to the writers of its own flow (an AsyncLocal); everything else (the test
/// runner's lines, tests running beside) to the original writer.
type private Router(fallback: TextWriter, current: AsyncLocal<TextWriter>) =
    inherit TextWriter()
    member _.Target: TextWriter = match current.Value with null -> fallback | w -> w
    override _.Encoding = fallback.Encoding
    override this.Write(c: char) = this.Target.Write c
    override this.Write(s: string) = this.Target.Write s
    override this.Write(chars: char[], index: int, count: int) = this.Target.Write(chars, index, count)
    override this.WriteLine() = this.Target.WriteLine()
    override this.WriteLine(s: string) = this.Target.WriteLine s
    override this.Flush() = this.Target.Flush()

let private router =
    lazy (
        Console.SetOut(new Router(Console.Out, currentOut))
        Console.SetError(new Router(Console.Error, currentErr))
        // A run's progress display (Spectre.Console) writes to a console of its own: plain, and through the router too.
        Spectre.Console.AnsiConsole.Console <-
            Spectre.Console.AnsiConsole.Create(
                Spectre.Console.AnsiConsoleSettings(
                    Ansi = Spectre.Console.AnsiSupport.No,
                    Interactive = Spectre.Console.InteractionSupport.No,
                    Out = Spectre.Console.AnsiConsoleOutput(Console.Out))))

/// `research ARGS` in this process (Program.Main), its output captured; a call that has not returned after a minute is
/// reported as hung (exit −1). Calls may run beside each other and beside other tests.
let researchInProcess (args: string list) : ProcessResult =
    router.Force()
    let out, err = new StringWriter(), new StringWriter()
    let work =
        Task.Run<int>(Func<int>(fun () ->
            currentOut.Value <- out
            currentErr.Value <- err
            try
                try Research.Cli.Program.Main(Array.ofList args)
                with e ->
                    // Main catches everything; what escapes is what .NET would print and abort with (134).
                    err.WriteLine(sprintf "Unhandled exception. %O" e)
                    134
            finally
                currentOut.Value <- null
                currentErr.Value <- null))
    if work.Wait(TimeSpan.FromSeconds 60.0) then { ExitCode = work.Result; Out = string out; Err = string err }
    else { ExitCode = -1; Out = string out; Err = string err + "\n(hung: no exit within 60 s)" }
