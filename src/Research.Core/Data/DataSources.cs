using Research.Abstractions;
namespace Research.Core.Data;

/// <summary>What the registries of data sources and model kinds agree on.</summary>
public static class Registries
{
    /// <summary>Two types are one when they have the same full name in the same assembly file: a plugin DLL loaded again,
    /// by another host in the same process, into a load context of its own.</summary>
    public static bool SameType(Type a, Type b) =>
        a.FullName == b.FullName && string.Equals(a.Assembly.Location, b.Assembly.Location, StringComparison.Ordinal);
}

/// <summary>
/// The data sources a config may name: the built-in ones, and those a caller registers (a test's own source). The core
/// asks this registry for a source by name and never names one itself.
/// </summary>
public static class DataSources
{
    /// <summary>The built-in sources, in the order <c>research config schema</c> lists them.</summary>
    public static readonly IReadOnlyList<IDataSource> BuiltIn =
        [new FashionMnistSource(), new SyntheticSource(), new EnglishFortunes(), new GermanFortunes()];

    /// <summary>The built-in sources that read a researcher's own files (issue 30), and the captions of a vision-language
    /// model (issue 31), after <see cref="BuiltIn"/>. Kept apart
    /// from it: <see cref="BuiltIn"/> is release 2.2's datasets, whose keys the identity of a stored run restores
    /// (<see cref="Config.Release22Keys"/>); these are new, so their keys enter only the configs that name them.</summary>
    public static readonly IReadOnlyList<IDataSource> FileFormats = [new JsonlSource(), new CsvSource(), new ParquetSource(), new ImageFolderSource(), new FashionCaptionSource()];

    static readonly object Gate = new();
    static IReadOnlyList<IDataSource> _all = [.. BuiltIn, .. FileFormats];

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
                // The same type loaded again (a plugin DLL read by another host in the same process): the first one serves,
                // so every config bound in the process has options of the type its source reads.
                if (!BuiltIn.Contains(known) && !FileFormats.Contains(known) && Registries.SameType(known.GetType(), source.GetType())) return;
                throw new ArgumentException($"the data source '{source.Name}' is taken (by {known.GetType().FullName})", nameof(source));
            }
            _all = [.. _all, source];
        }
    }
}
