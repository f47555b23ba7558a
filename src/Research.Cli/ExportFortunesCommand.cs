using System.CommandLine;
using Research.Core.Config;
using Research.Core.Data;

namespace Research.Cli;

/// <summary>
/// <c>research export-fortunes OUT</c>: a fortune corpus's split, as a run of the config would make it (its [data] keys and
/// <c>run.seed</c>), written as JSONL and Parquet (<see cref="FormatExport"/>) for the <c>jsonl</c> and <c>parquet</c>
/// sources; read back they give the built-in reader's tensors bitwise (docs/data-formats.md). The split is computed by
/// the reader's own code because it is seeded: an outside writer could not reproduce it.
/// </summary>
static class ExportFortunesCommand
{
    public static Command Definition() => Cli.Command("export-fortunes",
        "Write a fortune corpus's train, validation and test split (the config's [data] and run.seed) as JSONL and Parquet files with text and label columns", Run,
        Cli.Argument("OUT", "The folder: OUT/train.jsonl, validation.jsonl, test.jsonl and the same .parquet"),
        Cli.Value("--config", "FILE", "A config whose [data] reads a fortune corpus; default: dataset = \"fortunes\" with every other key at its default"),
        Cli.Value("--format", "jsonl|parquet|both", "Which files to write", "both"),
        Cli.Set());

    static int Run(Parsed a)
    {
        var format = a.One("--format")!;
        if (format is not ("jsonl" or "parquet" or "both")) throw new UsageException($"--format \"{format}\" is not jsonl, parquet or both");
        var config = a.One("--config") is { } path
            ? ConfigLoader.Load(path, a.All("--set"))
            : ConfigLoader.Parse("[data]\ndataset = \"fortunes\"\n", "(the defaults)", a.All("--set"));
        if (DataSources.Get(config.Data.Dataset) is not FortuneSource source)
            throw new UsageException($"data.dataset \"{config.Data.Dataset}\" is not a fortune corpus (export-fortunes writes the fortune sources' splits)");
        var options = (FortuneOptions)config.Data.Options;
        var output = a.Positional[0];
        var written = new List<string>();
        if (format != "parquet")
        {
            var (train, validation, test) = FormatExport.FortunesJsonl(source, config.Data.Keys, options, config.Run.Seed, output);
            written.AddRange([train, validation, test]);
        }
        if (format != "jsonl")
        {
            var (train, validation, test) = FormatExport.FortunesParquet(source, config.Data.Keys, options, config.Run.Seed, output);
            written.AddRange([train, validation, test]);
        }
        foreach (var w in written) Console.WriteLine(w);
        return 0;
    }
}
