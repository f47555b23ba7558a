namespace Research.Core.Config;

/// <summary>One problem in a run config: the file, the TOML key path (<c>optimizer.lr</c>) and what is wrong.</summary>
public sealed record ConfigError(string File, string Key, string Message)
{
    public override string ToString() => $"{File}: {Key}: {Message}";
}

/// <summary>A user mistake in a config or an option: reported as one line per problem, never a stack trace.</summary>
public sealed class ConfigException(IReadOnlyList<ConfigError> errors)
    : Exception(string.Join(Environment.NewLine, errors))
{
    public IReadOnlyList<ConfigError> Errors { get; } = errors;

    public ConfigException(string file, string key, string message) : this([new ConfigError(file, key, message)]) { }
}
