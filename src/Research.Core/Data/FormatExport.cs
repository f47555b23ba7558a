using System.Text;
using System.Text.Json;
using Parquet;
using Parquet.Schema;
using Research.Abstractions;
using Research.Core.Text;

namespace Research.Core.Data;

/// <summary>
/// The built-in datasets written out in the file formats the file sources read, so that reading them back can be checked
/// against the built-in readers (<c>scripts/export-formats.sh</c> calls these through <c>research</c>'s tests' runner;
/// a test compares the tensors bitwise).
/// </summary>
public static class FormatExport
{
    /// <summary>
    /// A fortune corpus's split for this seed (<see cref="FortuneSource.Split"/>) as <c>train.jsonl</c>,
    /// <c>validation.jsonl</c> and <c>test.jsonl</c> in <paramref name="directory"/>: one object a line with <c>text</c>
    /// and <c>label</c> (the topic), in the split's order. Returns the three paths.
    /// </summary>
    public static (string Train, string Validation, string Test) FortunesJsonl(FortuneSource source, DataKeys keys, FortuneOptions options, long seed, string directory)
    {
        Directory.CreateDirectory(directory);
        var split = source.Split(keys, options, seed);
        string Write(string name, IReadOnlyList<TextEntry> entries)
        {
            var path = Path.Combine(directory, name);
            var text = new StringBuilder();
            foreach (var e in entries) text.Append(JsonSerializer.Serialize(new Dictionary<string, string> { ["text"] = e.Text, ["label"] = e.Topic })).Append('\n');
            File.WriteAllText(path, text.ToString(), new UTF8Encoding(false));
            return path;
        }
        return (Write("train.jsonl", split.Train), Write("validation.jsonl", split.Validation), Write("test.jsonl", split.Test));
    }

    /// <summary>The same split as <see cref="FortunesJsonl"/> as <c>train.parquet</c>, <c>validation.parquet</c> and
    /// <c>test.parquet</c>: string columns <c>text</c> and <c>label</c>, one row group.</summary>
    public static (string Train, string Validation, string Test) FortunesParquet(FortuneSource source, DataKeys keys, FortuneOptions options, long seed, string directory)
    {
        Directory.CreateDirectory(directory);
        var split = source.Split(keys, options, seed);
        string Write(string name, IReadOnlyList<TextEntry> entries)
        {
            var path = Path.Combine(directory, name);
            WriteParquet(path, [("text", entries.Select(e => e.Text).ToList()), ("label", entries.Select(e => e.Topic).ToList())]);
            return path;
        }
        return (Write("train.parquet", split.Train), Write("validation.parquet", split.Validation), Write("test.parquet", split.Test));
    }

    /// <summary>String columns of equal length as a Parquet file of one row group.</summary>
    public static void WriteParquet(string path, IReadOnlyList<(string Name, IReadOnlyList<string> Values)> columns) =>
        WriteParquetAsync(path, columns).GetAwaiter().GetResult();

    static async Task WriteParquetAsync(string path, IReadOnlyList<(string Name, IReadOnlyList<string> Values)> columns)
    {
        var fields = columns.Select(c => new DataField<string>(c.Name)).ToList();
        await using var stream = File.Create(path);
        await using var writer = await ParquetWriter.CreateAsync(new ParquetSchema(fields), stream);
        using var group = writer.CreateRowGroup();
        for (int c = 0; c < columns.Count; c++)
            await group.WriteAsync(fields[c], columns[c].Values.ToList());
    }
}
