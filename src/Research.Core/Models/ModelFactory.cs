using Research.Core.Config;
using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Models;

/// <summary>
/// What every kind shares on the way from a <c>[model]</c> section to a network: the published models and their folder,
/// the file <c>init_from</c> names, and <c>reinit</c>. The kind itself (<see cref="ModelKinds"/>) builds and loads; a run's
/// model is planned once (<see cref="ModelPlan"/>).
/// </summary>
public static class ModelFactory
{
    /// <summary>The published model <c>init_from</c> names, if it names one.</summary>
    public static string? PublishedName(string initFrom) => PublishedModels.All.FirstOrDefault(p => p.Name == initFrom)?.Name;

    /// <summary>The folder published models are unpacked into: <c>models_dir</c> (relative to the config file), else the default.</summary>
    public static string ModelsDir(ModelSection m, string configFile) => m.ModelsDir.Length > 0
        ? Path.GetFullPath(m.ModelsDir, Path.GetDirectoryName(Path.GetFullPath(configFile))!)
        : PublishedModels.DefaultFolder();

    /// <summary>
    /// The file <c>init_from</c> names, resolved: a published model's weights (unpacked into the models folder), else the
    /// path relative to the config file's folder, then to the working directory. Empty when there is none.
    /// </summary>
    public static string InitPath(ModelSection m, string configFile)
    {
        if (m.InitFrom.Length == 0) return "";
        if (PublishedName(m.InitFrom) is { } name)
            return PublishedModels.Fetch(name, ModelsDir(m, configFile)).File(PublishedModels.WeightsFile(name));
        var path = Path.GetFullPath(m.InitFrom, Path.GetDirectoryName(Path.GetFullPath(configFile))!);
        return File.Exists(path) || Directory.Exists(path) ? path : Path.GetFullPath(m.InitFrom);
    }

    /// <summary>
    /// Re-initialises the parameters and buffers under <paramref name="prefixes"/> as a fresh model of the same config
    /// would have them, taken from a model <paramref name="fresh"/> builds (each kind's own initialisation, not a generic one).
    /// </summary>
    public static void Reinitialise(nn.Module<Tensor, Tensor> model, Func<nn.Module<Tensor, Tensor>> fresh, IReadOnlyCollection<string> prefixes)
    {
        using var source = fresh();
        var values = source.state_dict();
        using var _ = no_grad();
        foreach (var (name, target) in model.state_dict())
            if (prefixes.Any(p => name == p || name.StartsWith(p + ".")))
                target.copy_(values[name]);
    }
}
