using System.Reflection;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Abstractions;

/// <summary>Marks the options record of a <c>[model]</c> kind and names the kind (<c>[ModelOptions("gpt")]</c>): the
/// keys that kind alone reads, bound from the <c>[model]</c> table beside the keys every kind shares.</summary>
[AttributeUsage(AttributeTargets.Class, Inherited = false)]
public sealed class ModelOptionsAttribute(string kind) : Attribute
{
    public string Kind { get; } = kind;
}

/// <summary>The keys of <c>[model]</c> every kind shares, as a kind sees them (read only).</summary>
/// <param name="Kind">The kind's name.</param>
/// <param name="Outputs">Outputs of the head asked for (0: the data's classes or vocabulary).</param>
/// <param name="InitFrom">The <c>init_from</c> value as written (a published model's name, a file, or empty).</param>
/// <param name="Strict">Every tensor of the file must match a parameter and the other way round.</param>
/// <param name="Reinit">Parameter-name prefixes re-initialised after loading.</param>
public sealed record ModelKeys(string Kind, int Outputs, string InitFrom, bool Strict, IReadOnlyList<string> Reinit);

/// <summary>What a model is built for: the data's feature width (flat inputs) and the outputs it needs.</summary>
/// <param name="Features">D of flat inputs [B, D]; the context T for text.</param>
/// <param name="Outputs">Classes of the head, or the vocabulary of a language model.</param>
public sealed record ModelTarget(long Features, int Outputs);

/// <summary>The core's readers and writers of weight files by parameter name, which a kind's default
/// <see cref="ModelKind.Load"/> and <see cref="ModelKind.Save"/> use.</summary>
public interface IWeightFiles
{
    /// <summary>Loads the file at <see cref="ModelContext.InitPath"/> by this framework's parameter names (safetensors,
    /// verified; strict or not as [model] says; <c>reinit</c> prefixes may be absent); returns what was loaded.</summary>
    string LoadByName(nn.Module<Tensor, Tensor> model, ModelContext context);

    /// <summary>Writes the module's parameters and buffers by name (safetensors, with a manifest).</summary>
    void SaveByName(nn.Module<Tensor, Tensor> model, string path);
}

/// <summary>What a kind builds a model for, besides its own options: the shared <c>[model]</c> keys, the data, the target,
/// the file <c>init_from</c> resolves to (empty when none), and the core's weight files.</summary>
public sealed record ModelContext(ModelKeys Model, DataShape Data, ModelTarget Target, string InitPath)
{
    /// <summary>The head's outputs: <c>model.outputs</c> when set, else the target's.</summary>
    public int Outputs => Model.Outputs > 0 ? Model.Outputs : Target.Outputs;

    /// <summary>The core's weight files (by parameter name).</summary>
    public IWeightFiles Weights { get; init; } = NoWeightFiles.Instance;

    /// <summary>Resolves another <c>init_from</c>-like value as <c>[model] init_from</c> is resolved (a published model's
    /// weights, unpacked; else a path relative to the config file): a kind composed of other kinds loads each component
    /// from its own file this way. By default a path relative to the working directory.</summary>
    public Func<string, string> ResolveFile { get; init; } = Path.GetFullPath;

    sealed class NoWeightFiles : IWeightFiles
    {
        public static readonly NoWeightFiles Instance = new();
        public string LoadByName(nn.Module<Tensor, Tensor> model, ModelContext context) => throw new InvalidOperationException("no weight files here");
        public void SaveByName(nn.Module<Tensor, Tensor> model, string path) => throw new InvalidOperationException("no weight files here");
    }
}

/// <summary>
/// A model that reads a batch's named tensors itself (token ids with their attention mask; an image and token ids) rather
/// than one tensor. A model that is not one gets <c>input</c> (features, images), or <c>input_ids</c> for a token model.
/// </summary>
public interface IBatchModule
{
    /// <summary>The logits of a batch.</summary>
    Tensor Logits(Batch batch);
}

/// <summary>
/// A kind of model (<c>[model] kind = "…"</c>): its options record, its checks against the data, how it is created from a
/// seeded generator, how published or saved weights are read and written, which parameters are its head, where its
/// representation is read for probes, and its memory shape. Write a kind as a <see cref="ModelKind{TOptions}"/>; the
/// built-in kinds are written the same way, and a plugin DLL's public non-abstract kinds are found by type.
/// </summary>
/// <remarks>
/// <see cref="Create"/> makes the module on the CPU, every value drawn from the generator: every process of a run makes the
/// same module, and the core moves it to the run's device. A module creates nothing on a fixed device in its forward
/// (it follows its input's).
/// </remarks>
public abstract class ModelKind
{
    /// <summary>The kind's name, as <c>[model] kind</c> writes it: its options record's <see cref="ModelOptionsAttribute"/>.</summary>
    public string Name => KindOf(OptionsType);

    /// <summary>One line for <c>research config schema</c>: what the network is.</summary>
    public abstract string Summary { get; }

    /// <summary>The options record (a class with a parameterless constructor, marked <see cref="ModelOptionsAttribute"/>).</summary>
    public abstract Type OptionsType { get; }

    /// <summary>Published models this kind reads through <c>init_from</c>, by name.</summary>
    public virtual IReadOnlyList<string> Published => [];

    /// <summary>Whether <c>init_from</c> may name an ONNX file for this kind.</summary>
    public virtual bool ReadsOnnx => false;

    /// <summary>The problems of this kind on this data, before anything is built; keys are full (<c>model.heads</c>).</summary>
    public abstract IEnumerable<OptionError> Check(object options, ModelKeys model, DataShape data);

    /// <summary>The options with what the <c>init_from</c> file decides filled in (a ResNet's stages, a Llama's
    /// <c>config.json</c>); read once per run, before the first model is created.</summary>
    public virtual object Resolve(object options, ModelContext context) => options;

    /// <summary>A new model, every value drawn from <paramref name="generator"/> (the kind's reference initialisation).</summary>
    public abstract nn.Module<Tensor, Tensor> Create(object options, ModelContext context, Generator generator);

    /// <summary>Loads the weights of <see cref="ModelContext.InitPath"/> into <paramref name="model"/>; returns what was
    /// loaded, for the run's log. By default by this framework's parameter names (<see cref="IWeightFiles.LoadByName"/>).</summary>
    public virtual string Load(nn.Module<Tensor, Tensor> model, object options, ModelContext context) => context.Weights.LoadByName(model, context);

    /// <summary>Writes a model's weights in the layout this kind publishes (by default this framework's names).</summary>
    public virtual void Save(nn.Module<Tensor, Tensor> model, object options, ModelContext context, string path) => context.Weights.SaveByName(model, path);

    /// <summary>Parameter-name prefixes of the head: the layer a classifier adds on the body (new when a published body is
    /// loaded, re-initialised by <c>reinit = ["head"]</c>). Empty when the model has none.</summary>
    public virtual IReadOnlyList<string> Head(object options, ModelContext context) => [HeadModule];

    /// <summary>The submodule whose input is the model's representation (what the probes read): by default the head.</summary>
    public virtual string Representation(object options) => HeadModule;

    /// <summary>The submodules repeated along the depth (a transformer's blocks), by name: where activation checkpointing
    /// and per-block figures cut the model. Empty when the model has none.</summary>
    public virtual IReadOnlyList<string> Blocks(object options, ModelContext context) => [];

    /// <summary>The shape that sets the activation memory of a transformer (Korthikanti et al. 2022), or null for kinds
    /// that are not one.</summary>
    public virtual TransformerShape? MemoryShape(object options, ModelKeys model, DataShape data, int batchSize) => null;

    /// <summary>The name every built-in classifier gives its final Linear.</summary>
    public const string HeadModule = "head";

    /// <summary>The kind an options type belongs to (its <see cref="ModelOptionsAttribute"/>).</summary>
    public static string KindOf(Type options) =>
        options.GetCustomAttribute<ModelOptionsAttribute>()?.Kind
        ?? throw new ArgumentException($"{options.Name} is not a [model] kind's options record: it has no [ModelOptions(\"kind\")] attribute");

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
    public abstract IEnumerable<OptionError> Check(TOptions options, ModelKeys model, DataShape data);

    /// <inheritdoc cref="ModelKind.Resolve"/>
    public virtual TOptions Resolve(TOptions options, ModelContext context) => options;

    /// <inheritdoc cref="ModelKind.Create"/>
    public abstract nn.Module<Tensor, Tensor> Create(TOptions options, ModelContext context, Generator generator);

    /// <inheritdoc cref="ModelKind.Load"/>
    public virtual string Load(nn.Module<Tensor, Tensor> model, TOptions options, ModelContext context) => context.Weights.LoadByName(model, context);

    /// <inheritdoc cref="ModelKind.Save"/>
    public virtual void Save(nn.Module<Tensor, Tensor> model, TOptions options, ModelContext context, string path) => context.Weights.SaveByName(model, path);

    /// <inheritdoc cref="ModelKind.Head"/>
    public virtual IReadOnlyList<string> Head(TOptions options, ModelContext context) => [HeadModule];

    /// <inheritdoc cref="ModelKind.Representation"/>
    public virtual string Representation(TOptions options) => HeadModule;

    /// <inheritdoc cref="ModelKind.Blocks"/>
    public virtual IReadOnlyList<string> Blocks(TOptions options, ModelContext context) => [];

    /// <inheritdoc cref="ModelKind.MemoryShape"/>
    public virtual TransformerShape? MemoryShape(TOptions options, ModelKeys model, DataShape data, int batchSize) => null;

    public sealed override IEnumerable<OptionError> Check(object options, ModelKeys model, DataShape data) => Check(Typed(options), model, data);
    public sealed override object Resolve(object options, ModelContext context) => Resolve(Typed(options), context);
    public sealed override nn.Module<Tensor, Tensor> Create(object options, ModelContext context, Generator generator) => Create(Typed(options), context, generator);
    public sealed override string Load(nn.Module<Tensor, Tensor> model, object options, ModelContext context) => Load(model, Typed(options), context);
    public sealed override void Save(nn.Module<Tensor, Tensor> model, object options, ModelContext context, string path) => Save(model, Typed(options), context, path);
    public sealed override IReadOnlyList<string> Head(object options, ModelContext context) => Head(Typed(options), context);
    public sealed override string Representation(object options) => Representation(Typed(options));
    public sealed override IReadOnlyList<string> Blocks(object options, ModelContext context) => Blocks(Typed(options), context);
    public sealed override TransformerShape? MemoryShape(object options, ModelKeys model, DataShape data, int batchSize) => MemoryShape(Typed(options), model, data, batchSize);

    static TOptions Typed(object options) => options as TOptions
        ?? throw new ArgumentException($"{options.GetType().Name} are not the options of this kind ({typeof(TOptions).Name})");
}
