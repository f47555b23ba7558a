using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Research.Core.Config;
using Research.Core.Data;
using Research.Core.Models;
using Research.Core.Plugins;

namespace Research.Cli;

/// <summary><c>research config schema</c>: every option a config can hold — the core's sections, each model kind's keys
/// under <c>[model] kind = "…"</c>, and each loaded plugin's table — with its type, default, accepted values and
/// documentation, read from the same declarations the binder checks.</summary>
static class ConfigCommand
{
    /// <summary>A block of options: its TOML header (<c>[optimizer]</c>, <c>[[methods]] name = "ewc"</c>) and its options;
    /// for a plugin, <paramref name="Doc"/> is its class's documentation (a method's formula, paper and strength's
    /// convention).</summary>
    sealed record Block(string Section, string Header, string Summary, IReadOnlyList<OptionSpec> Options, string Doc = "");

    public static Command ConfigGroup() => Cli.Group("config", "What a config can hold",
        Cli.Command("schema", "Every option a config can hold — the core's sections and each plugin's table — with type, default, accepted values and documentation",
            Schema,
            Cli.Argument("SECTION", "Only this section or plugin (e.g. optimizer, ewc); default: all", optional: true),
            Cli.Plugins(),
            Cli.Flag("--json", "One JSON object per option, with its bounds and choices")));

    static int Schema(Parsed a)
    {
        var host = Commands.LoadPlugins(a.All("--plugins"));
        var blocks = Blocks(host).ToList();
        if (a.Positional is [var only])
        {
            blocks = blocks.Where(b => b.Section == only || b.Header.Contains($"name = \"{only}\"") || b.Header.Contains($"dataset = \"{only}\"") || b.Header.EndsWith($"kind = \"{only}\"")).ToList();
            if (blocks.Count == 0)
                throw new UsageException($"config schema: no section or plugin '{only}' (sections: {string.Join(", ", ConfigLoader.SectionTypes.Select(s => s.Name))}; " +
                                         "plugins: research plugins list)");
        }
        if (a.Flag("--json")) Console.WriteLine(Json(blocks).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        else Text(blocks, Console.Out);
        return 0;
    }

    static IEnumerable<Block> Blocks(PluginHost host)
    {
        foreach (var (name, type) in ConfigLoader.SectionTypes)
        {
            var specs = OptionSchema.Of(type);
            yield return new(name, $"[{name}]", "", specs.Where(s => !(s.Type.IsArray && s.IsTable)).ToList());
            // An array of tables inside a section ([[optimizer.components]]) is a block of its own.
            foreach (var table in specs.Where(s => s.Type.IsArray && s.IsTable))
                yield return new(name, $"[[{name}.{table.Key}]]", table.Doc, OptionSchema.Of(table.Scalar));
            // Each data source's own keys, written in [data] beside the core's.
            if (type == typeof(DataSection))
                foreach (var source in DataSources.All)
                    yield return new(name, $"[data] dataset = \"{source.Name}\"", source.Summary, OptionSchema.Of(source.OptionsType));
            // Each model kind's own keys, written in [model] beside the shared ones.
            if (type == typeof(ModelSection))
                foreach (var kind in ModelKinds.All)
                    yield return new(name, $"[{name}] kind = \"{kind.Name}\"", kind.Summary, OptionSchema.Of(kind.OptionsType));
        }
        foreach (var (role, section, array) in new[] { (PluginRole.Schedule, "schedule", false), (PluginRole.Method, "methods", true), (PluginRole.ForgettingMetric, "metrics", true) })
            foreach (var p in host.Plugins.Where(p => p.Role == role).OrderBy(p => p.Name, StringComparer.Ordinal))
                yield return new(section, $"{(array ? $"[[{section}]]" : $"[{section}]")} name = \"{p.Name}\"", p.Summary,
                    p.OptionsType is null ? [] : OptionSchema.Of(p.OptionsType), OptionSchema.TypeDoc(p.Type));
    }

    static void Text(IEnumerable<Block> blocks, TextWriter o)
    {
        foreach (var b in blocks)
        {
            o.WriteLine(b.Header + (b.Summary.Length > 0 ? $"    # {b.Summary}" : ""));
            foreach (var line in Wrap(b.Doc, 112)) o.WriteLine($"  # {line}");
            if (b.Options.Count == 0) o.WriteLine("  (no options)");
            foreach (var s in b.Options)
            {
                o.WriteLine($"  {s.Key,-26} {s.TypeName,-18} = {Value(s.Default),-14}{(s.Accepts.Length > 0 ? "  " + s.Accepts : "")}");
                if (s.Doc.Length > 0) o.WriteLine($"  {"",-26} {s.Doc}");
                if (s.Aliases.Count > 0) o.WriteLine($"  {"",-26} also written: {string.Join(", ", s.Aliases)}");
                if (s.AppliesWhen is { } when) o.WriteLine($"  {"",-26} read only when {when}; written otherwise, refused");
                if (!s.PartOfIdentity) o.WriteLine($"  {"",-26} not part of a run's identity");
                else if (s.AddedIn.Length > 0) o.WriteLine($"  {"",-26} added in {s.AddedIn}: at its default, not part of a run's identity");
            }
            o.WriteLine();
        }
    }

    /// <summary>Words of <paramref name="text"/> in lines of at most <paramref name="width"/> characters (a longer word
    /// stands alone).</summary>
    static IEnumerable<string> Wrap(string text, int width)
    {
        var line = "";
        foreach (var word in text.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            if (line.Length > 0 && line.Length + 1 + word.Length > width) { yield return line; line = ""; }
            line = line.Length == 0 ? word : $"{line} {word}";
        }
        if (line.Length > 0) yield return line;
    }

    static JsonArray Json(IEnumerable<Block> blocks)
    {
        var array = new JsonArray();
        foreach (var b in blocks)
            foreach (var s in b.Options)
            {
                var r = s.Rule;
                var node = new JsonObject
                {
                    ["table"] = b.Header, ["key"] = s.Key, ["type"] = s.TypeName, ["default"] = Value(s.Default),
                    ["accepts"] = s.Accepts, ["doc"] = s.Doc,
                };
                if (r is not null && !double.IsNaN(r.Min)) { node["min"] = r.Min; node["min_exclusive"] = r.MinExclusive; }
                if (r is not null && !double.IsNaN(r.Max)) { node["max"] = r.Max; node["max_exclusive"] = r.MaxExclusive; }
                var oneOf = r is { OneOf.Length: > 0 } ? r.OneOf : s.Scalar.IsEnum ? OptionSchema.EnumNames(s.Scalar).ToArray() : null;
                if (!s.PartOfIdentity) node["part_of_identity"] = false;
                if (s.AddedIn.Length > 0) node["added_in"] = s.AddedIn;
                if (s.AppliesWhen is { } when)
                    node["applies_when"] = new JsonObject
                    {
                        ["key"] = when.Key, ["values"] = new JsonArray(when.Values.Select(v => (JsonNode?)JsonValue.Create(v)).ToArray()),
                    };
                if (s.Aliases.Count > 0) node["aliases"] = new JsonArray(s.Aliases.Select(v => (JsonNode?)JsonValue.Create(v)).ToArray());
                if (oneOf != null) node["one_of"] = new JsonArray(oneOf.Select(v => (JsonNode?)JsonValue.Create(v)).ToArray());
                array.Add(node);
            }
        return array;
    }

    /// <summary>A default as TOML writes it; an array of tables by its length.</summary>
    static string Value(object? v) =>
        v is Array { Length: > 0 } arr && OptionSchema.IsOptionsType(arr.GetType().GetElementType()!) ? $"[{arr.Length} tables]" : ConfigValue.Text(v);
}
