using System.Diagnostics;
using System.Reflection;
using System.Text.Json;

namespace Research.Core.Tracking;

/// <summary>Where a run's code came from: the build's commit and, when run inside a git work tree, whether it was dirty.</summary>
public static class Provenance
{
    public static string CodeVersion()
    {
        var built = typeof(Provenance).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "unknown";
        var live = Git("describe --always --dirty --abbrev=12");
        return live is null ? built : $"{built} (work tree {live})";
    }

    static string? Git(string args)
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo("git", args)
            { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false });
            if (p is null) return null;
            var output = p.StandardOutput.ReadToEnd().Trim();
            p.WaitForExit(5000);
            return p.ExitCode == 0 && output.Length > 0 ? output : null;
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException) { return null; }
    }

    /// <summary>Versions of the packages that shape results, as JSON.</summary>
    public static string PackageVersions()
    {
        static string Version(Type t) =>
            t.Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion.Split('+')[0]
            ?? t.Assembly.GetName().Version?.ToString() ?? "?";
        var versions = new SortedDictionary<string, string>
        {
            ["TorchSharp"] = Version(typeof(TorchSharp.torch)),
            ["Research.Abstractions"] = typeof(Research.Abstractions.ISchedule).Assembly.GetName().Version!.ToString(),
            ["Microsoft.Data.Sqlite"] = Version(typeof(Microsoft.Data.Sqlite.SqliteConnection)),
            ["Tomlyn"] = Version(typeof(Tomlyn.TomlSerializer)),
            ["McMaster.NETCore.Plugins"] = Version(typeof(McMaster.NETCore.Plugins.PluginLoader)),
            [".NET"] = Environment.Version.ToString(),
        };
        return JsonSerializer.Serialize(versions);
    }
}
