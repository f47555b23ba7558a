namespace Research.Core.Data;

/// <summary>
/// The data sources a config may name: the built-in ones, and those a caller registers (a test's own source). The core
/// asks this registry for a source by name and never names one itself.
/// </summary>
public static class DataSources
{
    /// <summary>The built-in sources, in the order <c>research config schema</c> lists them.</summary>
    public static readonly IReadOnlyList<IDataSource> BuiltIn =
        [new FashionMnistSource(), new SyntheticSource(), new EnglishFortunes(), new GermanFortunes()];

    static readonly object Gate = new();
    static IReadOnlyList<IDataSource> _all = BuiltIn;

    /// <summary>Every source, the built-in ones first, then the registered ones in their order.</summary>
    public static IReadOnlyList<IDataSource> All => _all;

    /// <summary>The names of every source.</summary>
    public static IEnumerable<string> Names => _all.Select(s => s.Name);

    /// <summary>The source of this name, or null.</summary>
    public static IDataSource? Find(string name) => _all.FirstOrDefault(s => s.Name == name);

    /// <summary>The source of this name.</summary>
    /// <exception cref="KeyNotFoundException">No source has the name.</exception>
    public static IDataSource Get(string name) => Find(name)
        ?? throw new KeyNotFoundException($"no data source '{name}' (the sources: {string.Join(", ", Names)})");

    /// <summary>Adds a source defined elsewhere; registering the same source again does nothing.</summary>
    /// <exception cref="ArgumentException">Another source has its name.</exception>
    public static void Register(IDataSource source)
    {
        lock (Gate)
        {
            if (Find(source.Name) is { } known)
            {
                if (known.GetType() == source.GetType()) return;
                throw new ArgumentException($"the data source '{source.Name}' is taken (by {known.GetType().FullName})", nameof(source));
            }
            _all = [.. _all, source];
        }
    }
}
