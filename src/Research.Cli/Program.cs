using Research.Core.Config;
using Research.Core.Plugins;
using Research.Core.Training;

namespace Research.Cli;

// Exit codes: 0 success; 1 a run failed while training (e.g. a plugin threw, the loss diverged), or an error this code did
// not foresee; 2 a user mistake (usage, config, plugin that cannot be loaded or found, missing data); 130 and 143 a run
// stopped by SIGINT or SIGTERM after writing a checkpoint (recorded as interrupted; --resume continues it). Every error prints
// one line per problem, never a stack trace unless --verbose is given; nothing ends as .NET's unhandled exception (134).
public static class Program
{
    /// <summary>The command line, in-process: the fuzz tests call this with thousands of inputs.</summary>
    public static int Main(string[] args)
    {
        // Before libtorch's first allocation: see NativeAllocator for why and what was measured.
        Research.Core.Memory.NativeAllocator.Configure();
        var verbose = args.Contains("--verbose");
        args = args.Where(a => a != "--verbose").ToArray();
        try
        {
            return args switch
            {
                [] or ["-h" or "--help" or "help", ..] => Usage(0),
                ["train", .. var rest] => Commands.Train(rest),
                ["demo", .. var rest] => Commands.Demo(rest),
                ["eval", .. var rest] => Commands.Eval(rest),
                ["study", .. var rest] => Commands.Study(rest),
                ["plugins", "list", .. var rest] => Commands.PluginsList(rest),
                ["config", "schema", .. var rest] => ConfigCommand.Schema(rest),
                ["plot", "schedule", .. var rest] => Commands.PlotSchedule(rest),
                ["sweep", .. var rest] => SweepCommand.Run(rest),
                ["plot", "sweep", .. var rest] => SweepCommand.Plot(rest),
                ["plot", "matrix", .. var rest] => RunsCommand.PlotMatrix(rest),
                ["plot", "curves", .. var rest] => RunsCommand.PlotCurves(rest),
                ["memory", .. var rest] => MemoryCommand.Run(rest),
                ["bench", .. var rest] => BenchCommand.Run(rest),
                ["models", .. var rest] => ModelsCommand.Models(rest),
                ["export", .. var rest] => ModelsCommand.Export(rest),
                ["generate", .. var rest] => ModelsCommand.Generate(rest),
                ["runs", .. var rest] => RunsCommand.Run(rest),
                ["metrics", .. var rest] => RunsCommand.Metrics(rest),
                ["analyze", .. var rest] => AnalyzeCommand.Run(rest),
                _ => throw new UsageException($"unknown command '{string.Join(' ', args.Take(2))}'"),
            };
        }
        catch (UsageException e) { Console.Error.WriteLine($"error: {e.Message}"); Usage(2, Console.Error); return 2; }
        catch (ConfigException e) { foreach (var err in e.Errors) Console.Error.WriteLine($"error: {err}"); return 2; }
        catch (PluginException e) { Console.Error.WriteLine($"error: {e.Message}"); return 2; }
        catch (PluginFailureException e) { Console.Error.WriteLine($"run failed: {e.Message}"); return Trace(e, 1); }
        catch (RunInterruptedException e) { Console.Error.WriteLine($"stopped: {e.Message}"); return Trace(e, e.ExitCode); }
        catch (NonFiniteGradientException e) { Console.Error.WriteLine($"run failed: {e.Message}"); return Trace(e, 1); }
        catch (Research.Core.Tracking.RunStoreException e) { Console.Error.WriteLine($"error: {e.Message}"); return Trace(e, 1); }
        catch (Research.Core.Tracking.RunLockedException e) { Console.Error.WriteLine($"error: {e.Message}"); return Trace(e, 2); }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or InvalidDataException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return Trace(e, 2);
        }
        catch (Exception e)
        {
            // Not a mistake the code recognises: still one line, with what was thrown; the trace on request.
            // One line: a native (libtorch) message carries its C++ frames on the lines after the first.
            var message = e.Message.Split('\n', 2)[0].TrimEnd();
            Console.Error.WriteLine($"error: {e.GetType().Name}: {message}{(verbose ? "" : " (--verbose prints the stack trace)")}");
            return Trace(e, 1);
        }

        int Trace(Exception e, int code)
        {
            if (verbose) Console.Error.WriteLine(e);
            return code;
        }
    }

    static int Usage(int code, TextWriter? to = null)
    {
        (to ?? Console.Out).WriteLine("""
            research — full fine-tuning and catastrophic-forgetting studies on TorchSharp
            (any command: --verbose prints the stack trace of an error)

              research train CONFIG [--set section.key=value]... [--plugins DIR]... [--resume RUN_DIR] [--dry-run]
              research eval CHECKPOINT [--config CONFIG] [--set section.key=value]...
              research generate RUN_DIR [--prompt TEXT] [--max-tokens N] [--greedy | --temperature T --top-k K] [--seed S]
                                [--samples N] [--checkpoint final|best|NAME]
              research export RUN_DIR -o FILE.safetensors [--checkpoint final|best|NAME]
              research models list [--dir DIR] | models fetch NAME... [--dir DIR]
              research study CONFIG [--set section.key=value]... [--plugins DIR]... [--resume RUN_DIR] [--dry-run]
              research demo [--plugins DIR]... [--set section.key=value]... [--no-study]
              research plugins list [--plugins DIR]...
              research config schema [SECTION | PLUGIN] [--plugins DIR]... [--json]
              research plot schedule NAME... [--steps N] [--warmup W] [--lr PEAK] [--set NAME.key=value]...
                                            [-o FILE.png] [--csv]
              research sweep SCRIPT.fsx [--executor local|slurm] [--parallel N] [--retry-failed] [--output DIR]
              research plot sweep SWEEP_DIR [--metric NAME] [--axis KEY] [--log-x]
              research plot matrix STUDY_RUN_DIR [--split test|val] [-o FILE.png]
              research plot curves RUN_DIR... [--key train_loss] [-o FILE.png]
              research memory --params P [--precision fp32|mixed-bf16|mixed-fp16|pure-bf16] [--optimizer adamw|adam|sgd-momentum|sgd]
                              [--layers L --hidden H --heads A --seq S --batch B [--recompute]]
              research memory --config CONFIG [--set section.key=value]...
              research bench step [--repetitions N] [--steps S] [--threads T] [--workloads gpt,gpt-8k,transformer,mlp,cnn,adamw]
              research bench fisher [--samples N] [--threads T]
              research bench hessian [--samples N] [--threads T] [--repetitions R] [--k K] [--train-steps S] [--seed S]
              research runs list [DIR] | runs show RUN_DIR | runs compare [DIR] | runs export [DIR] [-o FILE.csv]
              research metrics RUN_DIR... [--set metrics=[{name="…", …}]]... [--plugins DIR]... [--save]
              research analyze hessian STUDY_RUN_DIR [--set study.hessian.KEY=VALUE]... [--plugins DIR]...
            """);
        return code;
    }
}
