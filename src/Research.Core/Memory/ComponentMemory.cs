using System.Text.RegularExpressions;
using Research.Core.Optim;
using Research.Core.Precision;
using static TorchSharp.torch;

namespace Research.Core.Memory;

/// <summary>
/// The model state of one component of a model — a vision-language model's vision encoder, connector and language
/// model, or whatever <c>[[optimizer.components]]</c> names — predicted from its parameter counts and read off the
/// tensors the model and the optimizer hold, as <see cref="ModelMemory"/> does for the whole model.
/// </summary>
/// <param name="Name">The component's name: the config's component name, <c>other</c> for what no pattern matches, or
/// the top-level module's name.</param>
/// <param name="Parameters">Its parameters, trainable and frozen.</param>
/// <param name="Trainable">Those the optimizer holds.</param>
/// <param name="Predicted"><see cref="ModelMemory.Predict"/> of its trainable and frozen counts.</param>
/// <param name="Allocated">The bytes of its own tensors (weights) and of its slices of the optimizer's flat tensors.</param>
public sealed record ComponentMemory(string Name, long Parameters, long Trainable, ModelMemory Predicted, ModelMemory Allocated)
{
    /// <summary>
    /// The component of a parameter name: the first rule whose pattern matches, and <c>other</c> for a name none
    /// matches (<see cref="ParameterGroups.Build"/> assigns learning rates by the same rule); without rules, the
    /// top-level module (<c>vision_encoder.stem.weight</c> → <c>vision_encoder</c>).
    /// </summary>
    public static Func<string, string> ComponentOf(IReadOnlyList<ComponentRule> rules) =>
        rules.Count > 0
            ? name => rules.FirstOrDefault(r => Regex.IsMatch(name, r.Pattern))?.Name ?? "other"
            : name => name.Split('.')[0];

    /// <summary>
    /// Every component of <paramref name="model"/>, in the order its first parameter comes. Weights are the bytes of the
    /// component's parameters; gradients, the fp32 master weights and gradients and each optimizer moment are the bytes
    /// of the component's slices (one per trainable parameter, <see cref="FlatBuffer.ViewOf"/>) of the optimizer's flat
    /// tensors. The components partition the parameters, so they sum to <see cref="ModelMemory.Measure"/> exactly when
    /// the slices cover the flat tensors.
    /// </summary>
    public static IReadOnlyList<ComponentMemory> Of(nn.Module model, Optimizer optimizer, Func<string, string> componentOf,
        PrecisionMode precision, string optimizerName, double momentum = 0)
    {
        var parameters = model.named_parameters().Select(p => (Name: p.name, Value: (Tensor)p.parameter, Component: componentOf(p.name))).ToList();
        var slots = optimizer.Buffer.Slots.Select(s => (Slot: s, Component: componentOf(s.Name))).ToList();
        var trainable = slots.Select(s => s.Slot.Name).ToHashSet(StringComparer.Ordinal);
        var result = new List<ComponentMemory>();
        foreach (var component in parameters.Select(p => p.Component).Distinct())
        {
            var own = parameters.Where(p => p.Component == component).ToList();
            var ownSlots = slots.Where(s => s.Component == component).Select(s => s.Slot).ToList();
            long count = own.Sum(p => p.Value.numel());
            long trained = own.Where(p => trainable.Contains(p.Name)).Sum(p => p.Value.numel());
            var allocated = new ModelMemory(
                own.Sum(p => Bytes(p.Value)),
                Slices(optimizer.Buffer.Grads, ownSlots),
                optimizer.HasMasterCopy ? Slices(optimizer.Master, ownSlots) : 0,
                optimizer.HasMasterCopy ? Slices(optimizer.MasterGrad, ownSlots) : 0,
                optimizer.State().Sum(s => Slices(s.Flat, ownSlots)));
            result.Add(new ComponentMemory(component, count, trained,
                ModelMemory.Predict(trained, count - trained, precision, optimizerName, momentum), allocated));
        }
        return result;
    }

    /// <summary>The components' figures added up (to compare with the whole model's).</summary>
    public static ModelMemory Sum(IEnumerable<ModelMemory> parts) => parts.Aggregate(new ModelMemory(0, 0, 0, 0, 0), (a, b) =>
        new(a.Weights + b.Weights, a.Gradients + b.Gradients, a.MasterWeights + b.MasterWeights, a.MasterGradients + b.MasterGradients, a.Moments + b.Moments));

    static long Bytes(Tensor t) => t.numel() * t.element_size();

    /// <summary>The bytes of the slots' views of a flat tensor laid out like the optimizer's buffer.</summary>
    static long Slices(Tensor flat, IEnumerable<Slot> slots) => slots.Sum(s =>
    {
        using var view = FlatBuffer.ViewOf(flat, s);
        return Bytes(view);
    });
}
