using System.Globalization;
using System.Text.Json;
using CsvHelper;
using Research.Core.Files;

namespace Research.Core.Data;

/// <summary>One record of a text table: the line it starts on (1-based) and the values of the columns asked for.</summary>
public sealed record TextRecord(string File, int Line, IReadOnlyDictionary<string, string> Values)
{
    /// <summary>"FILE, line N": how every message about this record begins.</summary>
    public string Where => TextTables.Where(File, Line);

    public string this[string column] => Values[column];
}

/// <summary>
/// Tables of text read from JSONL (one JSON object a line, System.Text.Json) or CSV (RFC 4180 with a header row,
/// CsvHelper), keeping only the columns asked for. Every refusal is an <see cref="InvalidDataException"/> of one line
/// naming the file and the line: a line that is not a JSON object, a column that is missing, a value of the wrong kind,
/// a CSV record with more or fewer fields than its header, malformed quoting. The file must be UTF-8
/// (<see cref="InputFile.ReadUtf8"/>).
/// </summary>
public static class TextTables
{
    /// <summary>The largest table file read (the whole file is held as text).</summary>
    public const long MaxBytes = 1L << 30;

    /// <summary>"FILE, line N".</summary>
    public static string Where(string file, int line) => $"{file}, line {line}";

    /// <summary>
    /// The records of a JSONL file: each non-blank line a JSON object holding every column. A text column's value must be
    /// a JSON string; a column in <paramref name="numbersToo"/> (a label) may be a string or a number (kept as written).
    /// </summary>
    public static IReadOnlyList<TextRecord> ReadJsonl(string path, IReadOnlyList<string> columns, IReadOnlySet<string> numbersToo)
    {
        var text = InputFile.ReadUtf8(path, MaxBytes, "a JSONL file");
        var records = new List<TextRecord>();
        var line = 0;
        foreach (var raw in text.Split('\n'))
        {
            line++;
            var content = raw.TrimEnd('\r');
            if (string.IsNullOrWhiteSpace(content)) continue;
            JsonDocument doc;
            try { doc = JsonDocument.Parse(content); }
            catch (JsonException e) { throw new InvalidDataException($"{Where(path, line)}: not JSON ({FirstLine(e.Message)})"); }
            using (doc)
            {
                if (doc.RootElement.ValueKind != JsonValueKind.Object)
                    throw new InvalidDataException($"{Where(path, line)}: a JSON {Kind(doc.RootElement.ValueKind)}, not an object (each line of a JSONL file is one object)");
                var values = new Dictionary<string, string>(StringComparer.Ordinal);
                foreach (var column in columns)
                {
                    if (!doc.RootElement.TryGetProperty(column, out var v))
                        throw new InvalidDataException($"{Where(path, line)}: no field \"{column}\" (it has: {string.Join(", ", doc.RootElement.EnumerateObject().Select(p => p.Name))})");
                    values[column] = v.ValueKind switch
                    {
                        JsonValueKind.String => v.GetString()!,
                        JsonValueKind.Number when numbersToo.Contains(column) => v.GetRawText(),
                        _ => throw new InvalidDataException($"{Where(path, line)}: field \"{column}\" is a JSON {Kind(v.ValueKind)}, not a string{(numbersToo.Contains(column) ? " or a number" : "")}"),
                    };
                }
                records.Add(new TextRecord(path, line, values));
            }
        }
        return records;
    }

    /// <summary>
    /// The records of a CSV file with a header row (RFC 4180: fields with commas, quotes or line breaks quoted); every
    /// column must be in the header and every record must have as many fields as the header. Values are kept as written.
    /// </summary>
    public static IReadOnlyList<TextRecord> ReadCsv(string path, IReadOnlyList<string> columns)
    {
        var text = InputFile.ReadUtf8(path, MaxBytes, "a CSV file");
        var options = new CsvReaderOptions
        {
            HasHeader = true, TrackLineNumbers = true, MalformedData = CsvMalformedDataHandling.Throw,
            FieldCountMismatch = CsvFieldCountHandling.Allow, FormatProvider = CultureInfo.InvariantCulture,
        };
        var records = new List<TextRecord>();
        try
        {
            using var csv = CsvReader.FromText(text, options);
            var header = csv.Headers.ToList();
            var index = new int[columns.Count];
            for (int c = 0; c < columns.Count; c++)
            {
                index[c] = header.IndexOf(columns[c]);
                if (index[c] < 0)
                    throw new InvalidDataException($"{Where(path, 1)} (the header): no column \"{columns[c]}\" (it has: {string.Join(", ", header)})");
            }
            while (csv.Read())
            {
                var line = (int)csv.LineNumber;
                if (csv.FieldCount != header.Count)
                    throw new InvalidDataException($"{Where(path, line)}: {csv.FieldCount} field(s), the header has {header.Count}");
                var values = new Dictionary<string, string>(StringComparer.Ordinal);
                for (int c = 0; c < columns.Count; c++) values[columns[c]] = csv.GetString(index[c]);
                records.Add(new TextRecord(path, line, values));
            }
        }
        catch (CsvFormatException e)
        {
            throw new InvalidDataException($"{Where(path, (int)e.LineNumber)}: malformed CSV ({FirstLine(e.Message)})");
        }
        return records;
    }

    static string FirstLine(string message) => message.Split('\n', 2)[0].TrimEnd();

    static string Kind(JsonValueKind kind) => kind switch
    {
        JsonValueKind.Object => "object", JsonValueKind.Array => "array", JsonValueKind.String => "string",
        JsonValueKind.Number => "number", JsonValueKind.True or JsonValueKind.False => "boolean", _ => "null",
    };
}
