using System.Globalization;
using System.Reflection;
using System.Text;
using Research.Abstractions;
using Tomlyn.Model;

namespace Research.Core.Config;

/// <summary>
/// Binds a TOML table to a plain options object: key <c>warmup_steps</c> ↔ property <c>WarmupSteps</c>.
/// Written by hand rather than with Tomlyn's serializer so that every error names the file and the full
/// key path, lists the keys that would have been accepted, and all errors are reported at once.
/// </summary>
public static class OptionsBinder
{
    /// <summary>Binds <paramref name="table"/> to a new <typeparamref name="T"/> (defaults for absent keys).</summary>
    public static T Bind<T>(TomlTable? table, string file, string section, params string[] ignoredKeys) where T : new() =>
        (T)Bind(typeof(T), table, file, section, ignoredKeys);

    public static object Bind(Type type, TomlTable? table, string file, string section, params string[] ignoredKeys)
    {
        var errors = new List<ConfigError>();
        var result = BindInto(type, table, file, section, ignoredKeys, errors);
        if (errors.Count > 0) throw new ConfigException(errors);
        return result;
    }

    /// <summary>The settable properties of an options type, by TOML key.</summary>
    public static IReadOnlyDictionary<string, PropertyInfo> Keys(Type type) =>
        OptionSchema.Of(type).ToDictionary(o => o.Key, o => o.Property);

    static object BindInto(Type type, TomlTable? table, string file, string section, string[] ignored, List<ConfigError> errors)
    {
        var instance = Activator.CreateInstance(type)
            ?? throw new InvalidOperationException($"{type} has no public parameterless constructor");
        var specs = OptionSchema.Of(type).ToDictionary(o => o.Key);
        var keys = specs.ToDictionary(o => o.Key, o => o.Value.Property);
        // Another library's name for an option binds to the option's own key (OptionAttribute.Aliases).
        var canonical = specs.Values.SelectMany(o => o.Aliases.Select(a => (Alias: a, o.Key))).ToDictionary(x => x.Alias, x => x.Key);
        var given = new Dictionary<string, string>();
        // Options whose value was refused: a rule that reads them would read their default instead.
        var refused = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (written, value) in table ?? new TomlTable())
        {
            if (ignored.Contains(written)) continue;
            var path = section.Length == 0 ? written : $"{section}.{written}";
            var key = canonical.GetValueOrDefault(written, written);
            if (!keys.TryGetValue(key, out var prop))
            {
                if (OptionSchema.Advice(type).TryGetValue(written, out var advice)) { errors.Add(new(file, path, advice)); continue; }
                var known = keys.Keys.Where(k => !ignored.Contains(k)).Order().ToList();
                errors.Add(new(file, path, $"unknown key{Suggestion(written, known.Concat(canonical.Keys))} (known keys: {(known.Count == 0 ? "none" : string.Join(", ", known))})"));
                continue;
            }
            if (given.TryGetValue(key, out var first))
            {
                errors.Add(new(file, path, $"is the same option as {first}: give one of them"));
                continue;
            }
            given[key] = written;
            if (value is TomlTable sub && IsOptionsType(prop.PropertyType))
            {
                prop.SetValue(instance, BindInto(prop.PropertyType, sub, file, path, [], errors));
                continue;
            }
            // An array of inline tables (`components = [{ name = "connector", … }]`, the only form an override on the command
            // line or in a sweep can write) means the same as [[…]] tables, as it does for [[methods]].
            var asTables = value as TomlTableArray;
            if (value is TomlArray inline && inline.Count > 0 && inline.All(x => x is TomlTable))
            {
                asTables = [];
                foreach (var t in inline) asTables.Add((TomlTable)t!);
            }
            if (asTables is { } tables && prop.PropertyType.IsArray && IsOptionsType(prop.PropertyType.GetElementType()!))
            {
                var element = prop.PropertyType.GetElementType()!;
                var items = Array.CreateInstance(element, tables.Count);
                for (int i = 0; i < tables.Count; i++) items.SetValue(BindInto(element, tables[i], file, $"{path}[{i}]", [], errors), i);
                prop.SetValue(instance, items);
                continue;
            }
            if (!TryConvert(value, prop.PropertyType, out var converted, out var why))
            {
                errors.Add(new(file, path, $"{ConfigValue.Text(value)} {why}"));
                refused.Add(key);
            }
            else if (specs[key].Check(converted) is { } wrong)
            {
                errors.Add(new(file, path, $"{ConfigValue.Text(value)} {wrong}"));
                refused.Add(key);
            }
            else prop.SetValue(instance, converted);
        }
        // A key written where the option it depends on makes the run not read it (AppliesWhen) means nothing: refused,
        // at its default too, since the user wrote it expecting it to count.
        foreach (var (key, written) in given)
            if (!refused.Contains(key) && specs[key].AppliesWhen is { } when && !refused.Contains(when.Key) && keys.TryGetValue(when.Key, out var other)
                && other.GetValue(instance) is var value && !when.Holds(value))
                errors.Add(new(file, section.Length == 0 ? written : $"{section}.{written}",
                    $"is read by {when} only, not \"{AppliesWhenAttribute.Spelled(value)}\": remove it"));
        // An option left out keeps its default, which must satisfy its declaration too: some options have no usable
        // default (cosine-restarts' cycle_steps = 0 asks the user to choose one).
        foreach (var spec in specs.Values.Where(o => !given.ContainsKey(o.Key) && !o.IsTable))
            if (spec.Check(spec.Property.GetValue(instance)) is { } wrong)
                errors.Add(new(file, section.Length == 0 ? spec.Key : $"{section}.{spec.Key}", $"is not set, and its default {ConfigValue.Text(spec.Default)} {wrong}"));
        if (instance is IValidatable v)
            foreach (var e in v.Validate())
                errors.Add(new(file, section.Length == 0 ? e.Key : $"{section}.{e.Key}",
                    keys.TryGetValue(e.Key, out var p) ? $"{ConfigValue.Text(p.GetValue(instance))} {e.Message}" : e.Message));
        return instance;
    }

    static bool IsOptionsType(Type t) => OptionSchema.IsOptionsType(t);

    /// <summary>" (did you mean 'x'?)" for the known name closest to a mistyped one, within a third of its length in
    /// edits; empty when none is that close.</summary>
    public static string Suggestion(string written, IEnumerable<string> known)
    {
        var best = known.Distinct().Select(k => (Key: k, Distance: Edits(written, k))).OrderBy(x => x.Distance).ThenBy(x => x.Key, StringComparer.Ordinal).FirstOrDefault();
        return best.Key is not null && best.Distance <= Math.Max(1, written.Length / 3) ? $" (did you mean '{best.Key}'?)" : "";
    }

    /// <summary>Levenshtein distance (insertions, deletions, substitutions), one row at a time.</summary>
    static int Edits(string a, string b)
    {
        var row = Enumerable.Range(0, b.Length + 1).ToArray();
        for (int i = 1; i <= a.Length; i++)
        {
            int diagonal = row[0];
            row[0] = i;
            for (int j = 1; j <= b.Length; j++)
            {
                int above = row[j];
                row[j] = Math.Min(Math.Min(row[j] + 1, row[j - 1] + 1), diagonal + (a[i - 1] == b[j - 1] ? 0 : 1));
                diagonal = above;
            }
        }
        return row[b.Length];
    }

    /// <summary>Converts a TOML value (long, double, bool, string, array) to a CLR property type.</summary>
    public static bool TryConvert(object? value, Type target, out object? result, out string why)
    {
        result = null; why = "";
        var t = Nullable.GetUnderlyingType(target) ?? target;
        switch (value)
        {
            case long l when t == typeof(int):
                if (l is < int.MinValue or > int.MaxValue) { why = "is out of range for an integer"; return false; }
                result = (int)l; return true;
            case long l when t == typeof(long): result = l; return true;
            case long l when t == typeof(double): result = (double)l; return true;
            case long l when t == typeof(float): result = (float)l; return true;
            // TOML allows nan and ±inf; no option of a run means them, and they would surface only when a record is
            // written as JSON or a loss turns NaN, far from the key.
            case double d when !double.IsFinite(d) && (t == typeof(double) || t == typeof(float)):
                why = "is not a finite number (nan and ±inf are not option values)"; return false;
            case double d when t == typeof(double): result = d; return true;
            case double d when t == typeof(float): result = (float)d; return true;
            case bool b when t == typeof(bool): result = b; return true;
            case string s when t == typeof(string): result = s; return true;
            case string s when t.IsEnum:
                var match = Enum.GetNames(t).FirstOrDefault(n => ConfigValue.EnumName(n) == s || SnakeCase(n) == s);
                if (match is null) { why = $"is not one of: {string.Join(", ", OptionSchema.EnumNames(t))}"; return false; }
                result = Enum.Parse(t, match); return true;
            case TomlArray arr when t.IsArray:
                var element = t.GetElementType()!;
                var items = Array.CreateInstance(element, arr.Count);
                for (int i = 0; i < arr.Count; i++)
                {
                    if (!TryConvert(arr[i], element, out var item, out var inner)) { why = $"has element {i} that {inner}"; return false; }
                    items.SetValue(item, i);
                }
                result = items; return true;
        }
        why = $"is not {Article(t)}";
        return false;
    }

    static string Article(Type t) =>
        t == typeof(int) || t == typeof(long) ? "an integer" :
        t == typeof(double) || t == typeof(float) ? "a number" :
        t == typeof(bool) ? "a boolean (true or false)" :
        t == typeof(string) ? "a string" :
        t.IsArray ? $"an array of {Article(t.GetElementType()!).Replace("an ", "").Replace("a ", "")}s" :
        t.Name;

    /// <summary><c>WarmupSteps</c> → <c>warmup_steps</c>; <c>LR</c> stays <c>lr</c>.</summary>
    public static string SnakeCase(string name)
    {
        var sb = new StringBuilder(name.Length + 4);
        for (int i = 0; i < name.Length; i++)
        {
            var c = name[i];
            if (char.IsUpper(c) && i > 0 && (char.IsLower(name[i - 1]) || char.IsDigit(name[i - 1]) ||
                                              (i + 1 < name.Length && char.IsLower(name[i + 1]))))
                sb.Append('_');
            sb.Append(char.ToLowerInvariant(c));
        }
        return sb.ToString();
    }
}
