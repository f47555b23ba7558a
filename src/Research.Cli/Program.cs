using System.CommandLine;
using Research.Core.Config;
using Research.Core.Plugins;
using Research.Core.Training;

namespace Research.Cli;

// Exit codes: 0 success; 1 a run failed while training (e.g. a plugin threw, the loss diverged), or an error this code did
// not foresee; 2 a user mistake (usage, config, plugin that cannot be loaded or found, missing data, a path that is not a
// regular file); 130 and 143 a run stopped by SIGINT or SIGTERM after writing a checkpoint (recorded as interrupted;
// --resume continues it). Every error prints one line per problem, never a stack trace unless --verbose is given; nothing
// ends as .NET's unhandled exception (134).
public static class Program
{
    /// <summary>Every command, its arguments and options, with the text <c>--help</c> shows.</summary>
    public static RootCommand Root()
    {
        var root = new RootCommand("research — full fine-tuning and catastrophic-forgetting studies on TorchSharp");
        root.Options.Add(new Option<bool>("--verbose") { Description = "Print the stack trace of an error", Recursive = true, Arity = ArgumentArity.Zero });
        foreach (var command in (Command[])[
                     Commands.TrainCommand(), Commands.StudyCommand(), Commands.EvalCommand(), Commands.DemoCommand(),
                     ModelsCommand.GenerateCommand(), ModelsCommand.ExportCommand(), ModelsCommand.ModelsGroup(),
                     Commands.PluginsGroup(), ConfigCommand.ConfigGroup(), SweepCommand.RunCommand(),
                     Cli.Group("plot", "Figures: schedules, sweeps, a study's matrix, metric curves",
                         Commands.PlotScheduleCommand(), SweepCommand.PlotCommand(), RunsCommand.PlotMatrixCommand(), RunsCommand.PlotCurvesCommand()),
                     RunsCommand.RunsGroup(), RunsCommand.MetricsCommand(), AnalyzeCommand.AnalyzeGroup(),
                     MemoryCommand.Definition(), BenchCommand.BenchGroup(), ExportFortunesCommand.Definition()])
            root.Subcommands.Add(command);
        return root;
    }

    /// <summary>The command line, in-process: the fuzz tests call this with thousands of inputs.</summary>
    public static int Main(string[] args)
    {
        // Before anything can fail: the way out for an error line when the console itself cannot be set up (ErrorLines).
        ErrorLines.Open();
        // Before libtorch's first allocation: see NativeAllocator for why and what was measured.
        Research.Core.Memory.NativeAllocator.Configure();
        if (Research.Core.Memory.NativeAllocator.Warning is { } allocatorWarning) ErrorLines.Write(allocatorWarning);
        var verbose = args.Contains("--verbose");
        // `research`, and `research help [COMMAND...]`, as `--help`.
        args = args switch
        {
            [] => ["--help"],
            ["help", .. var rest] => [.. rest, "--help"],
            _ => args,
        };
        try
        {
            var parsed = Root().Parse(args);
            if (Cli.Errors(parsed) is { Count: > 0 } errors)
            {
                foreach (var line in errors) ErrorLines.Write($"error: {line}");
                return 2;
            }
            // Exceptions reach the handlers below: each kind of failure has its own exit code and one line. SIGINT and
            // SIGTERM stay the trainer's (a checkpoint, then 130 or 143): the parser registers no handler of its own.
            return parsed.Invoke(new InvocationConfiguration
            {
                EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null, Output = Console.Out, Error = Console.Error,
            });
        }
        // Every line below goes through ErrorLines, which cannot throw: nothing thrown here escapes as an unhandled abort.
        catch (UsageException e) { ErrorLines.Write($"error: {e.Message}"); return 2; }
        catch (ConfigException e) { foreach (var err in e.Errors) ErrorLines.Write($"error: {err}"); return 2; }
        catch (PluginException e) { ErrorLines.Write($"error: {e.Message}"); return 2; }
        catch (PluginFailureException e) { ErrorLines.Write($"run failed: {e.Message}"); return Trace(e, 1); }
        catch (RunInterruptedException e) { ErrorLines.Write($"stopped: {e.Message}"); return Trace(e, e.ExitCode); }
        catch (NonFiniteGradientException e) { ErrorLines.Write($"run failed: {e.Message}"); return Trace(e, 1); }
        catch (NonFiniteParametersException e) { ErrorLines.Write($"run failed: {e.Message}"); return Trace(e, 1); }
        catch (Research.Core.Tracking.RunStoreException e) { ErrorLines.Write($"error: {e.Message}"); return Trace(e, 1); }
        catch (Research.Core.Tracking.RunLockedException e) { ErrorLines.Write($"error: {e.Message}"); return Trace(e, 2); }
        catch (Research.Core.Files.NotAFileException e) { ErrorLines.Write($"error: {e.Message}"); return Trace(e, 2); }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or InvalidDataException
                                      or Research.Core.Tracking.RunFolderNotWritableException)
        {
            ErrorLines.Write($"error: {e.Message}");
            return Trace(e, 2);
        }
        catch (Exception e)
        {
            // Not a mistake the code recognises: still one line, with what was thrown; the trace on request. Memory that ran
            // out under an address-space limit (ulimit -v) says so. One line: a native (libtorch) message carries its C++
            // frames on the lines after the first.
            string line;
            try
            {
                line = ErrorLines.OutOfMemory(e)
                       ?? $"error: {e.GetType().Name}: {e.Message.Split('\n', 2)[0].TrimEnd()}{(verbose ? "" : " (--verbose prints the stack trace)")}";
            }
            catch (Exception) { line = "error: out of memory"; }   // not even the line could be made
            ErrorLines.Write(line);
            return Trace(e, 1);
        }

        int Trace(Exception e, int code)
        {
            if (!verbose) return code;
            try { ErrorLines.Write(e.ToString()); }
            catch (Exception) { }   // the trace could not be made; the line is out
            return code;
        }
    }
}
