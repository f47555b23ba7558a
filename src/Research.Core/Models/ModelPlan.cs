using Research.Abstractions;
using Research.Core.Config;
using Research.Core.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Models;

/// <summary>
/// A run's model, decided once from its config and data: the kind, its options completed by what the <c>init_from</c>
/// file decides (<see cref="ModelKind.Resolve"/>), and what it is built for. Every instance of the run's architecture —
/// the trained model, the shadow model, the Hessian analysis's snapshots — is created from it, so all agree.
/// </summary>
public sealed class ModelPlan
{
    public ModelKind Kind { get; }
    /// <summary>The kind's options, resolved against the <c>init_from</c> file.</summary>
    public object Options { get; }
    public ModelContext Context { get; }

    ModelPlan(ModelKind kind, object options, ModelContext context) => (Kind, Options, Context) = (kind, options, context);

    /// <summary>The plan of a config's model for data of <paramref name="shape"/>, its items of <paramref name="features"/>
    /// features as loaded (0: the shape's); resolving <c>init_from</c> fetches a published model.</summary>
    public static ModelPlan Of(RunConfig c, DataShape shape, long features = 0)
    {
        var kind = ModelKinds.Of(c.Model);
        var target = new ModelTarget(features > 0 ? features : shape.Features, shape.Classes);
        var context = new ModelContext(c.Model.Keys, shape, target, ModelFactory.InitPath(c.Model, c.File)) 
        {
            Weights = WeightFiles.Instance,
            ResolveFile = value => ModelFactory.InitPath(c.Model with { InitFrom = value }, c.File),
        };
        return new ModelPlan(kind, kind.Resolve(c.Model.Options, context), context);
    }

    /// <summary>A new model, every value drawn from <paramref name="generator"/>.</summary>
    public nn.Module<Tensor, Tensor> Create(Generator generator) => Kind.Create(Options, Context, generator);

    /// <summary>Whether <c>init_from</c> names weights to load.</summary>
    public bool LoadsWeights => Context.InitPath.Length > 0;

    /// <summary>Loads the <c>init_from</c> weights into <paramref name="model"/> as the kind reads them; returns what was loaded.</summary>
    public string Load(nn.Module<Tensor, Tensor> model) => Kind.Load(model, Options, Context);

    /// <summary>Writes <paramref name="model"/>'s weights in the layout the kind publishes.</summary>
    public void Save(nn.Module<Tensor, Tensor> model, string path) => Kind.Save(model, Options, Context, path);

    /// <summary>Parameter-name prefixes of the model's head (empty when it has none).</summary>
    public IReadOnlyList<string> Head => Kind.Head(Options, Context);

    /// <summary>The submodule whose input is the model's representation, read by the probes.</summary>
    public string Representation => Kind.Representation(Options);
}
