namespace Research.Cli;

/// <summary>
/// <c>research sweep SCRIPT.fsx</c>: runs a scripted sweep (experiments/Research.Sweeps) through the local or the Slurm
/// executor; <c>research plot sweep DIR</c>: its summaries again, or another metric against another axis.
/// </summary>
static class SweepCommand
{
    public static int Run(string[] argv)
    {
        var a = new Args(argv, ["--executor", "--parallel", "--output", "-o"], ["--retry-failed"]);
        if (a.Positional.Count != 1) throw new UsageException("sweep needs exactly one SCRIPT.fsx");
        int? parallel = a.One("--parallel") is null ? null : checked((int)a.Long("--parallel", 0));
        return Research.Sweeps.Driver.sweep(a.Positional[0], a.One("--executor") ?? "local", parallel, a.Flag("--retry-failed"),
            a.One("--output") ?? a.One("-o") ?? "");
    }

    public static int Plot(string[] argv)
    {
        var a = new Args(argv, ["--metric", "--axis"], ["--log-x"]);
        if (a.Positional.Count != 1) throw new UsageException("plot sweep needs one SWEEP_DIR");
        if (a.One("--axis") != null && a.One("--metric") == null) throw new UsageException("--axis needs --metric");
        return Research.Sweeps.Driver.summarizeFolder(a.Positional[0], a.One("--metric") ?? "", a.One("--axis")!, a.Flag("--log-x"));
    }
}
