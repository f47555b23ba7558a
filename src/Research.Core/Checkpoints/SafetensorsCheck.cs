using System.Buffers.Binary;
using System.Text.Json;
using Research.Core.Files;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Research.Core.Checkpoints;

/// <summary>
/// Checks a safetensors file's structure before any reader allocates from it: an 8-byte little-endian header length, a
/// JSON header of tensors (dtype, shape, data offsets) and the data they describe (the format's specification,
/// huggingface/safetensors). A damaged or hostile file — empty, not a regular file, a header longer than the file, an
/// unknown dtype, offsets outside the data or not matching the shape, two tensors sharing bytes, bytes of the data that
/// belong to no tensor — is one <see cref="InvalidDataException"/> naming the file (and the tensor), instead of an index
/// exception in a reader, an allocation of whatever size the header claims, or two parameters silently read from the
/// same bytes. <see cref="Load"/> is the one place the project reads a safetensors file.
/// </summary>
public static class SafetensorsCheck
{
    static readonly Dictionary<string, int> ItemSize = new()
    {
        ["F64"] = 8, ["F32"] = 4, ["F16"] = 2, ["BF16"] = 2, ["I64"] = 8, ["I32"] = 4, ["I16"] = 2, ["I8"] = 1, ["U8"] = 1, ["BOOL"] = 1,
    };

    /// <summary>Whether a tensor of this dtype can be written to a checkpoint and read back (a dtype <see cref="Check"/> reads).</summary>
    public static bool Holds(ScalarType dtype) => ItemSize.ContainsKey(WeightFile.SafetensorsName(dtype));

    /// <summary>The dtypes a checkpoint holds, as a safetensors header names them.</summary>
    public static string DTypes => string.Join(", ", ItemSize.Keys);

    /// <summary>The most a header may take: real headers are kilobytes; a claim of gigabytes is damage.</summary>
    const long MaxHeader = 100L << 20;

    /// <exception cref="InvalidDataException">The file is not a well-formed safetensors file; the message names it.</exception>
    public static void Check(string path) => Names(path);

    /// <summary>The tensors of a file that passes <see cref="Check"/>, by name, owned by the caller, each in the dtype its
    /// header gives (whether that dtype suits what the tensor is loaded into is the caller's to check:
    /// <see cref="WeightFile.CheckDTypes"/>).</summary>
    /// <exception cref="InvalidDataException">The file is not a well-formed safetensors file; the message names it.</exception>
    public static Dictionary<string, Tensor> Load(string path)
    {
        Check(path);
        return Safetensors.LoadStateDict(path);
    }

    /// <summary>The tensor names of a file that passes <see cref="Check"/> (the header read, no data).</summary>
    /// <exception cref="InvalidDataException">The file is not a well-formed safetensors file; the message names it.</exception>
    public static IReadOnlyList<string> Names(string path) => Shapes(path).Keys.ToList();

    /// <summary>The tensors of a file that passes <see cref="Check"/>, each name with its shape (the
    /// header read, no data): enough to tell one layout from another before loading anything.</summary>
    /// <exception cref="InvalidDataException">The file is not a well-formed safetensors file; the message names it.</exception>
    public static IReadOnlyDictionary<string, long[]> Shapes(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"no weights at {path}", path);
        var length = InputFile.Length(path);
        if (length < 8) throw new InvalidDataException($"{path} is empty or shorter than a safetensors header");
        using var file = File.OpenRead(path);
        Span<byte> prefix = stackalloc byte[8];
        file.ReadExactly(prefix);
        var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (headerLength > (ulong)(length - 8) || headerLength > MaxHeader)
            throw new InvalidDataException($"{path}: its safetensors header claims {headerLength} bytes, the file holds {length - 8} after the length");
        var header = new byte[headerLength];
        file.ReadExactly(header);
        var dataLength = length - 8 - (long)headerLength;
        JsonDocument json;
        try { json = JsonDocument.Parse(header); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: its safetensors header is not JSON ({e.Message})", e); }
        using (json)
        {
            if (json.RootElement.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: its safetensors header is not a JSON object");
            var names = new HashSet<string>(StringComparer.Ordinal);
            var shapes = new Dictionary<string, long[]>(StringComparer.Ordinal);
            var ranges = new List<(long Begin, long End, string Name)>();
            foreach (var entry in json.RootElement.EnumerateObject())
            {
                if (!names.Add(entry.Name)) throw new InvalidDataException($"{path}: its safetensors header names '{entry.Name}' twice");
                if (entry.Name == "__metadata__")
                {
                    // The format's metadata is a map of strings to strings; readers fail on anything else.
                    if (entry.Value.ValueKind != JsonValueKind.Object || entry.Value.EnumerateObject().Any(m => m.Value.ValueKind != JsonValueKind.String))
                        throw new InvalidDataException($"{path}: its safetensors __metadata__ is not a map of strings to strings");
                    continue;
                }
                var t = entry.Value;
                string Bad(string what) => $"{path}: tensor '{entry.Name}' {what}";
                if (t.ValueKind != JsonValueKind.Object || !t.TryGetProperty("dtype", out var dtype) || !t.TryGetProperty("shape", out var shape)
                    || !t.TryGetProperty("data_offsets", out var offsets) || shape.ValueKind != JsonValueKind.Array || offsets.ValueKind != JsonValueKind.Array)
                    throw new InvalidDataException(Bad("lacks dtype, shape or data_offsets (shape and data_offsets arrays)"));
                if (dtype.ValueKind != JsonValueKind.String || !ItemSize.TryGetValue(dtype.GetString()!, out var size))
                    throw new InvalidDataException(Bad($"has dtype {dtype}, which is not one of {string.Join(", ", ItemSize.Keys)}"));
                long count = 1;
                var dims = new List<long>();
                foreach (var d in shape.EnumerateArray())
                {
                    if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out var n) || n < 0) throw new InvalidDataException(Bad($"has shape {shape}"));
                    dims.Add(n);
                    // A shape whose product passes a long is no tensor any file holds.
                    try { count = checked(count * n); }
                    catch (OverflowException) { throw new InvalidDataException(Bad($"has shape {shape}, more elements than a file can hold")); }
                }
                var o = offsets.EnumerateArray().Select(x => x.ValueKind == JsonValueKind.Number && x.TryGetInt64(out var v) ? v : -1).ToArray();
                if (o.Length != 2 || o[0] < 0 || o[1] < o[0] || o[1] > dataLength)
                    throw new InvalidDataException(Bad($"has data offsets {offsets} outside the {dataLength} bytes of data"));
                if (count > dataLength || o[1] - o[0] != count * size)
                    throw new InvalidDataException(Bad($"of shape {shape} and dtype {dtype.GetString()} needs {count * size} bytes; its offsets span {o[1] - o[0]}"));
                shapes[entry.Name] = [.. dims];
                ranges.Add((o[0], o[1], entry.Name));
            }
            CheckLayout(path, ranges, dataLength);
            return shapes;
        }
    }

    /// <summary>
    /// The format requires the tensors to tile the data: each byte belongs to exactly one tensor, in some order, with no
    /// gap and nothing after the last (the reference reader sorts by offsets and demands that each tensor start where the
    /// previous ended). Overlapping ranges would load two parameters from the same bytes; uncovered bytes are a second
    /// payload no reader sees (a polyglot file).
    /// </summary>
    static void CheckLayout(string path, List<(long Begin, long End, string Name)> ranges, long dataLength)
    {
        ranges.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
        long covered = 0;
        string? previous = null;
        foreach (var (begin, end, name) in ranges)
        {
            if (begin < covered)
                throw new InvalidDataException($"{path}: tensor '{name}' (data offsets [{begin}, {end}]) overlaps tensor '{previous}' (which ends at {covered}); each byte of the data belongs to one tensor");
            if (begin > covered)
                throw new InvalidDataException($"{path}: data bytes [{covered}, {begin}) before tensor '{name}' belong to no tensor; the tensors must cover the data without gaps");
            covered = end;
            previous = name;
        }
        if (covered != dataLength)
            throw new InvalidDataException($"{path}: data bytes [{covered}, {dataLength}) after {(previous is null ? "the header" : $"tensor '{previous}'")} belong to no tensor; the tensors must cover the data to its end");
    }
}
