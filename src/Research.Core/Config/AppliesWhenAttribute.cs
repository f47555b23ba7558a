namespace Research.Core.Config;

/// <summary>
/// Declares that an option is read only while another option of the same table has one of some values: Adam's
/// <c>beta1</c> only when <c>name</c> is <c>"adamw"</c> or <c>"adam"</c>, SGD's <c>momentum</c> only when it is <c>"sgd"</c>.
/// Written while that option has another value, the key means nothing to the run, so the binder refuses it, even at its
/// default (the user wrote it, and expects it to count); the resolved TOML leaves it out, so a run's <c>--dry-run</c> output
/// reads back; <c>research config schema</c> prints the condition. The canonical config keeps the option at its default,
/// which is all it can hold there, so the identity of every config that is still accepted is what it was.
/// </summary>
[AttributeUsage(AttributeTargets.Property, AllowMultiple = false, Inherited = true)]
public sealed class AppliesWhenAttribute(string key, params string[] values) : Attribute
{
    /// <summary>The other option's key, in the same table (<c>name</c>).</summary>
    public string Key { get; } = key;

    /// <summary>The values of <see cref="Key"/>, as a config writes them, under which the option is read.</summary>
    public IReadOnlyList<string> Values { get; } = values;

    /// <summary>Whether the option is read while <see cref="Key"/> holds <paramref name="value"/> (a bound value or a
    /// canonical one).</summary>
    public bool Holds(object? value) => Values.Contains(Spelled(value), StringComparer.Ordinal);

    /// <summary>The condition as a config writes it: <c>name = "adamw" or "adam"</c>.</summary>
    public override string ToString() => $"{Key} = {string.Join(" or ", Values.Select(v => $"\"{v}\""))}";

    /// <summary>A value as its config spelling: a string (an enum in kebab case) as it is, anything else as TOML text.</summary>
    internal static string Spelled(object? value) => value switch
    {
        string s => s,
        System.Text.Json.Nodes.JsonValue j when j.TryGetValue<string>(out var s) => s,
        _ => ConfigValue.Toml(value) is string s ? s : ConfigValue.Text(value),
    };
}
