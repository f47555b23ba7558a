using System.CommandLine;

namespace Research.Cli;

/// <summary>
/// <c>research sweep SCRIPT.fsx</c>: runs a scripted sweep (src/Research.Sweeps) through the local or the Slurm
/// executor; <c>research plot sweep DIR</c>: its summaries again, or another metric against another axis.
/// </summary>
static class SweepCommand
{
    public static Command RunCommand() => Cli.Command("sweep",
        "Run a scripted sweep: each trial a run of its own; finished trials are kept, so running it again resumes it", Run,
        Cli.Argument("SCRIPT", "The sweep script (.fsx) that declares its arms, seeds and summaries"),
        Cli.Value("--executor", "local|slurm", "Where trials run: this machine, or Slurm jobs (sbatch)", "local"),
        Cli.Value("--parallel", "N", "Trials at a time; default: the script's own choice"),
        Cli.Flag("--retry-failed", "Run the trials that failed before again (they are kept otherwise)"),
        Cli.Value("--output", "DIR", "The sweep's folder; default: the script's own", aliases: ["-o"]),
        Cli.Flag("--dry-run", "Check every trial's config and plugin options and list the trials; run and write nothing"));

    static int Run(Parsed a)
    {
        int? parallel = a.One("--parallel") is null ? null : a.Int("--parallel", int.MinValue, int.MaxValue);
        return Research.Sweeps.Driver.sweep(a.Positional[0], a.One("--executor")!, parallel, a.Flag("--retry-failed"), a.One("--output") ?? "", a.Flag("--dry-run"));
    }

    public static Command PlotCommand() => Cli.Command("sweep",
        "A finished sweep's summaries again, or one metric against one axis (a figure per metric)", Plot,
        Cli.Argument("SWEEP_DIR", "The sweep's folder (it holds sweep.json)"),
        Cli.Value("--metric", "NAME", "Plot this metric only; default: every summarized metric"),
        Cli.Value("--axis", "KEY", "The config key on the x axis (needs --metric)"),
        Cli.Flag("--log-x", "A logarithmic x axis"));

    static int Plot(Parsed a)
    {
        if (a.One("--axis") != null && a.One("--metric") == null) throw new UsageException("--axis needs --metric");
        return Research.Sweeps.Driver.summarizeFolder(a.Positional[0], a.One("--metric") ?? "", a.One("--axis")!, a.Flag("--log-x"));
    }
}
