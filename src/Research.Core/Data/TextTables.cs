using System.Globalization;
using System.Text.Json;
using CsvHelper;
using Parquet;
using Parquet.Schema;
using Parquet.Serialization;
using Research.Core.Files;

namespace Research.Core.Data;

/// <summary>One record of a text table: the line it starts on (1-based) and the values of the columns asked for.</summary>
public sealed record TextRecord(string File, int Line, IReadOnlyDictionary<string, string> Values)
{
    /// <summary>What <see cref="Line"/> counts: a text file's lines, or a Parquet file's rows ("row").</summary>
    public string Unit { get; init; } = "line";

    /// <summary>"FILE, line N" (or "FILE, row N"): how every message about this record begins.</summary>
    public string Where => $"{File}, {Unit} {Line}";

    public string this[string column] => Values[column];

    /// <summary>The token-id columns asked for (a Parquet list of integers, a JSON array of integers), each a row's ids
    /// as written; empty when none was asked for.</summary>
    public IReadOnlyDictionary<string, long[]> Ids { get; init; } = NoIds;

    static readonly IReadOnlyDictionary<string, long[]> NoIds = new Dictionary<string, long[]>();
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
    /// a JSON string; a column in <paramref name="numbersToo"/> (a label) may be a string or a number (kept as written); a
    /// column in <paramref name="json"/> (a chat's <c>messages</c>) may be any JSON value, kept as its JSON text for the
    /// caller to read. A column in <paramref name="ids"/> (pre-tokenized rows) must be an array of integers, kept in
    /// <see cref="TextRecord.Ids"/>.
    /// </summary>
    public static IReadOnlyList<TextRecord> ReadJsonl(string path, IReadOnlyList<string> columns, IReadOnlySet<string> numbersToo, IReadOnlySet<string>? json = null, IReadOnlySet<string>? ids = null)
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
                var tokenIds = new Dictionary<string, long[]>(StringComparer.Ordinal);
                foreach (var column in columns)
                {
                    if (!doc.RootElement.TryGetProperty(column, out var v))
                        throw new InvalidDataException($"{Where(path, line)}: no field \"{column}\" (it has: {string.Join(", ", doc.RootElement.EnumerateObject().Select(p => p.Name))})");
                    if (ids?.Contains(column) == true)
                    {
                        tokenIds[column] = JsonIds(v, column, Where(path, line));
                        continue;
                    }
                    values[column] = v.ValueKind switch
                    {
                        _ when json?.Contains(column) == true => v.GetRawText(),
                        JsonValueKind.String => v.GetString()!,
                        JsonValueKind.Number when numbersToo.Contains(column) => v.GetRawText(),
                        _ => throw new InvalidDataException($"{Where(path, line)}: field \"{column}\" is a JSON {Kind(v.ValueKind)}, not a string{(numbersToo.Contains(column) ? " or a number" : "")}"),
                    };
                }
                records.Add(new TextRecord(path, line, values) { Ids = tokenIds });
            }
        }
        return records;
    }

    /// <summary>A JSON array of integers (token ids), refused otherwise naming the line.</summary>
    static long[] JsonIds(JsonElement v, string column, string where)
    {
        if (v.ValueKind != JsonValueKind.Array)
            throw new InvalidDataException($"{where}: field \"{column}\" is a JSON {Kind(v.ValueKind)}, not an array of token ids");
        var result = new long[v.GetArrayLength()];
        var i = 0;
        foreach (var e in v.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt64(out result[i]))
                throw new InvalidDataException($"{where}: field \"{column}\"[{i}] is {(e.ValueKind == JsonValueKind.Number ? e.GetRawText() : "a JSON " + Kind(e.ValueKind))}, not an integer token id");
            i++;
        }
        return result;
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
            // The comma always: CsvHelper detects the separator from the first lines when none is set, and takes a tab
            // (or ; or |) inside an unquoted field of a one-column file for one (pandas quotes only what holds a comma).
            Separator = ',',
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

    /// <summary>
    /// The records of a Parquet file (Parquet.Net), row N counted from 1 over its row groups: each column must be a
    /// top-level string column (a column in <paramref name="numbersToo"/> may be an integer column too); a null is
    /// refused naming its row. A column in <paramref name="json"/> (a chat's <c>messages</c>) may also be a nested column
    /// (Hugging Face's list of {role, content} structs), kept as its JSON text. A column in <paramref name="ids"/>
    /// (pre-tokenized rows: Hugging Face's <c>input_ids</c>, <c>labels</c>) must be a list of integers, kept in
    /// <see cref="TextRecord.Ids"/>.
    /// </summary>
    public static IReadOnlyList<TextRecord> ReadParquet(string path, IReadOnlyList<string> columns, IReadOnlySet<string> numbersToo, IReadOnlySet<string>? json = null, IReadOnlySet<string>? ids = null)
    {
        if (InputFile.Length(path) == 0) throw new InvalidDataException(File.Exists(path) ? $"{path} is empty" : $"{path} does not exist");
        try { return ReadParquetAsync(path, columns, numbersToo, json, ids).GetAwaiter().GetResult(); }
        catch (Exception e) when (e is not (InvalidDataException or OutOfMemoryException or NotAFileException))
        {
            throw new InvalidDataException($"{path}: not a Parquet file Parquet.Net can read ({FirstLine(e.Message)})", e);
        }
    }

    /// <summary>A string column: Parquet.Net 6 types a UTF-8 column as ReadOnlyMemory&lt;char&gt; (or string).</summary>
    static bool IsText(DataField f) => f.ClrType == typeof(string) || f.ClrType == typeof(ReadOnlyMemory<char>);

    static readonly Type[] IntegerTypes = [typeof(sbyte), typeof(byte), typeof(short), typeof(ushort), typeof(int), typeof(uint), typeof(long)];

    static async Task<IReadOnlyList<TextRecord>> ReadParquetAsync(string path, IReadOnlyList<string> columns, IReadOnlySet<string> numbersToo, IReadOnlySet<string>? json, IReadOnlySet<string>? ids)
    {
        await using var stream = File.OpenRead(path);
        await using var reader = await ParquetReader.CreateAsync(stream);
        if (ids is { Count: > 0 }) return await ReadWithIds(path, reader.Schema, columns, ids);
        if (columns is [var only] && json?.Contains(only) == true && reader.Schema.Fields.FirstOrDefault(f => f.Name == only) is { } top && top is not DataField)
            return await ReadNestedAsJson(path, only);
        var all = reader.Schema.GetDataFields();
        var fields = columns.Select(c =>
        {
            var f = all.FirstOrDefault(f => f.Name == c && f.Path.ToList().Count == 1)
                ?? throw new InvalidDataException($"{path}: no column \"{c}\" (it has: {string.Join(", ", all.Select(f => f.Path.ToString()))})");
            var integer = numbersToo.Contains(c) && IntegerTypes.Contains(f.ClrType);
            if (f.IsArray || (!IsText(f) && !integer))
                throw new InvalidDataException($"{path}: column \"{c}\" holds {(f.IsArray ? "lists" : f.ClrType.Name)}, not strings{(numbersToo.Contains(c) ? " or integers" : "")}");
            return f;
        }).ToList();
        var records = new List<TextRecord>();
        var row = 0;
        for (int g = 0; g < reader.RowGroupCount; g++)
        {
            using var group = reader.OpenRowGroupReader(g);
            var n = checked((int)group.RowCount);
            var values = new string[fields.Count][];
            for (int c = 0; c < fields.Count; c++)
            {
                var f = fields[c];
                string?[] text;
                if (IsText(f))
                {
                    var buffer = new string?[n];
                    await group.ReadAsync(f, buffer.AsMemory());
                    text = buffer;
                }
                else
                {
                    // Integers widened to long: every type in IntegerTypes fits.
                    var buffer = new long?[n];
                    await ReadIntegers(group, f, buffer);
                    text = buffer.Select(v => v?.ToString(CultureInfo.InvariantCulture)).ToArray();
                }
                var nul = Array.IndexOf(text, null);
                if (nul >= 0) throw new InvalidDataException($"{path}, row {row + nul + 1}: column \"{f.Name}\" is null");
                values[c] = text!;
            }
            for (int i = 0; i < n; i++)
            {
                var record = new Dictionary<string, string>(StringComparer.Ordinal);
                for (int c = 0; c < fields.Count; c++) record[columns[c]] = values[c][i];
                records.Add(new TextRecord(path, row + i + 1, record) { Unit = "row" });
            }
            row += n;
        }
        return records;
    }

    /// <summary>One nested column's rows as JSON text, through Parquet.Net's untyped reader (rows as dictionaries).</summary>
    static async Task<IReadOnlyList<TextRecord>> ReadNestedAsJson(string path, string column)
    {
        await using var stream = File.OpenRead(path);
        var rows = (await ParquetSerializer.DeserializeUntypedAsync(stream)).Data;
        var records = new List<TextRecord>(rows.Count);
        for (int i = 0; i < rows.Count; i++)
        {
            if (!rows[i].TryGetValue(column, out var value) || value is null)
                throw new InvalidDataException($"{path}, row {i + 1}: column \"{column}\" is null");
            records.Add(new TextRecord(path, i + 1, new Dictionary<string, string>(StringComparer.Ordinal) { [column] = JsonSerializer.Serialize(Plain(value)) }) { Unit = "row" });
        }
        return records;
    }

    /// <summary>
    /// Rows holding token-id columns: each id column a list of integers (the 3-level LIST that pyarrow and Hugging Face's
    /// datasets write, or a repeated integer column), the others strings, read through Parquet.Net's untyped reader
    /// (rows as dictionaries, a list as an enumerable) so that both list layouts read alike.
    /// </summary>
    static async Task<IReadOnlyList<TextRecord>> ReadWithIds(string path, ParquetSchema schema, IReadOnlyList<string> columns, IReadOnlySet<string> ids)
    {
        foreach (var c in columns)
        {
            var f = schema.Fields.FirstOrDefault(f => f.Name == c)
                ?? throw new InvalidDataException($"{path}: no column \"{c}\" (it has: {string.Join(", ", schema.Fields.Select(f => f.Name))})");
            var ok = ids.Contains(c)
                ? f is ListField { Item: DataField item } && IntegerTypes.Contains(item.ClrType) || f is DataField { IsArray: true } d && IntegerTypes.Contains(d.ClrType)
                : f is DataField { IsArray: false } t && IsText(t);
            if (!ok) throw new InvalidDataException($"{path}: column \"{c}\" holds {Describe(f)}, not {(ids.Contains(c) ? "lists of integers (token ids)" : "strings")}");
        }
        await using var stream = File.OpenRead(path);
        var rows = (await ParquetSerializer.DeserializeUntypedAsync(stream)).Data;
        var records = new List<TextRecord>(rows.Count);
        for (int i = 0; i < rows.Count; i++)
        {
            var where = $"{path}, row {i + 1}";
            var values = new Dictionary<string, string>(StringComparer.Ordinal);
            var tokenIds = new Dictionary<string, long[]>(StringComparer.Ordinal);
            foreach (var c in columns)
            {
                if (!rows[i].TryGetValue(c, out var value) || value is null) throw new InvalidDataException($"{where}: column \"{c}\" is null");
                if (!ids.Contains(c)) { values[c] = Plain(value)!.ToString()!; continue; }
                var list = new List<long>();
                foreach (var e in (System.Collections.IEnumerable)value)
                {
                    if (e is null) throw new InvalidDataException($"{where}: column \"{c}\"[{list.Count}] is null");
                    list.Add(Convert.ToInt64(e, CultureInfo.InvariantCulture));
                }
                tokenIds[c] = [.. list];
            }
            records.Add(new TextRecord(path, i + 1, values) { Unit = "row", Ids = tokenIds });
        }
        return records;
    }

    static string Describe(Field f) => f switch
    {
        ListField { Item: DataField item } => $"lists of {item.ClrType.Name}",
        ListField => "lists of structs",
        DataField { IsArray: true } d => $"lists of {d.ClrType.Name}",
        DataField d => IsText(d) ? "strings" : d.ClrType.Name,
        _ => f.SchemaType.ToString().ToLowerInvariant() + "s",
    };

    /// <summary>An untyped Parquet value as plain strings, dictionaries and lists, for JSON.</summary>
    static object? Plain(object? value) => value switch
    {
        null or string => value,
        ReadOnlyMemory<char> m => m.ToString(),
        System.Collections.IDictionary d => d.Keys.Cast<object>().ToDictionary(k => k.ToString()!, k => Plain(d[k])),
        System.Collections.IEnumerable e => e.Cast<object?>().Select(Plain).ToList(),
        _ => value,
    };

    static async Task ReadIntegers(ParquetRowGroupReader group, DataField f, long?[] into)
    {
        async Task Read<T>(Func<T, long> widen) where T : struct
        {
            var buffer = new T?[into.Length];
            await group.ReadAsync<T>(f, buffer.AsMemory());
            for (int i = 0; i < into.Length; i++) into[i] = buffer[i] is { } v ? widen(v) : null;
        }
        if (f.ClrType == typeof(long)) await Read<long>(v => v);
        else if (f.ClrType == typeof(int)) await Read<int>(v => v);
        else if (f.ClrType == typeof(uint)) await Read<uint>(v => v);
        else if (f.ClrType == typeof(short)) await Read<short>(v => v);
        else if (f.ClrType == typeof(ushort)) await Read<ushort>(v => v);
        else if (f.ClrType == typeof(byte)) await Read<byte>(v => v);
        else await Read<sbyte>(v => v);
    }

    static string FirstLine(string message) => message.Split('\n', 2)[0].TrimEnd();

    static string Kind(JsonValueKind kind) => kind switch
    {
        JsonValueKind.Object => "object", JsonValueKind.Array => "array", JsonValueKind.String => "string",
        JsonValueKind.Number => "number", JsonValueKind.True or JsonValueKind.False => "boolean", _ => "null",
    };
}
