using Research.Abstractions;
using System.Collections.Concurrent;
using Research.Core.Config;
using Research.Core.Data;
using Research.Core.Memory;

namespace Research.Core.Models;

/// <summary>
/// The registry of model kinds: the built-in ones, and any a caller registers (a kind defined in another assembly — a
/// test's, say). The core asks it for the kind of a <c>[model]</c> section and never names a kind itself.
/// </summary>
public static class ModelKinds
{
    /// <summary>The kinds this assembly defines, one file each in Models/Kinds/, by name. Found by type, as the binder finds
    /// their options (<see cref="ModelKindOptions"/>): adding a kind is adding its file.</summary>
    public static IReadOnlyList<ModelKind> BuiltIn { get; } = typeof(ModelKinds).Assembly.GetTypes()
        .Where(t => t.IsSubclassOf(typeof(ModelKind)) && !t.IsAbstract && t.GetConstructor(Type.EmptyTypes) is not null)
        .Select(t => (ModelKind)Activator.CreateInstance(t)!)
        .OrderBy(k => k.Name, StringComparer.Ordinal).ToList();

    static readonly ConcurrentDictionary<string, ModelKind> Registered = new(StringComparer.Ordinal);

    /// <summary>Every kind: the built-in ones, then the registered ones, each by its name.</summary>
    public static IReadOnlyList<ModelKind> All => [.. BuiltIn, .. Registered.Values.OrderBy(k => k.Name, StringComparer.Ordinal)];

    /// <summary>
    /// Adds a kind, so that configs may name it and the builder makes it: its options type joins the binder's kinds
    /// (<see cref="ModelKindOptions.Register"/>). Registering the same kind again does nothing; another kind of a name
    /// already taken is refused.
    /// </summary>
    public static void Register(ModelKind kind)
    {
        lock (Gate) RegisterLocked(kind);
    }

    static readonly object Gate = new();

    static void RegisterLocked(ModelKind kind)
    {
        if (Find(kind.Name) is { } taken)
        {
            // The same type loaded again (a plugin DLL read by another host in the same process): the first one serves, so
            // every config bound in the process has options of the type its kind reads.
            if (taken.GetType() == kind.GetType() || (!BuiltIn.Contains(taken) && Registries.SameType(taken.GetType(), kind.GetType()))) return;
            throw new ArgumentException($"model kind '{kind.Name}' is taken by {taken.GetType().FullName}");
        }
        ModelKindOptions.Register(kind.OptionsType);
        Registered.TryAdd(kind.Name, kind);
    }

    /// <summary>The kind of a name, or null.</summary>
    public static ModelKind? Find(string name) =>
        BuiltIn.FirstOrDefault(k => k.Name == name) ?? Registered.GetValueOrDefault(name);

    /// <summary>The kind a <c>[model]</c> section names.</summary>
    public static ModelKind Of(ModelSection model) => Find(model.Kind)
        ?? throw new InvalidOperationException($"model kind '{model.Kind}' has options but no kind registered (ModelKinds.Register)");

    /// <summary>The kind that reads a published model, or null.</summary>
    public static ModelKind? Reading(string published) => All.FirstOrDefault(k => k.Published.Contains(published));

    /// <summary>
    /// The problems of a model and data pairing, each as (key, message), before anything is built: the kind's own checks,
    /// and a published model given to another kind than the one that reads it.
    /// </summary>
    public static IEnumerable<OptionError> Check(ModelSection model, DataShape data)
    {
        var kind = Of(model);
        foreach (var problem in kind.Check(model.Options, model.Keys, data)) yield return problem;
        if (ModelFactory.PublishedName(model.InitFrom) is { } published && !kind.Published.Contains(published))
            yield return new("model.init_from", $"\"{published}\" is a {Reading(published)?.Name ?? "model no kind reads"}, and model.kind is \"{model.Kind}\"");
    }

    /// <summary>The activation-memory shape of a planned model: its options resolved against the <c>init_from</c> file (a
    /// Llama's config.json), or null when its kind is not a transformer.</summary>
    public static TransformerShape? MemoryShape(RunConfig c, ModelPlan plan) => plan.Kind.MemoryShape(plan.Options, c.Model.Keys, plan.Context.Data, c.Data.BatchSize);
}
