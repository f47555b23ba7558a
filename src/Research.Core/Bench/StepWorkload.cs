using Research.Abstractions;
using Research.Core.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Bench;

/// <summary>
/// A model and a fixed list of batches for timing training steps. The same seed gives a bitwise-identical
/// model and batches, so a baseline and a candidate can each step their own copy.
/// </summary>
public sealed class StepWorkload(string name, nn.Module<Tensor, Tensor> model, IReadOnlyList<Batch> batches) : IDisposable
{
    public string Name { get; } = name;
    public nn.Module<Tensor, Tensor> Model { get; } = model;
    public IReadOnlyList<Batch> Batches { get; } = batches;
    public long ParameterCount => Model.parameters().Sum(p => p.numel());
    public int TensorCount => Model.parameters().Count();

    /// <summary>
    /// <see cref="TinyTransformerShape.Benchmark"/>: batches of <see cref="TinyTransformerShape.BenchmarkBatch"/> sequences of
    /// full length from <see cref="SyntheticTokens"/>.
    /// </summary>
    public static StepWorkload Transformer(long seed, int batches = 4) =>
        OfTransformer("transformer", TinyTransformerShape.Benchmark, TinyTransformerShape.BenchmarkBatch, seed, batches);

    /// <summary><see cref="TinyTransformerShape.ManyTensors"/> with batches of 32 full-length sequences.</summary>
    public static StepWorkload ManyTensors(long seed, int batches = 1) =>
        OfTransformer("many-tensor transformer", TinyTransformerShape.ManyTensors, 32, seed, batches);

    /// <summary>An MLP 784-256-256-10 (Fashion-MNIST sized) on batches of 128 N(0, 1) inputs with uniform labels.</summary>
    public static StepWorkload Mlp(long seed, int batches = 4)
    {
        var model = new Models.Mlp(784, [256, 256], 10);
        Init.LinearDefault(model, Seeds.Generator(seed, "bench.init"));
        var data = Seeds.Generator(seed, "bench.data");
        var list = Enumerable.Range(0, batches).Select(_ => new Batch(
            randn([128, 784], generator: data),
            randint(0, 10, [128], dtype: ScalarType.Int64, generator: data))).ToList();
        return new StepWorkload("mlp 784-256-256-10", model, list);
    }

    static StepWorkload OfTransformer(string name, TinyTransformerShape shape, int batchSize, long seed, int batches)
    {
        var model = TinyTransformer.Create(shape, Seeds.Generator(seed, "bench.init"));
        using var data = SyntheticTokens.Make(batchSize * batches, (int)shape.MaxLen, (int)shape.Vocab, (int)shape.Classes,
            Seeds.Generator(seed, "bench.data"));
        var list = Enumerable.Range(0, batches).Select(i => new Batch(
            data.Inputs.narrow(0, i * batchSize, batchSize).clone(),
            data.Targets.narrow(0, i * batchSize, batchSize).clone())).ToList();
        return new StepWorkload(name, model, list);
    }

    public void Dispose()
    {
        Model.Dispose();
        foreach (var b in Batches) b.DisposeTensors();
    }
}
