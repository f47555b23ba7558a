using System.Runtime.InteropServices;
using Google.Protobuf;
using Onnx;
using Research.Core.Files;
using static TorchSharp.torch;

namespace Research.Core.Models;

/// <summary>
/// One node of an ONNX graph: its operator, the names of the values it reads and writes, and its attributes — each a
/// <c>long</c>, <c>float</c>, <c>string</c>, <c>long[]</c>, <c>float[]</c> or <c>string[]</c> (tensor- and graph-valued
/// attributes are left out).
/// </summary>
public sealed record OnnxNode(string Name, string OpType, IReadOnlyList<string> Inputs, IReadOnlyList<string> Outputs,
    IReadOnlyDictionary<string, object> Attributes);

/// <summary>One initializer (a stored tensor) of an ONNX graph: its name, shape and ONNX element type (e.g. FLOAT, INT64).</summary>
public sealed record OnnxInitializer(string Name, IReadOnlyList<long> Shape, string ElementType)
{
    public long Count => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// A PyTorch <c>Linear</c> as exporters write it: <c>y = MatMul(x, W)</c>, then <c>Add</c> with the bias b. The initializer W
/// is stored [in, out], the transpose of the module's <c>weight</c> [out, in]; exporters often leave it anonymous while the
/// bias keeps its parameter name.
/// </summary>
public sealed record OnnxLinear(string Weight, string Bias, string MatMul, string Add);

/// <summary>
/// The weights and the graph of an ONNX model file (ONNX's protobuf schema, read by OnnxSharp): initializers by name, as
/// float32 tensors or int64 values, and the nodes in file (topological) order, so that anonymous weights can be mapped
/// to parameters by where the graph uses them. The file is checked when read: a missing, empty or non-regular file, one
/// that is not an ONNX model, or an initializer whose stored bytes do not match its shape is one
/// <see cref="InvalidDataException"/> naming the file.
/// </summary>
public sealed class OnnxWeights
{
    /// <summary>A protobuf message is at most 2 GiB; larger models keep their weights in external files, not read here.</summary>
    const long MaxFile = int.MaxValue;

    static readonly Dictionary<TensorProto.Types.DataType, int> ItemSize = new()
    {
        [TensorProto.Types.DataType.Float] = 4, [TensorProto.Types.DataType.Double] = 8, [TensorProto.Types.DataType.Float16] = 2,
        [TensorProto.Types.DataType.Bfloat16] = 2, [TensorProto.Types.DataType.Int64] = 8, [TensorProto.Types.DataType.Int32] = 4,
        [TensorProto.Types.DataType.Int16] = 2, [TensorProto.Types.DataType.Int8] = 1, [TensorProto.Types.DataType.Uint8] = 1,
        [TensorProto.Types.DataType.Uint16] = 2, [TensorProto.Types.DataType.Uint32] = 4, [TensorProto.Types.DataType.Uint64] = 8,
        [TensorProto.Types.DataType.Bool] = 1,
    };

    readonly Dictionary<string, TensorProto> _tensors;

    /// <summary>The file the weights were read from.</summary>
    public string Path { get; }

    /// <summary>The initializers, in file order.</summary>
    public IReadOnlyList<OnnxInitializer> Initializers { get; }

    /// <summary>The graph's nodes, in file order (ONNX requires topological order).</summary>
    public IReadOnlyList<OnnxNode> Nodes { get; }

    /// <summary>The names of the graph's inputs and outputs.</summary>
    public IReadOnlyList<string> Inputs { get; }
    public IReadOnlyList<string> Outputs { get; }

    OnnxWeights(string path, GraphProto graph)
    {
        Path = path;
        _tensors = new Dictionary<string, TensorProto>(StringComparer.Ordinal);
        var initializers = new List<OnnxInitializer>();
        foreach (var t in graph.Initializer)
        {
            if (!_tensors.TryAdd(t.Name, t)) throw Bad($"names the initializer '{t.Name}' twice");
            initializers.Add(Check(t));
        }
        Initializers = initializers;
        Nodes = graph.Node.Select(n => new OnnxNode(n.Name, n.OpType, n.Input.ToList(), n.Output.ToList(), Attributes(n))).ToList();
        Inputs = graph.Input.Select(i => i.Name).Where(n => !_tensors.ContainsKey(n)).ToList();
        Outputs = graph.Output.Select(o => o.Name).ToList();
    }

    /// <summary>Reads and checks an ONNX model file.</summary>
    /// <exception cref="InvalidDataException">The file is missing, not an ONNX model, or damaged; the message names it.</exception>
    /// <exception cref="NotAFileException">The path leads to a FIFO, a device, a socket or a directory.</exception>
    public static OnnxWeights Read(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"no ONNX model at {path}", path);
        var length = InputFile.Length(path);
        if (length == 0) throw new InvalidDataException($"{path} is empty");
        if (length > MaxFile) throw new InvalidDataException($"{path}: {length} bytes, more than the 2 GiB an ONNX protobuf holds (external weight files are not read)");
        ModelProto model;
        // Parsed from memory, so that every length the file claims is checked against the bytes there are.
        try { model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(path)); }
        catch (InvalidProtocolBufferException e) { throw new InvalidDataException($"{path} is not an ONNX model ({e.Message})", e); }
        // Protobuf parses many byte strings without complaint: an ONNX model declares its IR version and has a graph.
        if (model.IrVersion <= 0 || model.Graph is null || model.Graph.Node.Count == 0)
            throw new InvalidDataException($"{path} is not an ONNX model (no IR version or no graph)");
        return new OnnxWeights(path, model.Graph);
    }

    /// <summary>Whether the file has an initializer of this name.</summary>
    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <summary>The shape and type of an initializer.</summary>
    public OnnxInitializer Info(string name) => Check(Get(name));

    /// <summary>A FLOAT initializer as a new float32 tensor of its shape (from raw_data, little-endian, or float_data).</summary>
    public Tensor Float(string name)
    {
        var t = Get(name);
        var info = Check(t);
        if ((TensorProto.Types.DataType)t.DataType != TensorProto.Types.DataType.Float)
            throw Bad($"initializer '{name}' is {info.ElementType}, not FLOAT");
        // raw_data is little-endian, the layout of every host TorchSharp runs on.
        var values = t.RawData.Length > 0 ? MemoryMarshal.Cast<byte, float>(t.RawData.Span).ToArray() : t.FloatData.ToArray();
        return tensor(values, info.Shape.ToArray());
    }

    /// <summary>An INT64 initializer's values, flattened (from raw_data, little-endian, or int64_data).</summary>
    public long[] Int64(string name)
    {
        var t = Get(name);
        var info = Check(t);
        if ((TensorProto.Types.DataType)t.DataType != TensorProto.Types.DataType.Int64)
            throw Bad($"initializer '{name}' is {info.ElementType}, not INT64");
        return t.RawData.Length > 0 ? MemoryMarshal.Cast<byte, long>(t.RawData.Span).ToArray() : t.Int64Data.ToArray();
    }

    /// <summary>The nodes that read a value (an initializer, a graph input or a node's output).</summary>
    public IReadOnlyList<OnnxNode> Consumers(string value) => Nodes.Where(n => n.Inputs.Contains(value)).ToList();

    /// <summary>
    /// Every exported Linear: a <c>MatMul</c> whose second input is a rank-2 FLOAT initializer W (its first not an
    /// initializer), whose output only an <c>Add</c> reads, whose other input is a rank-1 FLOAT initializer b.
    /// </summary>
    public IReadOnlyList<OnnxLinear> ExportedLinears()
    {
        var readers = new Dictionary<string, List<OnnxNode>>(StringComparer.Ordinal);
        foreach (var node in Nodes)
            foreach (var input in node.Inputs.Distinct())
                (readers.TryGetValue(input, out var list) ? list : readers[input] = []).Add(node);
        bool IsFloat(string name, int rank) =>
            _tensors.TryGetValue(name, out var t) && t.Dims.Count == rank && (TensorProto.Types.DataType)t.DataType == TensorProto.Types.DataType.Float;
        var linears = new List<OnnxLinear>();
        foreach (var matmul in Nodes.Where(n => n.OpType == "MatMul" && n.Inputs.Count == 2 && n.Outputs.Count == 1))
        {
            if (!IsFloat(matmul.Inputs[1], 2) || _tensors.ContainsKey(matmul.Inputs[0])) continue;
            if (!readers.TryGetValue(matmul.Outputs[0], out var next) || next is not [{ OpType: "Add", Inputs.Count: 2 } add]) continue;
            var bias = add.Inputs[0] == matmul.Outputs[0] ? add.Inputs[1] : add.Inputs[0];
            if (IsFloat(bias, 1)) linears.Add(new OnnxLinear(matmul.Inputs[1], bias, matmul.Name, add.Name));
        }
        return linears;
    }

    static Dictionary<string, object> Attributes(NodeProto node)
    {
        var attributes = new Dictionary<string, object>(StringComparer.Ordinal);
        foreach (var a in node.Attribute)
        {
            object? value = a.Type switch
            {
                AttributeProto.Types.AttributeType.Int => a.I,
                AttributeProto.Types.AttributeType.Float => a.F,
                AttributeProto.Types.AttributeType.String => a.S.ToStringUtf8(),
                AttributeProto.Types.AttributeType.Ints => a.Ints.ToArray(),
                AttributeProto.Types.AttributeType.Floats => a.Floats.ToArray(),
                AttributeProto.Types.AttributeType.Strings => a.Strings.Select(x => x.ToStringUtf8()).ToArray(),
                _ => null,
            };
            if (value is not null) attributes[a.Name] = value;
        }
        return attributes;
    }

    TensorProto Get(string name) =>
        _tensors.TryGetValue(name, out var t) ? t : throw Bad($"has no initializer '{name}'");

    /// <summary>The initializer's description, after checking that its stored data is what its shape and type promise.</summary>
    OnnxInitializer Check(TensorProto t)
    {
        var type = (TensorProto.Types.DataType)t.DataType;
        var typeName = Enum.IsDefined(type) ? type.ToString().ToUpperInvariant() : $"type {t.DataType}";
        if (t.DataLocation == TensorProto.Types.DataLocation.External)
            throw Bad($"initializer '{t.Name}' keeps its data in an external file, which is not read");
        long count = 1;
        foreach (var d in t.Dims)
        {
            if (d < 0) throw Bad($"initializer '{t.Name}' has shape [{string.Join(", ", t.Dims)}]");
            try { count = checked(count * d); }
            catch (OverflowException) { throw Bad($"initializer '{t.Name}' has shape [{string.Join(", ", t.Dims)}], more elements than a file holds"); }
        }
        long stored = t.RawData.Length > 0 ? t.RawData.Length
            : type switch
            {
                TensorProto.Types.DataType.Float => t.FloatData.Count * 4L,
                TensorProto.Types.DataType.Int64 => t.Int64Data.Count * 8L,
                _ => -1,   // other typed fields are not read here, so not checked
            };
        if (stored >= 0 && ItemSize.TryGetValue(type, out var size) && stored != count * size)
            throw Bad($"initializer '{t.Name}' of shape [{string.Join(", ", t.Dims)}] and type {typeName} needs {count * size} bytes; it stores {stored}");
        return new OnnxInitializer(t.Name, t.Dims.ToArray(), typeName);
    }

    InvalidDataException Bad(string what) => new($"{Path}: {what}");
}
