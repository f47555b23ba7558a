using System.Collections.Concurrent;
using System.Globalization;
using System.Reflection;
using System.Xml.Linq;
using Research.Abstractions;

namespace Research.Core.Config;

/// <summary>One option of a section or a plugin: its TOML key, its type, its default, the values it accepts and its
/// documentation. Built from the options type itself (property type, initial value, <see cref="OptionAttribute"/>,
/// XML documentation), so the binder, <c>--dry-run</c>, <c>research config schema</c> and the fuzz tests read one
/// declaration.</summary>
public sealed record OptionSpec(string Key, PropertyInfo Property, object? Default, OptionAttribute? Rule, string Doc)
{
    public Type Type => Property.PropertyType;

    /// <summary>Other keys that mean exactly this option (<see cref="OptionAttribute.Aliases"/>).</summary>
    public IReadOnlyList<string> Aliases => Rule?.Aliases ?? [];

    /// <summary>The version in which the option appeared (<see cref="OptionAttribute.AddedIn"/>); empty: from the start.</summary>
    public string AddedIn => Rule?.AddedIn ?? "";

    /// <summary>Whether the option counts in a run's identity (<see cref="OptionAttribute.PartOfIdentity"/>).</summary>
    public bool PartOfIdentity => Rule?.PartOfIdentity ?? true;

    /// <summary>The values of another option of the table under which this one is read (<see cref="AppliesWhenAttribute"/>);
    /// null: read always.</summary>
    public AppliesWhenAttribute? AppliesWhen => Property.GetCustomAttribute<AppliesWhenAttribute>(inherit: true);

    /// <summary>The element type of an array option, else the option's own type.</summary>
    public Type Scalar => Type.IsArray ? Type.GetElementType()! : Type;

    /// <summary>A table (<c>[optimizer]</c> inside a section) or an array of tables (<c>[[optimizer.components]]</c>).</summary>
    public bool IsTable => OptionSchema.IsOptionsType(Type) || (Type.IsArray && OptionSchema.IsOptionsType(Scalar));

    public bool IsInteger => Scalar == typeof(int) || Scalar == typeof(long);
    public bool IsNumber => IsInteger || Scalar == typeof(double) || Scalar == typeof(float);

    /// <summary>The smallest and largest values a number may take: the declared bounds within the type's own range.</summary>
    public (double Min, bool MinExclusive, double Max, bool MaxExclusive) Bounds
    {
        get
        {
            var (typeMin, typeMax) = Scalar == typeof(int) ? (int.MinValue, (double)int.MaxValue)
                : Scalar == typeof(long) ? (long.MinValue, (double)long.MaxValue) : (double.MinValue, double.MaxValue);
            var r = Rule;
            return (r is null || double.IsNaN(r.Min) ? typeMin : r.Min, r?.MinExclusive ?? false,
                    r is null || double.IsNaN(r.Max) ? typeMax : r.Max, r?.MaxExclusive ?? false);
        }
    }

    /// <summary>The type as a user reads it: <c>integer</c>, <c>number</c>, <c>array of strings</c>, <c>one of …</c>.</summary>
    public string TypeName => OptionSchema.TypeName(Type);

    /// <summary>What the declaration accepts, in words: <c>≥ 0</c>, <c>in (0, 1]</c>, <c>one of "min", "max"</c>.</summary>
    public string Accepts
    {
        get
        {
            var parts = new List<string>();
            if (IsNumber && Rule is { } r && !(double.IsNaN(r.Min) && double.IsNaN(r.Max)))
                parts.Add(!double.IsNaN(r.Min) && !double.IsNaN(r.Max)
                    ? $"in {(r.MinExclusive ? "(" : "[")}{Num(r.Min)}, {Num(r.Max)}{(r.MaxExclusive ? ")" : "]")}"
                    : !double.IsNaN(r.Min) ? $"{(r.MinExclusive ? ">" : "≥")} {Num(r.Min)}" : $"{(r.MaxExclusive ? "<" : "≤")} {Num(r.Max)}");
            if (Rule is { OneOf.Length: > 0 } o) parts.Add("one of " + string.Join(", ", o.OneOf.Select(v => $"\"{v}\"")));
            if (Scalar.IsEnum) parts.Add("one of " + string.Join(", ", OptionSchema.EnumNames(Scalar).Select(v => $"\"{v}\"")));
            if (Rule is { Regex: true }) parts.Add("a regular expression");
            if (Rule is { MaxLength: > 0 } m) parts.Add($"at most {m.MaxLength} characters");
            if (Type.IsArray && parts.Count > 0) parts[0] = "each " + parts[0];
            return string.Join("; ", parts);
        }
    }

    static string Num(double v) => v.ToString("G", CultureInfo.InvariantCulture);

    /// <summary>What is wrong with a bound value against the declaration (a predicate the binder prints after the
    /// value: "-3 must be ≥ 0"), or null when it is accepted.</summary>
    public string? Check(object? value)
    {
        if (value is Array array)
        {
            for (int i = 0; i < array.Length; i++)
                if (CheckScalar(array.GetValue(i)) is { } e) return $"has element {i} that {e}";
            return null;
        }
        return CheckScalar(value);
    }

    string? CheckScalar(object? value)
    {
        // The binder sets only named values; an options object built in code can hold others.
        if (value is Enum e && !Enum.IsDefined(e.GetType(), e))
            return "must be one of " + string.Join(", ", OptionSchema.EnumNames(e.GetType()).Select(v => $"\"{v}\""));
        if (Rule is null) return null;
        if (value is int or long or double or float)
        {
            var d = Convert.ToDouble(value, CultureInfo.InvariantCulture);
            var (min, minEx, max, maxEx) = Bounds;
            bool below = minEx ? !(d > min) : !(d >= min), above = maxEx ? !(d < max) : !(d <= max);
            return below || above ? $"must be {Accepts.Replace("each ", "")}" : null;
        }
        if (value is string s)
        {
            if (Rule.OneOf.Length > 0 && !Rule.OneOf.Contains(s)) return "must be one of " + string.Join(", ", Rule.OneOf.Select(v => $"\"{v}\""));
            if (Rule.MaxLength > 0 && s.Length > Rule.MaxLength) return $"is {s.Length} characters long; at most {Rule.MaxLength}";
            if (Rule.Regex && !IsRegex(s)) return "is not a valid regular expression";
        }
        return null;
    }

    internal static bool IsRegex(string pattern)
    {
        try { _ = new System.Text.RegularExpressions.Regex(pattern); return true; }
        catch (ArgumentException) { return false; }
    }
}

/// <summary>The options of a type, by TOML key, in declaration order.</summary>
public static class OptionSchema
{
    static readonly ConcurrentDictionary<Type, IReadOnlyList<OptionSpec>> Cache = new();

    public static IReadOnlyList<OptionSpec> Of(Type type) => Cache.GetOrAdd(type, Build);

    static IReadOnlyList<OptionSpec> Build(Type type)
    {
        // The defaults are the values of a new instance; an options type whose constructor throws has no schema
        // to offer, and the binder reports that constructor's failure itself.
        object? defaults;
        try { defaults = Activator.CreateInstance(type); }
        catch (Exception e) when (e is TargetInvocationException or TypeInitializationException or MissingMethodException) { defaults = null; }
        var docs = Docs(type.Assembly);
        return type.GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Where(p => p.CanWrite && p.SetMethod is { IsPublic: true })
            .OrderBy(p => p.MetadataToken)
            .Select(p => new OptionSpec(OptionsBinder.SnakeCase(p.Name), p, defaults is null ? null : p.GetValue(defaults),
                p.GetCustomAttribute<OptionAttribute>(inherit: true), DocOf(docs, p)))
            .ToList();
    }

    /// <summary>Every problem of an options object: each option against its declaration, then the type's own rules
    /// (<see cref="IValidatable"/>) — what the binder reports for a table, for an object built in code.</summary>
    public static IReadOnlyList<OptionError> Errors(object options)
    {
        var errors = Of(options.GetType())
            .Where(s => !s.IsTable)
            .Select(s => s.Check(s.Property.GetValue(options)) is { } e ? new OptionError(s.Key, e) : null)
            .OfType<OptionError>().ToList();
        if (options is IValidatable v) errors.AddRange(v.Validate());
        return errors;
    }

    /// <summary>Advice for keys an options type does not take but users bring from another library
    /// (<see cref="KeyAdviceAttribute"/>, its own and its base types'), by key.</summary>
    public static IReadOnlyDictionary<string, string> Advice(Type type) =>
        type.GetCustomAttributes<KeyAdviceAttribute>(inherit: true)
            .GroupBy(a => a.Key, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.First().Advice, StringComparer.Ordinal);

    public static bool IsOptionsType(Type t) => t.IsClass && t != typeof(string) && !t.IsArray && t.GetConstructor(Type.EmptyTypes) != null;

    public static IEnumerable<string> EnumNames(Type t) => Enum.GetNames(t).Select(ConfigValue.EnumName);

    public static string TypeName(Type t) =>
        t == typeof(int) || t == typeof(long) ? "integer" :
        t == typeof(double) || t == typeof(float) ? "number" :
        t == typeof(bool) ? "boolean" :
        t == typeof(string) ? "string" :
        t.IsEnum ? "string" :
        t.IsArray && IsOptionsType(t.GetElementType()!) ? "array of tables" :
        t.IsArray ? $"array of {TypeName(t.GetElementType()!)}s" :
        IsOptionsType(t) ? "table" : t.Name;

    /// <summary>A property's <c>&lt;summary&gt;</c> from the assembly's XML documentation file beside it, as one line;
    /// walks up to the declaring base type. Empty when the assembly ships no documentation.</summary>
    static string DocOf(XDocument? docs, PropertyInfo p) =>
        SummaryOf(docs, $"P:{(p.DeclaringType ?? p.ReflectedType!).FullName!.Replace('+', '.')}.{p.Name}");

    /// <summary>A type's <c>&lt;summary&gt;</c> (a plugin class's: the formula it computes and the paper it comes from), as
    /// one line; empty when its assembly ships no XML documentation beside it.</summary>
    public static string TypeDoc(Type type) => SummaryOf(Docs(type.Assembly), $"T:{type.FullName!.Replace('+', '.')}");

    static string SummaryOf(XDocument? docs, string id)
    {
        if (docs is null) return "";
        var member = docs.Descendants("member").FirstOrDefault(m => (string?)m.Attribute("name") == id);
        var summary = member?.Element("summary");
        if (summary is null) return "";
        var text = string.Concat(summary.Nodes().Select(n => n switch
        {
            XText t => t.Value,
            XElement { Name.LocalName: "see" or "seealso" } e => ((string?)e.Attribute("cref") ?? (string?)e.Attribute("langword") ?? "").Split('.', ':').Last(),
            XElement e => e.Value,
            _ => "",
        }));
        return System.Text.RegularExpressions.Regex.Replace(text, @"\s+", " ").Trim();
    }

    static readonly ConcurrentDictionary<Assembly, XDocument?> DocCache = new();

    static XDocument? Docs(Assembly a) => DocCache.GetOrAdd(a, asm =>
    {
        if (string.IsNullOrEmpty(asm.Location)) return null;
        var xml = Path.ChangeExtension(asm.Location, ".xml");
        try { return File.Exists(xml) ? XDocument.Load(xml) : null; }
        catch (Exception e) when (e is IOException or System.Xml.XmlException or UnauthorizedAccessException) { return null; }
    });
}
