namespace Research.Core.Config;

/// <summary>
/// The plugins a config may name, as whatever loads them knows them (the plugin host): the canonical config binds a
/// plugin's table through its options type. Declared here so the config knows no plugin loader.
/// </summary>
public interface IPluginOptions
{
    /// <summary>The plugin named <paramref name="name"/> (or by an alias) in a config's table <paramref name="table"/>
    /// (<c>schedule</c>, <c>methods</c>, <c>metrics</c>): the name runs record and its options type (null when it has none);
    /// null when no such plugin is loaded.</summary>
    (string Name, Type? OptionsType)? Lookup(string table, string name);
}
