using System.Runtime.InteropServices;
using Google.Protobuf;
using Onnx;
using Research.Core.Files;
using static TorchSharp.torch;

namespace Research.Core.Models;

/// <summary>
/// The weights of a ResNet exported to ONNX, under torchvision's names (<c>conv1.weight</c>, <c>bn1.running_var</c>,
/// <c>layer2.0.downsample.0.weight</c>, …), with the stage layout found in the graph. Owns its tensors.
/// </summary>
/// <param name="Blocks">Basic blocks per stage, as found in the graph (the published CNTK file has [2, 2, 2, 3]).</param>
/// <param name="Tensors">Every convolution weight and BatchNorm weight, bias, running mean and variance, by torchvision name.</param>
/// <param name="Origins">For each torchvision name, the ONNX initializer it was read from (<c>Parameter91</c>, <c>Constant98</c>).</param>
public sealed record ResNetOnnxWeights(IReadOnlyList<int> Blocks, IReadOnlyDictionary<string, Tensor> Tensors,
    IReadOnlyDictionary<string, string> Origins) : IDisposable
{
    public void Dispose() { foreach (var t in Tensors.Values) t.Dispose(); }
}

/// <summary>
/// Reads a ResNet of basic blocks from an ONNX file whose initializers have no meaningful names — the CNTK 2.6 export
/// that NuGet's <c>Microsoft.ML.DnnImageFeaturizer.ResNet18</c> ships calls them <c>ParameterNN</c> and
/// <c>ConstantNN</c> in no useful order, and lists each block's 1×1 projection <i>before</i> the block's own
/// convolutions. So nothing here relies on names or node order: the graph is walked forward from its input by data flow.
/// </summary>
/// <remarks>
/// The walk, and what each step maps to:
/// <list type="number">
/// <item>input → Conv (<c>conv1</c>) → BatchNormalization (<c>bn1</c>) → Relu → MaxPool: the stem.</item>
/// <item>From a block's input h: its consumers are one 3×3 Conv (the block's <c>conv1</c>), at most one 1×1 Conv (the
/// projection, <c>downsample.0</c>, whose BatchNormalization is <c>downsample.1</c>), and for an identity block the Add.
/// conv1 → BN (<c>bn1</c>) → Relu → Conv (<c>conv2</c>) → BN (<c>bn2</c>) → Add(bn2, h or projection) → Relu: the
/// block's output, the next block's input.</item>
/// <item>A block with a projection starts a new stage (<c>layer2</c>…<c>layer4</c>); the first stage starts after the stem.</item>
/// <item>The walk ends at the AveragePool that consumes a block's output.</item>
/// </list>
/// BatchNormalization's inputs (X, scale, B, mean, var) map to <c>weight</c>, <c>bias</c>, <c>running_mean</c>,
/// <c>running_var</c>. Every convolution's kernel, stride and padding, the max-pool's and each BatchNorm's epsilon are
/// checked against what <see cref="ResNet"/> computes (CNTK's asymmetric padding included), so a file that would
/// compute something else is refused naming the node, not silently mis-read.
/// </remarks>
public static class ResNetOnnx
{
    /// <summary>The BatchNorm epsilon <see cref="ResNet"/> uses (TorchSharp's and the CNTK file's).</summary>
    public const double BatchNormEpsilon = 1e-5;

    public static ResNetOnnxWeights Read(string path)
    {
        if (InputFile.Length(path) == 0)
            throw new InvalidDataException(File.Exists(path) ? $"{path} is empty" : $"{path}: no such ONNX file");
        ModelProto model;
        // Read with File.ReadAllBytes (shared read): OnnxSharp's ParseFromFile opens the file for writing too, which .NET
        // on Linux locks exclusively, so two runs starting from the published model at once (a sweep's trials) collided.
        try { model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(path)); }
        catch (InvalidProtocolBufferException e) { throw new InvalidDataException($"{path} is not an ONNX model ({e.Message})", e); }
        return Read(model.Graph, path);
    }

    /// <summary>Reads a graph already parsed; <paramref name="source"/> names it in errors.</summary>
    public static ResNetOnnxWeights Read(GraphProto graph, string source) => new Walk(source, graph).Run();

    /// <summary>One pass over a graph: the lookups it needs and the tensors it has read so far.</summary>
    sealed class Walk(string path, GraphProto graph)
    {
        readonly Dictionary<string, TensorProto> initializers = graph.Initializer.GroupBy(t => t.Name).ToDictionary(g => g.Key, g => g.First());
        readonly ILookup<string, NodeProto> consumers =
            graph.Node.SelectMany(n => n.Input.Select(i => (i, n))).ToLookup(p => p.i, p => p.n);
        readonly Dictionary<string, Tensor> tensors = new();
        readonly Dictionary<string, string> origins = new();

        public ResNetOnnxWeights Run()
        {
            try
            {
                var blocks = new List<int>();
                var h = Stem();
                for (var index = 0; ; index++)
                {
                    var next = Consumers(h);
                    if (next.Count == 1 && next[0].OpType == "AveragePool") break;
                    var hasProjection = next.Any(n => n.OpType == "Conv" && Ints(n, "kernel_shape").SequenceEqual([1L, 1L]));
                    if (blocks.Count == 0 || hasProjection) blocks.Add(0);
                    if (blocks.Count > 4) throw Refuse($"a fifth stage begins at the block reading {h}; a ResNet has four");
                    h = Block(h, $"layer{blocks.Count}.{blocks[^1]}", firstOfNetwork: index == 0);
                    blocks[^1]++;
                }
                if (blocks.Count != 4) throw Refuse($"{blocks.Count} stages of blocks found ({string.Join(", ", blocks)}); a ResNet has four");
                return new ResNetOnnxWeights(blocks, new Dictionary<string, Tensor>(tensors), origins);
            }
            catch
            {
                foreach (var t in tensors.Values) t.Dispose();
                throw;
            }
        }

        /// <summary>input → Conv 7×7/2 → BN → Relu → MaxPool 3×3/2; returns the max-pool's output.</summary>
        string Stem()
        {
            var inputs = graph.Input.Select(i => i.Name).Where(n => !initializers.ContainsKey(n)).ToList();
            if (inputs.Count != 1) throw Refuse($"the graph has {inputs.Count} inputs that are not initializers; a ResNet has one image input");
            var conv = Only(inputs[0], "Conv");
            var x = Convolution(conv, "conv1", kernel: 7, stride: 2, pads: [3, 3, 2, 2]);
            x = Single(BatchNorm(Only(x, "BatchNormalization"), "bn1"), "Relu");
            var pool = Only(x, "MaxPool");
            Expect(pool, "kernel_shape", [3, 3]);
            Expect(pool, "strides", [2, 2]);
            Expect(pool, "pads", [1, 1, 0, 0]);
            return pool.Output[0];
        }

        /// <summary>One basic block reading <paramref name="h"/>, named <paramref name="prefix"/>; returns its output.</summary>
        string Block(string h, string prefix, bool firstOfNetwork)
        {
            var convs = Consumers(h).Where(n => n.OpType == "Conv").ToList();
            var projection = convs.Where(n => Ints(n, "kernel_shape").SequenceEqual([1L, 1L])).ToList();
            var main = convs.Except(projection).ToList();
            if (main.Count != 1 || projection.Count > 1)
                throw Refuse($"{h} feeds {main.Count} 3×3 and {projection.Count} 1×1 convolutions; a basic block has one of each at most");
            if (firstOfNetwork && projection.Count == 1)
                throw Refuse($"the first block ({prefix}) has a projection; torchvision's layer1 has none");
            // Stride 2 and the projection come together (the first block of layer2–4): that is the ResNet this reads into.
            var stride = projection.Count == 1 ? 2 : 1;
            var y = Convolution(main[0], prefix + ".conv1", kernel: 3, stride, pads: stride == 1 ? [1, 1, 1, 1] : [1, 1, 0, 0]);
            y = Single(BatchNorm(Only(y, "BatchNormalization"), prefix + ".bn1"), "Relu");
            y = Convolution(Only(y, "Conv"), prefix + ".conv2", kernel: 3, stride: 1, pads: [1, 1, 1, 1]);
            y = BatchNorm(Only(y, "BatchNormalization"), prefix + ".bn2");
            var shortcut = h;
            if (projection.Count == 1)
            {
                var p = Convolution(projection[0], prefix + ".downsample.0", kernel: 1, stride: 2, pads: [0, 0, 0, 0]);
                shortcut = BatchNorm(Only(p, "BatchNormalization"), prefix + ".downsample.1");
            }
            var add = Only(y, "Add");
            if (!add.Input.Contains(shortcut))
                throw Refuse($"Add {add.Name} adds {string.Join(" and ", add.Input)}; block {prefix} needs {y} plus {shortcut}");
            return Single(add.Output[0], "Relu");
        }

        string Convolution(NodeProto conv, string name, long kernel, long stride, long[] pads)
        {
            Expect(conv, "kernel_shape", [kernel, kernel]);
            Expect(conv, "strides", [stride, stride]);
            Expect(conv, "pads", pads);
            if (conv.Attribute.FirstOrDefault(a => a.Name == "group") is { } g && g.I != 1) throw Refuse($"Conv {conv.Name} ({name}) has group = {g.I}; ours are dense");
            if (Ints(conv, "dilations") is { Count: > 0 } d && d.Any(v => v != 1)) throw Refuse($"Conv {conv.Name} ({name}) is dilated");
            if (conv.Input.Count != 2) throw Refuse($"Conv {conv.Name} ({name}) has {conv.Input.Count} inputs; ours take no bias (BatchNorm follows)");
            Take(conv, 1, name + ".weight");
            return conv.Output[0];
        }

        string BatchNorm(NodeProto bn, string name)
        {
            var eps = bn.Attribute.FirstOrDefault(a => a.Name == "epsilon")?.F ?? 1e-5f;
            if (Math.Abs(eps - BatchNormEpsilon) > 1e-9)
                throw Refuse($"BatchNormalization {bn.Name} ({name}) has epsilon {eps}; ours uses {BatchNormEpsilon}");
            if (bn.Attribute.FirstOrDefault(a => a.Name == "spatial") is { } s && s.I != 1)
                throw Refuse($"BatchNormalization {bn.Name} ({name}) is not spatial (per-pixel statistics); ours keeps one per channel");
            string[] roles = ["weight", "bias", "running_mean", "running_var"];
            for (var i = 0; i < roles.Length; i++) Take(bn, i + 1, $"{name}.{roles[i]}");
            return bn.Output[0];
        }

        /// <summary>Reads input <paramref name="index"/> of <paramref name="node"/>, an initializer, as tensor <paramref name="name"/>.</summary>
        void Take(NodeProto node, int index, string name)
        {
            var what = $"{name} (input {index} of {node.OpType} {node.Name})";
            if (index >= node.Input.Count) throw Refuse($"{what} is absent: the node has {node.Input.Count} inputs");
            var init = node.Input[index];
            if (!initializers.TryGetValue(init, out var t)) throw Refuse($"{what}: initializer {init} is missing");
            if (t.DataType != (int)TensorProto.Types.DataType.Float) throw Refuse($"{what}: initializer {init} is of ONNX type {t.DataType}, not float");
            var dims = t.Dims.ToArray();
            var count = dims.Aggregate(1L, (a, b) => a * b);
            float[] data = t.FloatData.Count > 0 ? t.FloatData.ToArray() : MemoryMarshal.Cast<byte, float>(t.RawData.Span).ToArray();
            if (dims.Any(d => d < 0) || data.Length != count)
                throw Refuse($"{what}: initializer {init} holds {data.Length} numbers, its dims [{string.Join(", ", dims)}] promise {count}");
            tensors[name] = tensor(data, dims);
            origins[name] = init;
        }

        List<NodeProto> Consumers(string value) => consumers[value].ToList();

        /// <summary>The only node reading <paramref name="value"/>, which must be a <paramref name="op"/>.</summary>
        NodeProto Only(string value, string op)
        {
            var readers = Consumers(value);
            if (readers.Count != 1 || readers[0].OpType != op)
                throw Refuse($"{value} is read by [{string.Join(", ", readers.Select(n => $"{n.OpType} {n.Name}"))}]; expected one {op}");
            return readers[0];
        }

        /// <summary>The output of the single-input node <paramref name="op"/> that reads <paramref name="value"/> (a Relu).</summary>
        string Single(string value, string op) => Only(value, op).Output[0];

        static IReadOnlyList<long> Ints(NodeProto node, string attribute) =>
            node.Attribute.FirstOrDefault(a => a.Name == attribute)?.Ints.ToList() ?? [];

        void Expect(NodeProto node, string attribute, long[] expected)
        {
            var found = Ints(node, attribute);
            if (!found.SequenceEqual(expected))
                throw Refuse($"{node.OpType} {node.Name} has {attribute} [{string.Join(", ", found)}]; the ResNet this reads into computes [{string.Join(", ", expected)}]");
        }

        InvalidDataException Refuse(string problem) => new($"{path}: {problem}");
    }
}
