using System.Security.Cryptography;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using Research.Abstractions;
using Research.Core.Data;
using Tomlyn.Model;

namespace Research.Core.Config;

/// <summary>
/// "The same config", defined once: the canonical resolved config of a run (every section with every default, plugin
/// options bound through their options types, keys as a config file spells them, sorted), its text, its TOML, and its
/// SHA-256 — the identity resume, the run record, sweeps and <c>research runs compare</c> all use.
/// </summary>
public static class ResolvedConfig
{
    /// <summary>Keys of [run] that say where and how a run executes, not what it computes: its options declared
    /// <see cref="OptionAttribute.PartOfIdentity"/> false.</summary>
    public static IReadOnlyList<string> WhereKeys { get; } =
        OptionSchema.Of(typeof(RunSection)).Where(o => !o.PartOfIdentity).Select(o => o.Key).ToList();

    /// <summary>A config's tables of plugins, with the role that binds them. A study's metrics are computed from the
    /// stored record after training (<c>research metrics</c> recomputes them): they are not part of what a run computes,
    /// so choosing other metrics neither reruns a sweep's trials nor refuses a resume.</summary>
    static readonly (string Key, bool PartOfIdentity)[] PluginTables = [("schedule", true), ("methods", true), ("metrics", false)];

    /// <summary>
    /// The canonical resolved config: a JSON object whose keys are the TOML keys a config file uses (snake_case),
    /// every section of <see cref="RunConfig"/> with every default filled in (run, data, model, optimizer with its
    /// components as an array of tables, train, precision, checkpoint, study), <c>schedule</c> and <c>methods</c>
    /// (an array) as plugin tables bound through the plugin's options type (defaults filled in, enum values in kebab
    /// case as the config accepts them, plus <c>name</c>) — a plugin without an options type, or unknown to the host,
    /// stays as given — and <c>command</c> ("train" or "study"); a study's <c>metrics</c> too (an array of bound
    /// plugin tables: the standard seven and the chosen ones, or with <c>only = true</c> the chosen ones, that key kept on the
    /// first). Values are spelled by <see cref="ConfigValue"/>.
    /// Object keys are sorted ordinally at every depth; arrays keep their order.
    /// </summary>
    /// <exception cref="ConfigException">A plugin's options do not bind (unknown key, wrong type, invalid value).</exception>
    public static JsonObject Canonical(RunConfig config, IPluginOptions host, string command)
    {
        var root = new JsonObject
        {
            ["run"] = ConfigValue.Table(config.Run),
            ["data"] = Data(config.Data),
            ["model"] = Model(config.Model),
            ["optimizer"] = ConfigValue.Table(config.Optimizer),
            ["train"] = ConfigValue.Table(config.Train),
            ["precision"] = ConfigValue.Table(config.Precision),
            ["checkpoint"] = ConfigValue.Table(config.Checkpoint),
            ["study"] = ConfigValue.Table(config.Study),
            ["probes"] = ConfigValue.Table(config.Probes),
            ["schedule"] = Plugin(host, "schedule", config.Schedule, config.File),
            ["methods"] = new JsonArray(config.Methods.Select(r => (JsonNode?)Plugin(host, "methods", r, config.File)).ToArray()),
            ["command"] = command,
        };
        if (command == "study")
        {
            var metrics = config.Metrics.Select(m => Plugin(host, "metrics", m, config.File)).ToList();
            // The set written out, read back, is the same set: without `only` the seven would be added again.
            if (config.MetricsOnly && metrics.Count > 0) metrics[0][ConfigLoader.OnlyKey] = true;
            root["metrics"] = new JsonArray(metrics.Select(m => (JsonNode?)m).ToArray());
        }
        return (JsonObject)Sorted(root)!;
    }

    /// <summary>[data] in the canonical form: the core's keys (<see cref="DataSection"/>) and those of each source the run
    /// reads (its dataset, and a datasets study's), as the config writes them.</summary>
    static JsonObject Data(DataSection data)
    {
        var table = ConfigValue.Table(data);
        foreach (var source in data.Sources)
            foreach (var (key, value) in ConfigValue.Table(data.OptionsOf(source))) table[key] = value?.DeepClone();
        return table;
    }

    /// <summary>Compact JSON text of a canonical object (stable: same config ⇒ same bytes). Keys are written sorted
    /// (ordinal) whatever order the object holds them in.</summary>
    public static string Json(JsonObject canonical) => Text(canonical);

    /// <summary>Compact JSON text of any node, keys sorted (ordinal) at every depth.</summary>
    static string Text(JsonNode? node)
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
            Write(writer, node);
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>The canonical form as TOML text (for <c>--dry-run</c> and run directories): sections as tables,
    /// methods as <c>[[methods]]</c>, the command as a leading comment, without the options the run does not read
    /// (<see cref="AppliesWhenAttribute"/>: a config may not write them). <see cref="ConfigLoader"/> reads it back to the
    /// same identity.</summary>
    public static string Toml(JsonObject canonical)
    {
        var root = new TomlTable();
        foreach (var (key, value) in canonical.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            var section = ConfigLoader.SectionTypes.FirstOrDefault(s => s.Name == key).Type;
            var written = section is null ? value : ReadKeys(value, section);
            if (key != "command" && ToToml(written) is { } v) root[key] = v;
        }
        // A blank line before each table, for the reader.
        var toml = System.Text.RegularExpressions.Regex.Replace(ConfigLoader.ToToml(root), @"(?<=[^\n])\n(?=\[)", "\n\n");
        return canonical["command"] is JsonValue c && c.TryGetValue<string>(out var command) ? $"# command: {command}\n{toml}" : toml;
    }

    /// <summary>A core section's table (bound from <paramref name="type"/>) without the options that another option of it
    /// makes unread (<see cref="AppliesWhenAttribute"/>); the canonical config holds them at their defaults, and a config
    /// that writes them is refused. Nested tables the same way.</summary>
    static JsonNode? ReadKeys(JsonNode? node, Type type)
    {
        if (node is not JsonObject table) return node;
        var specs = OptionSchema.Of(type);
        var read = new JsonObject();
        foreach (var (key, value) in table)
        {
            var spec = specs.FirstOrDefault(o => o.Key == key);
            if (spec?.AppliesWhen is { } when && !when.Holds(table[when.Key])) continue;
            read[key] = spec is { IsTable: true } && !spec.Type.IsArray ? ReadKeys(value, spec.Type) : value?.DeepClone();
        }
        return read;
    }

    /// <summary>
    /// The text <see cref="Identity"/> hashes: <see cref="Json"/> of the canonical object less what its options declare
    /// is not part of what a run computes (<see cref="OptionAttribute.PartOfIdentity"/>: the run's name, folder, threads
    /// and TensorBoard folder, <c>study.hessian</c>), less the options added after runs were stored that are at their
    /// default (<see cref="OptionAttribute.AddedIn"/>: such a run computed what the default computes, so it keeps its
    /// identity), and less a study's <c>metrics</c> (see <see cref="PluginTables"/>). Core sections are declared by
    /// their records, plugin tables by the options types the host binds them with.
    /// </summary>
    public static string IdentityJson(JsonObject canonical, IPluginOptions host) => Json(Identifying(canonical, host));

    /// <summary>Whether a key path (<c>study.hessian.top_k</c>, <c>optimizer.lr</c>) names an option of a core section declared
    /// outside the identity (<see cref="OptionAttribute.PartOfIdentity"/> false), or a key inside one: setting it changes
    /// nothing a run computed. Anything else, a plugin's table included, is part of the identity.</summary>
    public static bool OutsideIdentity(string keyPath)
    {
        var path = keyPath.Split('.');
        var type = ConfigLoader.SectionTypes.FirstOrDefault(s => s.Name == path[0]).Type;
        for (int i = 1; type is not null && i < path.Length; i++)
        {
            if (OptionSchema.Of(type).FirstOrDefault(o => o.Key == path[i]) is not { } spec) return false;
            if (!spec.PartOfIdentity) return true;
            type = spec.IsTable && !spec.Type.IsArray ? spec.Type : null;
        }
        return false;
    }

    /// <summary>THE identity: lowercase hex SHA-256 of <see cref="IdentityJson"/>. Used by resume, the run record,
    /// sweeps and <c>research runs compare</c>.</summary>
    public static string Identity(JsonObject canonical, IPluginOptions host) => Sha256(IdentityJson(canonical, host));

    /// <summary>The identity additionally without <c>run.seed</c>: runs that differ only in seed share it
    /// (<c>research runs compare</c> groups by it).</summary>
    public static string SeedGroup(JsonObject canonical, IPluginOptions host)
    {
        var identifying = Identifying(canonical, host);
        foreach (var (key, value) in identifying)
            if (StoredKey(key) == "run" && value is JsonObject run)
                foreach (var k in run.Select(kv => kv.Key).Where(k => StoredKey(k) == SeedKey).ToList())
                    run.Remove(k);
        return Sha256(Json(identifying));
    }

    /// <summary><see cref="SeedGroup"/> of stored JSON text (a run's <c>resolved_json</c>, of this version or an
    /// earlier one); text that is not a JSON object is hashed as it is.</summary>
    public static string SeedGroupOfJson(string json, IPluginOptions host)
    {
        JsonNode? node;
        try { node = JsonNode.Parse(json); }
        catch (JsonException) { node = null; }
        return node is JsonObject o ? SeedGroup(o, host) : Sha256(json);
    }

    static readonly string SeedKey = OptionsBinder.SnakeCase(nameof(RunSection.Seed));

    /// <summary>Lowercase hex SHA-256 of the UTF-8 bytes of <paramref name="text"/>.</summary>
    static string Sha256(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));

    /// <summary>A stored key as the options spell it. Records written by early versions spelled keys as the C# records
    /// do (<c>OutputDir</c>); read through here, they lose what the declarations leave out just as today's do.</summary>
    static string StoredKey(string key) => OptionsBinder.SnakeCase(key);

    /// <summary>A copy of a canonical object with only what makes its identity: each core section and each plugin table
    /// less what its options type declares outside the identity (<see cref="LeaveOut"/>), and the plugin tables that
    /// are not part of it removed.</summary>
    static JsonObject Identifying(JsonObject canonical, IPluginOptions host)
    {
        var copy = (JsonObject)canonical.DeepClone();
        foreach (var (key, value) in copy.ToList())
        {
            var name = StoredKey(key);
            var section = ConfigLoader.SectionTypes.FirstOrDefault(s => s.Name == name).Type;
            if (section is not null && value is JsonObject table) LeaveOut(table, section);
            foreach (var (tableKey, partOfIdentity) in PluginTables.Where(p => p.Key == name))
            {
                if (!partOfIdentity) copy.Remove(key);
                else
                    foreach (var plugin in value is JsonArray array ? array.OfType<JsonObject>() : value is JsonObject one ? [one] : [])
                        if (plugin["name"] is JsonValue n && n.TryGetValue<string>(out var pluginName) &&
                            host.Lookup(tableKey, pluginName)?.OptionsType is { } options)
                            LeaveOut(plugin, options);
            }
        }
        // A kind's and a source's own options declare what of them the identity leaves out, as the sections do.
        if (copy["model"] is JsonObject model && model["kind"] is JsonValue kind && kind.TryGetValue<string>(out var kindName) &&
            ModelKindOptions.Find(kindName) is { } kindOptions)
            LeaveOut(model, kindOptions);
        if (copy["data"] is JsonObject data && data["dataset"] is JsonValue dataset && dataset.TryGetValue<string>(out var sourceName) &&
            DataSources.Find(sourceName) is { } source)
            LeaveOut(data, source.OptionsType);
        // The kinds and datasets of 2.2 keep 2.2's flat keys in the identity, declared in one frozen table.
        Release22Keys.Restore(copy);
        return copy;
    }

    /// <summary>Removes from a table (bound from <paramref name="type"/>) the options declared outside the identity,
    /// and those added later that hold their default; nested tables the same way.</summary>
    static void LeaveOut(JsonObject table, Type type)
    {
        var specs = OptionSchema.Of(type);
        foreach (var key in table.Select(kv => kv.Key).ToList())
        {
            if (specs.FirstOrDefault(o => o.Key == StoredKey(key)) is not { } spec) continue;
            var value = table[key];
            if (!spec.PartOfIdentity || (spec.AddedIn.Length > 0 && Text(value) == Text(ConfigValue.Json(spec.Default))))
                table.Remove(key);
            else if (spec.IsTable && value is JsonObject nested) LeaveOut(nested, spec.Type);
            else if (spec.IsTable && value is JsonArray items)
                foreach (var item in items.OfType<JsonObject>()) LeaveOut(item, spec.Scalar);
        }
    }

    /// <summary>A plugin's table as its options record sees it: bound (defaults filled in, spellings unified) and every
    /// key written out, plus its name; a plugin without an options type, or unknown to the host, as given.</summary>
    static JsonObject Plugin(IPluginOptions host, string tableKey, PluginChoice choice, string file)
    {
        var descriptor = host.Lookup(tableKey, choice.Name);
        var table = descriptor?.OptionsType is { } type
            ? ConfigValue.Table(OptionsBinder.Bind(type, choice.Options, file, choice.Key, "name"))
            : (JsonObject)ConfigValue.Json(choice.Options)!;
        // The plugin's own name, not the alias the config used: both spellings are one run.
        table["name"] = descriptor?.Name ?? choice.Name;
        return table;
    }

    /// <summary>[model]: the keys every kind shares and the chosen kind's own, in one table as the config writes them.</summary>
    static JsonObject Model(ModelSection model)
    {
        var table = ConfigValue.Table(model);
        foreach (var (key, value) in ConfigValue.Table(model.Options)) table[key] = value?.DeepClone();
        return table;
    }

    /// <summary>A copy with object keys sorted (ordinal) at every depth; arrays keep their order.</summary>
    static JsonNode? Sorted(JsonNode? node) => node switch
    {
        JsonObject o => new JsonObject(o.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => KeyValuePair.Create(kv.Key, Sorted(kv.Value)))),
        JsonArray a => new JsonArray(a.Select(Sorted).ToArray()),
        _ => node?.DeepClone(),
    };

    static void Write(Utf8JsonWriter w, JsonNode? node)
    {
        switch (node)
        {
            case null: w.WriteNullValue(); break;
            case JsonObject o:
                w.WriteStartObject();
                foreach (var (key, value) in o.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                {
                    w.WritePropertyName(key);
                    Write(w, value);
                }
                w.WriteEndObject();
                break;
            case JsonArray a:
                w.WriteStartArray();
                foreach (var x in a) Write(w, x);
                w.WriteEndArray();
                break;
            // NaN and ±∞ (possible only in a plugin table as given) have no JSON number: written as TOML spells them.
            case JsonValue v when v.TryGetValue<double>(out var d) && !double.IsFinite(d):
                w.WriteStringValue(double.IsNaN(d) ? "nan" : d > 0 ? "inf" : "-inf");
                break;
            default: node.WriteTo(w); break;
        }
    }

    /// <summary>A canonical JSON node as a TOML value: an array of objects becomes an array of tables, null is left out.</summary>
    static object? ToToml(JsonNode? node)
    {
        switch (node)
        {
            case null: return null;
            case JsonObject o:
                var table = new TomlTable();
                foreach (var (key, value) in o.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                    if (ToToml(value) is { } v) table[key] = v;
                return table;
            case JsonArray a when a.Count > 0 && a.All(x => x is JsonObject):
                var tables = new TomlTableArray();
                foreach (var x in a) tables.Add((TomlTable)ToToml(x)!);
                return tables;
            case JsonArray a:
                var array = new TomlArray();
                foreach (var x in a) array.Add(ToToml(x));
                return array;
        }
        var scalar = (JsonValue)node;
        if (scalar.TryGetValue<string>(out var s)) return s;
        if (scalar.TryGetValue<bool>(out var b)) return b;
        if (scalar.TryGetValue<long>(out var l)) return l;
        if (scalar.TryGetValue<int>(out var i)) return (long)i;
        if (scalar.TryGetValue<double>(out var d)) return d;
        return scalar.ToJsonString();
    }
}
