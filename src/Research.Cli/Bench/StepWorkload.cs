using Research.Abstractions;
using Research.Core.Models;
using Research.Core.Tasks;
using Research.Core.Text;
using TorchSharp;
using static TorchSharp.torch;

using Research.Core;
namespace Research.Cli.Bench;

/// <summary>
/// A model, a fixed list of batches and the loss they train for, for timing training steps. The same seed gives a
/// bitwise-identical model and batches, so a baseline and a candidate can each step their own copy. The loss comes twice,
/// as the same function: <see cref="Task"/> for the trainer's step, <see cref="MeanLoss"/> written in plain TorchSharp for
/// the hand-written loop.
/// </summary>
public sealed class StepWorkload(string name, nn.Module<Tensor, Tensor> model, IReadOnlyList<Batch> batches,
    OutputTask task, Func<nn.Module<Tensor, Tensor>, Batch, Tensor> meanLoss,
    long? tokensPerBatch = null, double? usefulFlopsPerBatch = null) : IDisposable
{
    /// <summary>The names <see cref="Named"/> knows, in the order <c>research bench step</c> runs them.</summary>
    public static IReadOnlyList<string> Names { get; } = ["gpt", "gpt-8k", "transformer", "mlp", "cnn"];

    public string Name { get; } = name;
    public nn.Module<Tensor, Tensor> Model { get; } = model;
    public IReadOnlyList<Batch> Batches { get; } = batches;
    public OutputTask Task { get; } = task;
    public Func<nn.Module<Tensor, Tensor>, Batch, Tensor> MeanLoss { get; } = meanLoss;

    /// <summary>Tokens a batch feeds the model (token models only).</summary>
    public long? TokensPerBatch { get; } = tokensPerBatch;

    /// <summary>The matrix-product FLOPs one training step on a batch needs by a stated formula (the GPT's only).</summary>
    public double? UsefulFlopsPerBatch { get; } = usefulFlopsPerBatch;

    public long ParameterCount => Model.parameters().Sum(p => p.numel());
    public int TensorCount => Model.parameters().Count();

    /// <summary>The workload of a name in <see cref="Names"/>.</summary>
    public static StepWorkload Named(string name, long seed) => name switch
    {
        "gpt" => Gpt(seed),
        "gpt-8k" => Gpt(seed, GptShape.Benchmark with { Vocab = RestrictedGpt2Tokenizer.DefaultMaxVocab }),
        "transformer" => Transformer(seed),
        "mlp" => Mlp(seed),
        "cnn" => Cnn(seed),
        _ => throw new ArgumentException($"unknown step workload '{name}' (known: {string.Join(", ", Names)})"),
    };

    /// <summary>
    /// A GPT as a causal language model, <see cref="GptShape.Benchmark"/> unless <paramref name="shape"/> is given: batches
    /// of <see cref="GptShape.BenchmarkBatch"/> sequences of T_max uniform random ids (the loss stays near ln V; the work
    /// per step does not depend on the text), each the model's input and its own target, shifted by the loss. With the
    /// restricted GPT-2 vocabulary's 8,192 ids (<c>gpt-8k</c>) the logits of a batch take 32 MiB, glibc's largest mmap
    /// threshold: the workload on which the allocator matters (see <see cref="Research.Core.Memory.NativeAllocator"/>).
    /// </summary>
    public static StepWorkload Gpt(long seed, GptShape? shape = null, int batches = 4)
    {
        shape ??= GptShape.Benchmark;
        var model = Research.Core.Models.Gpt.Create(shape, Seeds.Generator(seed, "bench.init"));
        var data = Seeds.Generator(seed, "bench.data");
        var list = Enumerable.Range(0, batches).Select(_ =>
        {
            var tokens = randint(0, shape.Vocab, [GptShape.BenchmarkBatch, shape.MaxLen], dtype: ScalarType.Int64, generator: data);
            return new Batch([new(Batch.InputIds, tokens), new(Batch.Targets, tokens.clone())]);
        }).ToList();
        long tokens = GptShape.BenchmarkBatch * shape.MaxLen;
        return new StepWorkload($"gpt d{shape.Width}×{shape.Layers}, vocab {shape.Vocab}", model, list, new CausalLmTask(),
            HandWrittenLoop.NextTokenCrossEntropy, tokens, tokens * shape.TrainingFlopsPerToken(shape.MaxLen));
    }

    /// <summary>
    /// The transformer classifier of the step bench: a GPT of width 256 in 4 heads and 4 blocks over 4,096 ids and 64
    /// positions with a head of <see cref="Classes"/> on the last token — 4,227,082 parameters (1 M of them in the
    /// embedding), 54 tensors.
    /// </summary>
    public static GptShape TransformerShape { get; } = new(Vocab: 4096, MaxLen: 64, Width: 256, Heads: 4, Layers: 4);

    /// <summary>
    /// Many small tensors (12 blocks of width 64: 150 tensors, 0.64 M parameters), so that an optimizer step is dominated
    /// by per-tensor overhead rather than arithmetic.
    /// </summary>
    public static GptShape ManyTensorsShape { get; } = new(Vocab: 512, MaxLen: 32, Width: 64, Heads: 4, Layers: 12);

    /// <summary>Classes of the transformer workloads' synthetic task (<see cref="SyntheticTokens"/>).</summary>
    public const int Classes = 10;

    /// <summary>
    /// <see cref="TransformerShape"/> as a classifier: batches of <see cref="GptShape.BenchmarkBatch"/> sequences of full
    /// length from <see cref="SyntheticTokens"/>.
    /// </summary>
    public static StepWorkload Transformer(long seed, int batches = 4) =>
        OfTransformer("transformer", TransformerShape, GptShape.BenchmarkBatch, seed, batches);

    /// <summary><see cref="ManyTensorsShape"/> as a classifier, with batches of 32 full-length sequences.</summary>
    public static StepWorkload ManyTensors(long seed, int batches = 1) =>
        OfTransformer("many-tensor transformer", ManyTensorsShape, 32, seed, batches);

    /// <summary>An MLP 784-256-256-10 (Fashion-MNIST sized) on batches of 128 N(0, 1) inputs with uniform labels.</summary>
    public static StepWorkload Mlp(long seed, int batches = 4)
    {
        var model = new Research.Core.Models.Mlp(784, [256, 256], 10);
        Init.LinearDefault(model, Seeds.Generator(seed, "bench.init"));
        return new StepWorkload("mlp 784-256-256-10", model, ImageSized(seed, batches), new ClassificationTask(), HandWrittenLoop.CrossEntropy);
    }

    /// <summary>The <see cref="Research.Core.Models.Cnn"/> (two 3×3 convolutions, 28×28 inputs) on the MLP's batches.</summary>
    public static StepWorkload Cnn(long seed, int batches = 4) =>
        new("cnn 28×28 conv 32-64, fc 128", Research.Core.Models.Cnn.Create(10, Seeds.Generator(seed, "bench.init")), ImageSized(seed, batches),
            new ClassificationTask(), HandWrittenLoop.CrossEntropy);

    /// <summary>Batches of 128 N(0, 1) inputs of 784 (a Fashion-MNIST image's size) with uniform labels 0–9.</summary>
    static List<Batch> ImageSized(long seed, int batches)
    {
        var data = Seeds.Generator(seed, "bench.data");
        return Enumerable.Range(0, batches).Select(_ => new Batch(
            randn([128, 784], generator: data),
            randint(0, 10, [128], dtype: ScalarType.Int64, generator: data))).ToList();
    }

    static StepWorkload OfTransformer(string name, GptShape shape, int batchSize, long seed, int batches)
    {
        var model = Research.Core.Models.Gpt.Create(shape, Seeds.Generator(seed, "bench.init"), classes: Classes);
        using var data = SyntheticTokens.Make(batchSize * batches, (int)shape.MaxLen, (int)shape.Vocab, Classes,
            Seeds.Generator(seed, "bench.data"));
        var list = Enumerable.Range(0, batches).Select(i => new Batch([
            new(Batch.InputIds, data.Inputs.narrow(0, i * batchSize, batchSize).clone()),
            new(Batch.Targets, data.Targets.narrow(0, i * batchSize, batchSize).clone())])).ToList();
        return new StepWorkload(name, model, list, new ClassificationTask(), HandWrittenLoop.CrossEntropy,
            (long)batchSize * shape.MaxLen);
    }

    public void Dispose()
    {
        Model.Dispose();
        foreach (var b in Batches) b.DisposeTensors();
    }
}
