using System.Globalization;
using System.Text.Json.Nodes;
using Tomlyn;
using Tomlyn.Model;

namespace Research.Core.Config;

/// <summary>
/// An option's value spelled as a config file writes it, defined once: options records as tables keyed in snake case
/// (<c>warmup_steps</c>), enum values in kebab case (<c>"previous-task"</c>, as the binder reads them), integers as
/// TOML's 64-bit integers, other numbers as its floats, arrays in order. The canonical resolved config (and so a run's
/// identity), <c>research config schema</c>, <c>research plugins list</c> and the binder's errors all spell values
/// through it. A value as TOML was read (Tomlyn's model) is spelled as it was written.
/// </summary>
public static class ConfigValue
{
    /// <summary>The value as JSON, for the canonical resolved config: a table as an object (a null option as null),
    /// an array as an array, a scalar as <see cref="Scalar"/> spells it.</summary>
    public static JsonNode? Json(object? value) => value switch
    {
        null => null,
        _ when Entries(value) is { } entries => new JsonObject(entries.Select(e => KeyValuePair.Create(e.Key, Json(e.Value)))),
        _ when Items(value) is { } items => new JsonArray(items.Select(Json).ToArray()),
        _ => Scalar(value) switch
        {
            string s => JsonValue.Create(s),
            bool b => JsonValue.Create(b),
            long l => JsonValue.Create(l),
            var d => JsonValue.Create((double)d),
        },
    };

    /// <summary>An options object (a section's record, a plugin's bound options) as a JSON object: each option by its
    /// key, its value as <see cref="Json"/> spells it.</summary>
    public static JsonObject Table(object options) =>
        new(OptionSchema.Of(options.GetType()).Select(o => KeyValuePair.Create(o.Key, Json(o.Property.GetValue(options)))));

    /// <summary>The value as TOML holds it (Tomlyn's model): a table as an inline table (null options left out: TOML
    /// has no null), an array as an array, a scalar as <see cref="Scalar"/> spells it; null stays null.</summary>
    public static object? Toml(object? value)
    {
        if (value is null) return null;
        if (Entries(value) is { } entries)
        {
            var table = new TomlTable(inline: true);
            foreach (var (key, v) in entries)
                if (Toml(v) is { } t) table[key] = t;
            return table;
        }
        if (Items(value) is { } items)
        {
            var array = new TomlArray();
            foreach (var item in items) array.Add(Toml(item));
            return array;
        }
        return Scalar(value);
    }

    /// <summary>The value as text, as a config file writes it after <c>key = </c>: <c>"cosine"</c>, <c>0.001</c>,
    /// <c>1.0</c>, <c>[256, 256]</c>, <c>{samples = 0, top_k = 20}</c>; <c>(none)</c> for null.</summary>
    public static string Text(object? value)
    {
        if (Toml(value) is not { } toml) return "(none)";
        var line = TomlSerializer.Serialize(new TomlTable { ["v"] = toml }).TrimEnd('\r', '\n');
        return line.StartsWith("v = ", StringComparison.Ordinal) ? line["v = ".Length..] : line;
    }

    /// <summary>An enum member's name as a config writes it: <c>PreviousTask</c> → <c>previous-task</c>.</summary>
    public static string EnumName(string member) => OptionsBinder.SnakeCase(member).Replace('_', '-');

    /// <summary>A scalar as TOML holds it: a string (an enum by <see cref="EnumName"/>; a date or time as TOML writes
    /// it), a 64-bit integer, a double (a float widened exactly), or a boolean.</summary>
    static object Scalar(object value) => value switch
    {
        Enum e => EnumName(e.ToString()),
        string or bool or long or double => value,
        int i => (long)i,
        float f => (double)f,
        _ => Convert.ToString(value, CultureInfo.InvariantCulture) ?? "",
    };

    /// <summary>The keys and values of a table: an options record's options by key, or a TOML table as read; null
    /// for anything else.</summary>
    static IEnumerable<(string Key, object? Value)>? Entries(object value) => value switch
    {
        TomlTable t => t.Select(kv => (kv.Key, (object?)kv.Value)),
        string or TomlArray or TomlTableArray or Array => null,
        _ when OptionSchema.IsOptionsType(value.GetType()) => OptionSchema.Of(value.GetType()).Select(o => (o.Key, o.Property.GetValue(value))),
        _ => null,
    };

    /// <summary>The elements of an array (of values or of tables); null for anything else.</summary>
    static IEnumerable<object?>? Items(object value) => value switch
    {
        TomlArray a => a,
        TomlTableArray a => a,
        Array a => a.Cast<object?>(),
        _ => null,
    };
}
