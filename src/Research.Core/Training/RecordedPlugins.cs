using System.Security.Cryptography;
using System.Text.Json;
using Research.Core.Plugins;

namespace Research.Core.Training;

/// <summary>
/// The plugin DLLs a run recorded (<see cref="PluginRecord"/>: role, name, path, version, SHA-256), read back so that a
/// stored study's metrics can be computed again with the DLLs that computed them, without naming their folders.
/// </summary>
public static class RecordedPlugins
{
    /// <summary>Lowercase hex SHA-256 of a file's bytes: what a run records of each plugin DLL.</summary>
    public static string Sha256(string path)
    {
        using var f = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(f));
    }

    /// <summary>The records of a run's <c>plugins</c> column (JSON); none when the column is empty or not such a list (runs
    /// stored before plugins were recorded).</summary>
    public static IReadOnlyList<PluginRecord> Parse(string? json)
    {
        if (string.IsNullOrWhiteSpace(json)) return [];
        try { return JsonSerializer.Deserialize<List<PluginRecord>>(json)?.Where(r => r is { Path: not null, Name: not null }).ToList() ?? []; }
        catch (JsonException) { return []; }
    }

    /// <summary>
    /// The DLLs of a run's forgetting metrics to load again: each metric the built-in folder does not provide
    /// (<paramref name="builtIn"/>: the built-ins are the running build's, recorded by the code version), checked to be
    /// the file the run loaded — still at its recorded path, with its recorded SHA-256. A DLL that moved or changed is
    /// refused in one line naming the run, the metric and the DLL: a metric computed by other code is not the run's.
    /// </summary>
    /// <exception cref="PluginException">A recorded metric DLL is missing or its SHA-256 differs.</exception>
    public static IReadOnlyList<string> MetricFiles(IEnumerable<PluginRecord> records, Func<string, bool> builtIn, string run)
    {
        var metric = PluginHost.RoleName(PluginRole.ForgettingMetric);
        var files = new List<string>();
        foreach (var r in records.Where(r => r.Role == metric && !builtIn(r.Name)))
        {
            if (!File.Exists(r.Path))
                throw new PluginException($"{run}: {metric} '{r.Name}' was loaded from {r.Path}, which is no longer there " +
                                          "(moved or deleted); pass --plugins DIR to load it from where it is now");
            var now = Sha256(r.Path);
            if (!string.Equals(now, r.Sha256, StringComparison.OrdinalIgnoreCase))
                throw new PluginException($"{run}: {metric} '{r.Name}' was loaded from {r.Path} with SHA-256 {r.Sha256}, and that " +
                                          $"file's SHA-256 is now {now}: the DLL changed since the run; pass --plugins DIR to compute with it anyway");
            if (!files.Contains(r.Path, StringComparer.Ordinal)) files.Add(r.Path);
        }
        return files;
    }
}
