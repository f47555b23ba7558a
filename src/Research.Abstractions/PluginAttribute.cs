namespace Research.Abstractions;

/// <summary>
/// Names a plugin. The name is what a run config uses (<c>[schedule] name = "cosine"</c>); it must be
/// unique within its kind (schedule, method, forgetting metric) across all loaded plugin folders.
/// </summary>
/// <remarks>
/// A plugin class is public and non-abstract, and is one kind of plugin: a schedule (<see cref="ISchedule"/>), a
/// forgetting metric (<see cref="IForgettingMetric"/>), or a method implementing one or more of the method roles
/// (<see cref="IPenalty"/>, <see cref="ILossTerm"/>, <see cref="IStepObserver"/>, <see cref="IGradientHook"/>,
/// <see cref="ITaskHooks"/>, <see cref="IDataRole"/>; with <see cref="IStateful"/> when it keeps state). It has a public
/// constructor that takes either nothing or one options object. The options object is bound from the
/// plugin's TOML table: each public settable property <c>WarmupSteps</c> is the key <c>warmup_steps</c>;
/// a key with no property is an error that names it. Options may implement <see cref="IValidatable"/>.
/// </remarks>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false, Inherited = false)]
public sealed class PluginAttribute(string name) : Attribute
{
    /// <summary>The name used in configs and on the command line, lower-case with dashes.</summary>
    public string Name { get; } = name;

    /// <summary>One line for <c>research plugins list</c>.</summary>
    public string Summary { get; init; } = "";

    /// <summary>Other names that choose this plugin, with exactly its meaning (Hugging Face's <c>cosine_with_min_lr</c>
    /// for <c>cosine</c>). A run records the plugin under <see cref="Name"/>, so every spelling makes the same run.
    /// (Contract 2.2.)</summary>
    public string[] Aliases { get; init; } = [];
}

/// <summary>One problem with one option value: the TOML key and what is wrong with its value.</summary>
public sealed record OptionError(string Key, string Message);

/// <summary>Options records that check their own values implement this; the host reports every error
/// with the config file and the key before any training starts.</summary>
public interface IValidatable
{
    /// <summary>Every problem found; empty when the options are valid.</summary>
    IEnumerable<OptionError> Validate();
}
