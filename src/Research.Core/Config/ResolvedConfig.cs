using System.Globalization;
using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using Research.Core.Plugins;
using Tomlyn.Model;

namespace Research.Core.Config;

/// <summary>
/// "The same config", defined once: the canonical resolved config of a run (every section with every default, plugin
/// options bound through their options types, keys as a config file spells them, sorted), its text, its TOML, and its
/// SHA-256 — the identity resume, the run record, sweeps and <c>research runs compare</c> all use.
/// </summary>
public static class ResolvedConfig
{
    /// <summary>Keys of [run] that say where and how a run executes, not what it computes.</summary>
    public static readonly IReadOnlyList<string> WhereKeys = ["name", "output_dir", "threads", "tensorboard_dir"];

    static readonly string[] WhereAndSeed = ["name", "output_dir", "threads", "tensorboard_dir", "seed"];

    /// <summary>
    /// The canonical resolved config: a JSON object whose keys are the TOML keys a config file uses (snake_case),
    /// every section of <see cref="RunConfig"/> with every default filled in (run, data, model, optimizer with its
    /// components as an array of tables, train, precision, checkpoint, study), <c>schedule</c> and <c>methods</c>
    /// (an array) as plugin tables bound through the plugin's options type (defaults filled in, enum values in kebab
    /// case as the config accepts them, plus <c>name</c>) — a plugin without an options type, or unknown to the host,
    /// stays as given — and <c>command</c> ("train" or "study"); a study's <c>metrics</c> too (an array of bound
    /// plugin tables, the default set when the config chooses none). Object keys are sorted ordinally at every depth;
    /// arrays keep their order.
    /// </summary>
    /// <exception cref="ConfigException">A plugin's options do not bind (unknown key, wrong type, invalid value).</exception>
    public static JsonObject Canonical(RunConfig config, PluginHost host, string command)
    {
        var root = new JsonObject
        {
            ["run"] = Record(config.Run),
            ["data"] = Record(config.Data),
            ["model"] = Model(config.Model),
            ["optimizer"] = Record(config.Optimizer),
            ["train"] = Record(config.Train),
            ["precision"] = Record(config.Precision),
            ["checkpoint"] = Record(config.Checkpoint),
            ["study"] = Record(config.Study),
            ["probes"] = Record(config.Probes),
            ["schedule"] = Plugin(host, PluginRole.Schedule, config.Schedule, config.File),
            ["methods"] = new JsonArray(config.Methods.Select(r => (JsonNode?)Plugin(host, PluginRole.Method, r, config.File)).ToArray()),
            ["command"] = command,
        };
        if (command == "study")
            root["metrics"] = new JsonArray(config.Metrics.Select(m => (JsonNode?)Plugin(host, PluginRole.ForgettingMetric, m, config.File)).ToArray());
        return (JsonObject)Sorted(root)!;
    }

    /// <summary>Compact JSON text of a canonical object (stable: same config ⇒ same bytes). Keys are written sorted
    /// (ordinal) whatever order the object holds them in.</summary>
    public static string Json(JsonObject canonical)
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
            Write(writer, canonical);
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>The canonical form as TOML text (for <c>--dry-run</c> and run directories): sections as tables,
    /// methods as <c>[[methods]]</c>, the command as a leading comment. <see cref="ConfigLoader"/> reads it
    /// back to the same identity.</summary>
    public static string Toml(JsonObject canonical)
    {
        var root = new TomlTable();
        foreach (var (key, value) in canonical.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            if (key != "command" && ToToml(value) is { } v) root[key] = v;
        // A blank line before each table, for the reader.
        var toml = System.Text.RegularExpressions.Regex.Replace(ConfigLoader.ToToml(root), @"(?<=[^\n])\n(?=\[)", "\n\n");
        return canonical["command"] is JsonValue c && c.TryGetValue<string>(out var command) ? $"# command: {command}\n{toml}" : toml;
    }

    /// <summary>The text <see cref="Identity"/> hashes: <see cref="Json"/> of the canonical object without
    /// <c>run.name</c>, <c>run.output_dir</c>, <c>run.threads</c> and <c>run.tensorboard_dir</c> (<see cref="WhereKeys"/>), and without a study's
    /// <c>metrics</c>: they are computed from the stored record after training (<c>research metrics</c> recomputes
    /// them), so choosing other metrics neither reruns a sweep's trials nor refuses a resume. The <c>[model]</c> of a kind of
    /// release 2.2 has 2.2's flat keys added back (<see cref="FlatModelKeys"/>), so its identity is the one 2.2 computed.</summary>
    public static string IdentityJson(JsonObject canonical) => Json(Without(canonical, WhereKeys));

    /// <summary>THE identity: lowercase hex SHA-256 of <see cref="IdentityJson"/>. Used by resume, the run record,
    /// sweeps and <c>research runs compare</c>.</summary>
    public static string Identity(JsonObject canonical) => Sha256(IdentityJson(canonical));

    /// <summary>The identity additionally without <c>run.seed</c>: runs that differ only in seed share it
    /// (<c>research runs compare</c> groups by it).</summary>
    public static string SeedGroup(JsonObject canonical) => Sha256(Json(Without(canonical, WhereAndSeed)));

    /// <summary>
    /// <see cref="SeedGroup"/> of stored JSON text (a run's <c>resolved_json</c>). Tolerates JSON that is not
    /// canonical — a record written by an earlier version (property names as the C# records spell them): the keys of
    /// its run table whose snake case is name, output_dir, threads or seed are left out, and the rest is hashed as it is.
    /// Text that is not a JSON object is hashed as it is.
    /// </summary>
    public static string SeedGroupOfJson(string json)
    {
        JsonNode? node;
        try { node = JsonNode.Parse(json); }
        catch (JsonException) { node = null; }
        return node is JsonObject o ? SeedGroup(o) : Sha256(json);
    }

    /// <summary>Lowercase hex SHA-256 of the UTF-8 bytes of <paramref name="text"/>.</summary>
    static string Sha256(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));

    /// <summary>[study] keys added after runs were stored, with their default as JSON text.</summary>
    static readonly (string Key, string Default)[] AddedLater = [("classes_per_task", "2")];

    /// <summary>Options of built-in plugins added after runs were stored (contract 2.2's Hugging Face forms), with their
    /// default as JSON text: left out of the identity at their default, as for <see cref="AddedLater"/>.</summary>
    static readonly (string Plugin, string Key, string Default)[] PluginOptionsAddedLater =
        [("cosine-restarts", "cycles", "0"), ("warmup-stable-decay", "decay_steps", "0")];

    /// <summary>A copy without the given keys of the run table. The run table and its keys are matched by their snake
    /// case, so the PascalCase records of earlier versions lose the same keys.</summary>
    static JsonObject Without(JsonObject canonical, IReadOnlyList<string> runKeys)
    {
        var copy = (JsonObject)canonical.DeepClone();
        copy.Remove("metrics");
        // The Hessian analysis reads task-end snapshots with its own streams and changes no weight: like the metrics, it
        // is not what a run computes, so adding it to a finished study neither reruns a sweep's trials nor refuses a resume.
        if (copy["study"] is JsonObject study)
        {
            study.Remove("hessian");
            // Keys added after runs were stored are left out at their default, which is what those runs did: their
            // identity stays, so a finished sweep is still adopted and a checkpoint still resumes.
            foreach (var (key, byDefault) in AddedLater)
                if (study[key] is JsonValue v && v.ToJsonString() == byDefault) study.Remove(key);
        }
        // The kinds of 2.2 keep 2.2's flat [model] keys in the identity, declared in one frozen table.
        if (copy["model"] is JsonObject model) FlatModelKeys.Restore(model);
        var plugins = new[] { copy["schedule"] }.Concat(copy["methods"] as JsonArray ?? []).OfType<JsonObject>();
        foreach (var table in plugins)
            foreach (var (plugin, key, byDefault) in PluginOptionsAddedLater)
                if (table["name"] is JsonValue name && name.TryGetValue<string>(out var n) && n == plugin && table[key] is JsonValue v && v.ToJsonString() == byDefault)
                    table.Remove(key);
        foreach (var (key, value) in copy)
            if (OptionsBinder.SnakeCase(key) == "run" && value is JsonObject run)
                foreach (var k in run.Select(kv => kv.Key).Where(k => runKeys.Contains(OptionsBinder.SnakeCase(k))).ToList())
                    run.Remove(k);
        return copy;
    }

    /// <summary>A plugin's table as its options record sees it: bound (defaults filled in, spellings unified) and every
    /// key written out, plus its name; a plugin without an options type, or unknown to the host, as given.</summary>
    static JsonObject Plugin(PluginHost host, PluginRole role, PluginChoice choice, string file)
    {
        var descriptor = host.Plugins.FirstOrDefault(p => p.Role == role && p.IsNamed(choice.Name));
        var table = descriptor?.OptionsType is { } type
            ? Record(OptionsBinder.Bind(type, choice.Options, file, choice.Key, "name"))
            : (JsonObject)FromToml(choice.Options)!;
        // The plugin's own name, not the alias the config used: both spellings are one run.
        table["name"] = descriptor?.Name ?? choice.Name;
        return table;
    }

    /// <summary>[model]: the keys every kind shares and the chosen kind's own, in one table as the config writes them.</summary>
    static JsonObject Model(ModelSection model)
    {
        var table = Record(model);
        foreach (var (key, value) in Record(model.Options)) table[key] = value?.DeepClone();
        return table;
    }

    /// <summary>An options record as a JSON object, by the binder's key names (the inverse of binding).</summary>
    static JsonObject Record(object options)
    {
        var table = new JsonObject();
        foreach (var (key, prop) in OptionsBinder.Keys(options.GetType()))
            table[key] = Value(prop.GetValue(options));
        return table;
    }

    /// <summary>A bound value as JSON, spelled as a config writes it: enums in kebab case (as the binder reads them),
    /// integers as 64-bit, floats as doubles, arrays in order, nested options records as objects.</summary>
    static JsonNode? Value(object? v) => v switch
    {
        null => null,
        Enum e => JsonValue.Create(OptionsBinder.SnakeCase(e.ToString()).Replace('_', '-')),
        string s => JsonValue.Create(s),
        bool b => JsonValue.Create(b),
        int i => JsonValue.Create((long)i),
        long l => JsonValue.Create(l),
        float f => JsonValue.Create((double)f),
        double d => JsonValue.Create(d),
        Array a => new JsonArray(a.Cast<object?>().Select(Value).ToArray()),
        _ when IsRecord(v.GetType()) => Record(v),
        _ => JsonSerializer.SerializeToNode(v),
    };

    static bool IsRecord(Type t) => t.IsClass && t != typeof(string) && !t.IsArray && t.GetConstructor(Type.EmptyTypes) != null &&
                                     t.GetProperties(BindingFlags.Public | BindingFlags.Instance).Any(p => p.SetMethod is { IsPublic: true });

    /// <summary>A TOML value (as Tomlyn reads it) as JSON.</summary>
    static JsonNode? FromToml(object? v) => v switch
    {
        null => null,
        TomlTable t => new JsonObject(t.Select(kv => KeyValuePair.Create(kv.Key, FromToml(kv.Value)))),
        TomlTableArray a => new JsonArray(a.Select(t => FromToml(t)).ToArray()),
        TomlArray a => new JsonArray(a.Select(FromToml).ToArray()),
        string s => JsonValue.Create(s),
        bool b => JsonValue.Create(b),
        long l => JsonValue.Create(l),
        double d => JsonValue.Create(d),
        _ => JsonValue.Create(Convert.ToString(v, CultureInfo.InvariantCulture)), // dates and times: as TOML wrote them
    };

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
