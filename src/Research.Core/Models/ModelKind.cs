using Research.Core.Checkpoints;
using Research.Core.Config;
using Research.Core.Data;
using Research.Core.Memory;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Models;

/// <summary>What a model is built for: the data's feature width (flat inputs) and the outputs it needs.</summary>
/// <param name="Features">D of flat inputs [B, D]; the context T for text.</param>
/// <param name="Outputs">Classes of the head, or the vocabulary of a language model.</param>
public sealed record ModelTarget(long Features, int Outputs);

/// <summary>What a kind builds a model for, besides its own options: the shared <c>[model]</c> keys, the data, the target,
/// and the file <c>init_from</c> resolves to (empty when none).</summary>
public sealed record ModelContext(ModelSection Model, DataShape Data, ModelTarget Target, string InitPath)
{
    /// <summary>The head's outputs: <c>model.outputs</c> when set, else the target's.</summary>
    public int Outputs => Model.Outputs > 0 ? Model.Outputs : Target.Outputs;
}

/// <summary>
/// A kind of model (<c>[model] kind = "…"</c>): its options record, its checks against the data, how it is created from a
/// seeded generator, how published or saved weights are read and written, which parameters are its head, where its
/// representation is read for probes, and its memory shape. One type per kind (Models/Kinds/), listed in
/// <see cref="ModelKinds"/>; the core asks the registry and never names a kind. Write a kind as a
/// <see cref="ModelKind{TOptions}"/>.
/// </summary>
public abstract class ModelKind
{
    /// <summary>The kind's name, as <c>[model] kind</c> writes it: its options record's <see cref="ModelOptionsAttribute"/>.</summary>
    public string Name => ModelKindOptions.KindOf(OptionsType);

    /// <summary>One line for <c>research config schema</c>: what the network is.</summary>
    public abstract string Summary { get; }

    /// <summary>The options record (a class with a parameterless constructor, marked <see cref="ModelOptionsAttribute"/>).</summary>
    public abstract Type OptionsType { get; }

    /// <summary>Published models (<see cref="PublishedModels"/>) this kind reads through <c>init_from</c>.</summary>
    public virtual IReadOnlyList<string> Published => [];

    /// <summary>Whether <c>init_from</c> may name an ONNX file for this kind.</summary>
    public virtual bool ReadsOnnx => false;

    /// <summary>The problems of this kind on this data, each as (key, message), before anything is built.</summary>
    public abstract IEnumerable<(string Key, string Message)> Check(object options, ModelSection model, DataShape data);

    /// <summary>The options with what the <c>init_from</c> file decides filled in (a ResNet's stages, say); read once per run,
    /// before the first model is created.</summary>
    public virtual object Resolve(object options, ModelContext context) => options;

    /// <summary>A new model, every value drawn from <paramref name="generator"/> (the kind's reference initialisation).</summary>
    public abstract nn.Module<Tensor, Tensor> Create(object options, ModelContext context, Generator generator);

    /// <summary>
    /// Loads the weights of the resolved <c>init_from</c> (<see cref="ModelContext.InitPath"/>) into <paramref name="model"/>; returns what
    /// was loaded, for the run's log. By default: safetensors by this framework's parameter names
    /// (<see cref="WeightFile.Load"/>, strict or not; <c>reinit</c> prefixes may be absent).
    /// </summary>
    public virtual string Load(nn.Module<Tensor, Tensor> model, object options, ModelContext context) => LoadByName(model, context);

    /// <summary>Writes a model's weights in the layout this kind publishes (by default this framework's names).</summary>
    public virtual void Save(nn.Module<Tensor, Tensor> model, object options, string path) => WeightFile.Save(model, path);

    /// <summary>Parameter-name prefixes of the head: the layer a classifier adds on the body (new when a published body is
    /// loaded, re-initialised by <c>reinit = ["head"]</c>). Empty when the model has none.</summary>
    public virtual IReadOnlyList<string> Head(object options, ModelContext context) => [HeadModule];

    /// <summary>The submodule whose input is the model's representation (the probes' features,
    /// <c>Research.Core.Probes.Representation</c>): by default the head.</summary>
    public virtual string Representation(object options) => HeadModule;

    /// <summary>The shape that sets the activation memory of a transformer (Korthikanti et al. 2022), or null for kinds
    /// that are not one.</summary>
    public virtual TransformerShape? MemoryShape(object options, ModelSection model, DataShape data, int batchSize) => null;

    /// <summary>The name every built-in classifier gives its final Linear.</summary>
    public const string HeadModule = "head";

    /// <summary>Loads by this framework's parameter names (strict or not, <c>reinit</c> prefixes may be absent); an ONNX file
    /// is refused unless the kind reads one.</summary>
    protected string LoadByName(nn.Module<Tensor, Tensor> model, ModelContext context)
    {
        var path = context.InitPath;
        if (path.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase))
            throw new InvalidDataException($"init_from {path}: an ONNX file is read by kind {string.Join(" or ", ModelKinds.All.Where(k => k.ReadsOnnx).Select(k => k.Name))}, not by {Name}");
        var loaded = WeightFile.Load(model, path, context.Model.Strict, context.Model.Reinit);
        var summary = $"init_from {path}: loaded {loaded.Loaded.Count} tensors";
        if (!loaded.IsComplete)
            summary += $"; missing: [{string.Join(", ", loaded.Missing)}]; unexpected: [{string.Join(", ", loaded.Unexpected)}]" +
                       (loaded.ShapeMismatch.Count > 0 ? $"; shape mismatch: [{string.Join(", ", loaded.ShapeMismatch)}]" : "");
        return summary;
    }

    /// <summary>"; head new (not in the file)" when the model has a head (<see cref="Head"/>), which a published body leaves
    /// as initialised.</summary>
    protected string NewHead(nn.Module<Tensor, Tensor> model, object options, ModelContext context)
    {
        var head = Head(options, context);
        return model.named_parameters().Any(p => head.Any(h => p.name.StartsWith(h + "."))) ? "; head new (not in the file)" : "";
    }
}

/// <summary>A model kind with its options record <typeparamref name="TOptions"/>: the typed form every kind is written in.</summary>
public abstract class ModelKind<TOptions> : ModelKind where TOptions : class, new()
{
    public sealed override Type OptionsType => typeof(TOptions);

    /// <inheritdoc cref="ModelKind.Check"/>
    public abstract IEnumerable<(string Key, string Message)> Check(TOptions options, ModelSection model, DataShape data);

    /// <inheritdoc cref="ModelKind.Resolve"/>
    public virtual TOptions Resolve(TOptions options, ModelContext context) => options;

    /// <inheritdoc cref="ModelKind.Create"/>
    public abstract nn.Module<Tensor, Tensor> Create(TOptions options, ModelContext context, Generator generator);

    /// <inheritdoc cref="ModelKind.Load"/>
    public virtual string Load(nn.Module<Tensor, Tensor> model, TOptions options, ModelContext context) => LoadByName(model, context);

    /// <inheritdoc cref="ModelKind.Save"/>
    public virtual void Save(nn.Module<Tensor, Tensor> model, TOptions options, string path) => WeightFile.Save(model, path);

    /// <inheritdoc cref="ModelKind.Head"/>
    public virtual IReadOnlyList<string> Head(TOptions options, ModelContext context) => [HeadModule];

    /// <inheritdoc cref="ModelKind.Representation"/>
    public virtual string Representation(TOptions options) => HeadModule;

    /// <inheritdoc cref="ModelKind.MemoryShape"/>
    public virtual TransformerShape? MemoryShape(TOptions options, ModelSection model, DataShape data, int batchSize) => null;

    public sealed override IEnumerable<(string Key, string Message)> Check(object options, ModelSection model, DataShape data) => Check(Typed(options), model, data);
    public sealed override object Resolve(object options, ModelContext context) => Resolve(Typed(options), context);
    public sealed override nn.Module<Tensor, Tensor> Create(object options, ModelContext context, Generator generator) => Create(Typed(options), context, generator);
    public sealed override string Load(nn.Module<Tensor, Tensor> model, object options, ModelContext context) => Load(model, Typed(options), context);
    public sealed override void Save(nn.Module<Tensor, Tensor> model, object options, string path) => Save(model, Typed(options), path);
    public sealed override IReadOnlyList<string> Head(object options, ModelContext context) => Head(Typed(options), context);
    public sealed override string Representation(object options) => Representation(Typed(options));
    public sealed override TransformerShape? MemoryShape(object options, ModelSection model, DataShape data, int batchSize) => MemoryShape(Typed(options), model, data, batchSize);

    static TOptions Typed(object options) => options as TOptions
        ?? throw new ArgumentException($"{options.GetType().Name} are not the options of this kind ({typeof(TOptions).Name})");
}
