using System.Collections.Concurrent;
using System.Reflection;
using Research.Abstractions;
using Tomlyn.Model;

namespace Research.Core.Config;

/// <summary>
/// The <c>[model]</c> kinds a config may name, each with its options type: the records of this assembly marked
/// <see cref="ModelOptionsAttribute"/> (the built-in kinds, Research.Core.Models.Kinds), and any a caller registers
/// (Research.Core.Models.ModelKinds.Register does, for a kind defined elsewhere). The binder reads the kinds from here, so
/// a config is bound and checked without building a model.
/// </summary>
public static class ModelKindOptions
{
    static readonly ConcurrentDictionary<string, Type> Registered = new(StringComparer.Ordinal);

    static readonly Lazy<IReadOnlyDictionary<string, Type>> BuiltIn = new(() =>
        typeof(ModelKindOptions).Assembly.GetTypes()
            .Select(t => (Type: t, Attribute: t.GetCustomAttribute<ModelOptionsAttribute>()))
            .Where(x => x.Attribute is not null)
            .ToDictionary(x => x.Attribute!.Kind, x => x.Type, StringComparer.Ordinal));

    /// <summary>Every kind and its options type, built-in kinds first, by name.</summary>
    public static IReadOnlyList<(string Kind, Type Options)> All =>
        BuiltIn.Value.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => (kv.Key, kv.Value))
            .Concat(Registered.Where(kv => !BuiltIn.Value.ContainsKey(kv.Key)).OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => (kv.Key, kv.Value)))
            .ToList();

    /// <summary>The options type of a kind, or null when no kind has that name.</summary>
    public static Type? Find(string kind) =>
        BuiltIn.Value.TryGetValue(kind, out var t) || Registered.TryGetValue(kind, out t) ? t : null;

    /// <summary>The kind an options type belongs to (its <see cref="ModelOptionsAttribute"/>).</summary>
    public static string KindOf(Type options) =>
        options.GetCustomAttribute<ModelOptionsAttribute>()?.Kind
        ?? throw new ArgumentException($"{options.Name} is not a [model] kind's options record: it has no [ModelOptions(\"kind\")] attribute");

    /// <summary>Adds a kind's options type. A kind's keys must not be shared keys of <see cref="ModelSection"/>; a name
    /// already taken by another options type is refused.</summary>
    public static void Register(Type options)
    {
        var kind = KindOf(options);
        if (OptionSchema.Of(options).FirstOrDefault(o => SharedKeys.Contains(o.Key)) is { } shared)
            throw new ArgumentException($"kind '{kind}': its option '{shared.Key}' is a key every [model] kind shares ({string.Join(", ", SharedKeys)})");
        if (Find(kind) is { } taken && taken != options)
            throw new ArgumentException($"kind '{kind}' is taken by {taken.FullName}; {options.FullName} cannot register under that name");
        Registered[kind] = options;
    }

    /// <summary>The keys of <see cref="ModelSection"/>, which every kind reads.</summary>
    public static IReadOnlyList<string> SharedKeys { get; } = OptionSchema.Of(typeof(ModelSection)).Select(o => o.Key).ToList();

    /// <summary>A kind's option keys, with the other spellings (aliases) its binder accepts.</summary>
    static IEnumerable<string> KeysOf(Type options) => OptionSchema.Of(options).SelectMany(o => o.Aliases.Prepend(o.Key));

    /// <summary>
    /// Binds a <c>[model]</c> table: the shared keys into <see cref="ModelSection"/>, the chosen kind's keys into its options
    /// record. A key of another kind is an error naming the kinds that have it; a key of none is an unknown key, with the
    /// keys this kind accepts. Errors are added to <paramref name="errors"/>, all at once.
    /// </summary>
    public static ModelSection Bind(TomlTable? table, string file, List<ConfigError> errors)
    {
        table ??= new TomlTable();
        var kind = table.TryGetValue("kind", out var k) && k is string s ? s : new ModelSection().Kind;
        var options = Find(kind);
        var shared = KeysOf(typeof(ModelSection)).ToHashSet(StringComparer.Ordinal);
        var own = options is null ? [] : KeysOf(options).ToHashSet(StringComparer.Ordinal);
        var rest = new List<string>();
        foreach (var key in table.Keys)
        {
            if (shared.Contains(key) || own.Contains(key)) continue;
            rest.Add(key);
            var owners = All.Where(o => KeysOf(o.Options).Contains(key)).Select(o => o.Kind).ToList();
            if (owners.Count > 0)
                errors.Add(new(file, $"model.{key}", $"is a key of kind {(owners.Count == 1 ? owners[0] : $"{string.Join(", ", owners[..^1])} and {owners[^1]}")}, not of {kind}"));
            else if (options is not null)
            {
                var known = shared.Concat(OptionSchema.Of(options).Select(o => o.Key)).Distinct().Order(StringComparer.Ordinal).ToList();
                errors.Add(new(file, $"model.{key}", $"unknown key{OptionsBinder.Suggestion(key, known)} (known keys of kind {kind}: {string.Join(", ", known)})"));
            }
        }
        ModelSection model;
        try { model = OptionsBinder.Bind<ModelSection>(table, file, "model", [.. own, .. rest]); }
        catch (ConfigException e) { errors.AddRange(e.Errors); model = new ModelSection { Kind = kind }; }
        if (options is null)
        {
            // A kind given as a string names one of the kinds; any other type the binder has already reported.
            if (k is null or string)
                errors.Add(new(file, "model.kind", $"\"{kind}\" is not a model kind (one of: {string.Join(", ", All.Select(o => o.Kind))})"));
            return model;
        }
        try { return model.WithOptions(OptionsBinder.Bind(options, table, file, "model", [.. shared, .. rest])); }
        catch (ConfigException e) { errors.AddRange(e.Errors); return model; }
    }
}
