using System.Globalization;
using CsvHelper;

namespace Research.Core.Tracking;

/// <summary>
/// CSV as every command and sweep summary writes it: RFC 4180 through CsvHelper (a field holding a comma, a quote or a
/// line break is quoted, its quotes doubled; a run or arm name may hold any of them), "\n" line ends, invariant culture.
/// </summary>
public static class Csv
{
    static readonly CsvWriterOptions Options = new() { NewLine = "\n", FormatProvider = CultureInfo.InvariantCulture };

    /// <summary>Writes a header and rows of fields to <paramref name="writer"/>, leaving it open.</summary>
    public static void Write(TextWriter writer, IEnumerable<string> header, IEnumerable<IEnumerable<string>> rows)
    {
        using var csv = CsvWriter.Create(writer, Options, leaveOpen: true);
        csv.WriteHeader([.. header]);
        foreach (var row in rows) csv.WriteRecord([.. row]);
    }

    /// <summary>The same as text.</summary>
    public static string ToText(IEnumerable<string> header, IEnumerable<IEnumerable<string>> rows)
    {
        using var writer = new StringWriter(CultureInfo.InvariantCulture);
        Write(writer, header, rows);
        return writer.ToString();
    }

    /// <summary>A number as the CSVs write it: round-trip, invariant; empty for none.</summary>
    public static string Number(double? value) => value is { } v ? v.ToString("R", CultureInfo.InvariantCulture) : "";
}
