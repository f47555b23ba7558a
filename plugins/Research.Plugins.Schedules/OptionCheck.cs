using Research.Abstractions;

namespace Research.Plugins.Schedules;

/// <summary>The checks the options records share. Each returns the error, or null when the value is fine;
/// comparisons are written so that NaN fails them. A message is a predicate on the value, which the host
/// prints before it ("-3 must be ≥ 0").</summary>
internal static class OptionCheck
{
    public static IEnumerable<OptionError> Errors(params OptionError?[] checks) => checks.OfType<OptionError>();

    public static OptionError? NonNegative(string key, double value) =>
        value >= 0 && double.IsFinite(value) ? null : new(key, "must be ≥ 0");

    public static OptionError? Positive(string key, double value) =>
        value > 0 && double.IsFinite(value) ? null : new(key, "must be > 0");

    public static OptionError? AtLeastOne(string key, double value) =>
        value >= 1 && double.IsFinite(value) ? null : new(key, "must be ≥ 1");

    /// <summary>A fraction of the peak learning rate, or of the run.</summary>
    public static OptionError? Ratio(string key, double value) =>
        value is >= 0 and <= 1 ? null : new(key, "must be in [0, 1]");

    /// <summary>A multiplicative decay factor: 0 would stop training, above 1 would not decay.</summary>
    public static OptionError? DecayFactor(string key, double value) =>
        value is > 0 and <= 1 ? null : new(key, "must be in (0, 1]");

    /// <summary>A share strictly between none and all (of the run, or of the rate).</summary>
    public static OptionError? OpenUnit(string key, double value) =>
        value is > 0 and < 1 ? null : new(key, "must be in (0, 1)");

    /// <summary>An enum value that has a name: the host binds only names, but a cast can make others.</summary>
    public static OptionError? Named<TEnum>(string key, TEnum value) where TEnum : struct, Enum =>
        Enum.IsDefined(value)
            ? null
            : new(key, $"must be one of {string.Join(", ", Enum.GetNames<TEnum>().Select(n => n.ToLowerInvariant()))}");
}
