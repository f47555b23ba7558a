using Research.Abstractions;
using Research.Core.Files;
using StbImageSharp;
using static TorchSharp.torch;

namespace Research.Core.Data;

/// <summary>[data] keys of <c>image-folder</c>. Named apart from release 2.2's keys (<c>image_root</c>, not <c>path</c>),
/// as the text-file sources' are.</summary>
public sealed record ImageFolderOptions : IValidatable
{
    /// <summary>The folder: <c>ROOT/train/CLASS/*.png|jpg</c> and <c>ROOT/test/CLASS/…</c> (and optionally
    /// <c>ROOT/val/CLASS/…</c>, the validation split), or <c>ROOT/CLASS/…</c> with the test split held out
    /// (<c>holdout_fraction</c>). A relative path is from the working directory.</summary>
    public string ImageRoot { get; init; } = "";
    /// <summary><c>grey</c> (one channel) or <c>rgb</c> (three); images of other channels are converted when decoded.</summary>
    [Option(OneOf = ["grey", "rgb"])]
    public string Color { get; init; } = "grey";
    /// <summary>[height, width] every image is resized to (bilinear); empty: every image must have the first one's size.</summary>
    [Option(Min = 1, Max = 4096)]
    public int[] Resize { get; init; } = [];
    /// <summary>Per-channel mean subtracted from pixels on the [0, 1] scale; empty: measured on the training split.</summary>
    public double[] Mean { get; init; } = [];
    /// <summary>Per-channel standard deviation the pixels are divided by; empty: measured on the training split.</summary>
    [Option(Min = 0, MinExclusive = true)]
    public double[] Std { get; init; } = [];
    /// <summary>Without train/ and test/ folders: the share of each class's images held out as the test split (seeded).</summary>
    [Option(Min = 0, Max = 1, MinExclusive = true, MaxExclusive = true)]
    public double HoldoutFraction { get; init; } = 0.2;
    /// <summary>The order of a split's images: <c>class</c> — class by class, each class's files in ordinal order
    /// (torchvision's <c>ImageFolder</c>); <c>name</c> — all classes' files in the ordinal order of their file names (a
    /// name in two classes: by class), which keeps the order of a dataset exported with its item index as the name
    /// (<c>scripts/export-formats.sh</c>), so that <c>train_limit</c>, the validation holdout and the shuffles take the
    /// items the built-in reader's run takes.</summary>
    [Option(OneOf = ["class", "name"], AddedIn = "3.0")]
    public string Order { get; init; } = "class";

    public int Channels => Color == "rgb" ? 3 : 1;

    public IEnumerable<OptionError> Validate()
    {
        if (ImageRoot.Length == 0) yield return new("image_root", "names no folder; the folder of class folders is required");
        if (Resize.Length is not (0 or 2)) yield return new("resize", $"has {Resize.Length} numbers; it is [height, width]");
        if (Mean.Length is not 0 && Mean.Length != Channels) yield return new("mean", $"has {Mean.Length} numbers; color \"{Color}\" has {Channels} channel(s)");
        if (Std.Length is not 0 && Std.Length != Channels) yield return new("std", $"has {Std.Length} numbers; color \"{Color}\" has {Channels} channel(s)");
        if ((Mean.Length == 0) != (Std.Length == 0)) yield return new(Mean.Length == 0 ? "std" : "mean", $"is given without {(Mean.Length == 0 ? "mean" : "std")}: give both, or neither (both measured on the training split)");
    }
}

/// <summary>
/// <c>image-folder</c>: images in class folders, as torchvision's <c>ImageFolder</c> reads them — the classes are the
/// training folder's sub-folder names in ordinal order (class id = index), each class's files in ordinal order (or, with
/// <see cref="ImageFolderOptions.Order"/> <c>name</c>, all files in the ordinal order of their names), PNG and
/// JPEG (<c>.png</c>, <c>.jpg</c>, <c>.jpeg</c>, any case) decoded by StbImageSharp to 8-bit grey or RGB. Pixels are
/// scaled to [0, 1] (÷ 255), normalised per channel ((x − mean) / std, given or measured on the training split) and
/// flattened channel-major to <c>input</c> [N, C·H·W] float32, as Fashion-MNIST's reader does, so a grey 28×28 folder
/// exported from it reads back bitwise equal.
/// </summary>
public sealed class ImageFolderSource : DataSource<ImageFolderOptions>
{
    public const string HoldoutStream = "image-folder-holdout";
    static readonly string[] Extensions = [".png", ".jpg", ".jpeg"];

    public override string Name => "image-folder";
    public override string Summary => "images in class folders (ROOT/[train|val|test/]CLASS/*.png|jpg, as torchvision's ImageFolder), grey or RGB";
    public override IReadOnlyList<string> Streams => [HoldoutStream];

    /// <summary>The split folders: (train, validation or null, test or null — null: held out of train).</summary>
    static (string Train, string? Validation, string? Test) Layout(ImageFolderOptions o)
    {
        var train = Path.Combine(o.ImageRoot, "train");
        if (!Directory.Exists(train)) return (o.ImageRoot, null, null);
        var test = Path.Combine(o.ImageRoot, "test");
        if (!Directory.Exists(test)) throw new DirectoryNotFoundException($"{o.ImageRoot} has a train folder and no test folder: add {test}, or put the class folders in {o.ImageRoot} itself (the test split is then held out)");
        var val = Path.Combine(o.ImageRoot, "val");
        return (train, Directory.Exists(val) ? val : null, test);
    }

    /// <summary>The class names: the training folder's sub-folders, ordinal order.</summary>
    public static IReadOnlyList<string> Classes(ImageFolderOptions o)
    {
        var train = Layout(o).Train;
        var classes = Directory.GetDirectories(train).Select(Path.GetFileName).Where(n => n is not ("train" or "val" or "test"))
            .Select(n => n!).Order(StringComparer.Ordinal).ToList();
        return classes.Count >= 1 ? classes : throw new InvalidDataException($"{train} has no class folders (ROOT/CLASS/*.png)");
    }

    /// <summary>The images of a split folder: (file, class id), classes in order, files in ordinal order.</summary>
    static List<(string File, int Label)> Files(string folder, IReadOnlyList<string> classes, string order = "class")
    {
        var known = classes.Select((c, i) => (c, i)).ToDictionary(p => p.c, p => p.i, StringComparer.Ordinal);
        foreach (var d in Directory.GetDirectories(folder).Select(Path.GetFileName))
            if (!known.ContainsKey(d!))
                throw new InvalidDataException($"{Path.Combine(folder, d!)}: class folder \"{d}\" is not a class of the training folder (its classes: {string.Join(", ", classes)})");
        var files = new List<(string, int)>();
        for (int c = 0; c < classes.Count; c++)
        {
            var dir = Path.Combine(folder, classes[c]);
            if (!Directory.Exists(dir)) continue;
            files.AddRange(Directory.GetFiles(dir).Where(f => Extensions.Contains(Path.GetExtension(f).ToLowerInvariant()))
                .Order(StringComparer.Ordinal).Select(f => (f, c)));
        }
        // A stable sort: files of equal names stay in class order.
        return order == "name" ? [.. files.OrderBy(f => Path.GetFileName(f.Item1), StringComparer.Ordinal)] : files;
    }

    /// <summary>[H, W]: <c>resize</c>, or the first training image's size (read from its header).</summary>
    static (int Height, int Width) Size(ImageFolderOptions o)
    {
        if (o.Resize.Length == 2) return (o.Resize[0], o.Resize[1]);
        var first = Files(Layout(o).Train, Classes(o)).FirstOrDefault();
        if (first.File is null) throw new InvalidDataException($"{Layout(o).Train} holds no .png or .jpg images in its class folders");
        InputFile.Require(first.File);
        using var stream = File.OpenRead(first.File);
        var info = ImageInfo.FromStream(stream) ?? throw new InvalidDataException($"{first.File}: not a PNG or JPEG image");
        return (info.Height, info.Width);
    }

    public override IEnumerable<OptionError> Check(DataRequest request)
    {
        var o = OptionsOf(request);
        if (o.ImageRoot.Length > 0 && !Directory.Exists(o.ImageRoot))
            yield return new("data.image_root", $"\"{o.ImageRoot}\" is not a folder (a relative path is from the working directory)");
    }

    public override DataShape Shape(DataRequest request)
    {
        var o = OptionsOf(request);
        var (h, w) = Size(o);
        return new DataShape(Name, InputKind.Images, (long)o.Channels * h * w, Classes(o).Count)
            { ImageChannels = o.Channels, ImageHeight = h, ImageWidth = w };
    }

    /// <summary>One image as C·H·W bytes (channel-major), resized when asked; the message names the file.</summary>
    static byte[] Decode(string file, ImageFolderOptions o, int height, int width)
    {
        InputFile.Require(file);
        ImageResult image;
        try { image = ImageResult.FromMemory(File.ReadAllBytes(file), o.Channels == 3 ? ColorComponents.RedGreenBlue : ColorComponents.Grey); }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new InvalidDataException($"{file}: not an image StbImageSharp can decode ({e.Message.Split('\n', 2)[0].TrimEnd()})");
        }
        if (image?.Data is null) throw new InvalidDataException($"{file}: not an image StbImageSharp can decode");
        int c = o.Channels, h = image.Height, w = image.Width;
        if (o.Resize.Length == 0 && (h != height || w != width))
            throw new InvalidDataException($"{file}: {w}×{h} pixels, the first training image is {width}×{height}: set data.resize = [height, width]");
        // stb gives H·W·C interleaved; the model reads C·H·W.
        var chw = new byte[c * h * w];
        for (int y = 0, k = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int ch = 0; ch < c; ch++, k++)
                    chw[(ch * h + y) * w + x] = image.Data[k];
        if (h == height && w == width) return chw;
        // Bilinear on the 0–255 scale (align_corners false, as torchvision's Resize on tensors), rounded back to bytes so
        // that every image enters the normalisation the same way.
        using var _ = NewDisposeScope();
        var t = tensor(chw, [1, c, h, w], ScalarType.Byte).to_type(ScalarType.Float32);
        var r = nn.functional.interpolate(t, [height, width], mode: InterpolationMode.Bilinear, align_corners: false)
            .round().clamp(0, 255).to_type(ScalarType.Byte);
        return r.data<byte>().ToArray();
    }

    /// <summary>Images as a [N, C·H·W] byte tensor and [N] labels.</summary>
    static (Tensor Pixels, Tensor Labels) Read(IReadOnlyList<(string File, int Label)> files, ImageFolderOptions o, int height, int width)
    {
        var d = o.Channels * height * width;
        var bytes = new byte[(long)files.Count * d];
        // Decoded in parallel; a refusal is kept by image and the first in file order is thrown, so the message is the
        // same whatever the threads did.
        var errors = new Exception?[files.Count];
        Parallel.For(0, files.Count, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, Environment.ProcessorCount) }, i =>
        {
            try { Decode(files[i].File, o, height, width).CopyTo(bytes, (long)i * d); }
            catch (Exception e) when (e is InvalidDataException or IOException or UnauthorizedAccessException) { errors[i] = e; }
        });
        if (errors.FirstOrDefault(e => e is not null) is { } first)
            throw first is InvalidDataException or NotAFileException ? first : new InvalidDataException($"{files[Array.IndexOf(errors, first)].File} cannot be read ({first.Message})", first);
        return (tensor(bytes, [files.Count, d], ScalarType.Byte), tensor(files.Select(f => (long)f.Label).ToArray(), [files.Count]));
    }

    /// <summary>Per-channel mean and standard deviation (population) of the training pixels on the [0, 1] scale, in float64.</summary>
    static (double[] Mean, double[] Std) Measure(Tensor pixels, int channels)
    {
        using var _ = NewDisposeScope();
        var x = pixels.to_type(ScalarType.Float64).div(255.0).view(pixels.shape[0], channels, -1).transpose(0, 1).reshape(channels, -1);
        var mean = x.mean([1]).data<double>().ToArray();
        var std = x.std(1, unbiased: false).data<double>().ToArray();
        return (mean, std);
    }

    public override DataSplits Load(DataRequest request)
    {
        var o = OptionsOf(request);
        var classes = Classes(o);
        var (h, w) = Size(o);
        var (trainDir, valDir, testDir) = Layout(o);
        var trainFiles = Files(trainDir, classes, o.Order);
        List<(string File, int Label)> testFiles;
        if (testDir is not null) testFiles = Files(testDir, classes, o.Order);
        else
        {
            // Per class, a seeded permutation of its files; its first ⌈f·n⌉ are the test split (each class keeps its share).
            using var g = request.Stream(HoldoutStream);
            var held = new HashSet<string>(StringComparer.Ordinal);
            foreach (var group in trainFiles.GroupBy(f => f.Label))
            {
                var items = group.ToList();
                using var perm = randperm(items.Count, generator: g);
                foreach (var i in perm.data<long>().ToArray().Take((int)Math.Ceiling(o.HoldoutFraction * items.Count)))
                    held.Add(items[(int)i].File);
            }
            testFiles = trainFiles.Where(f => held.Contains(f.File)).ToList();
            trainFiles = trainFiles.Where(f => !held.Contains(f.File)).ToList();
        }
        if (trainFiles.Count == 0) throw new InvalidDataException($"{trainDir} holds no .png or .jpg images in its class folders");
        var parts = new List<(Tensor Pixels, Tensor Labels)>();
        try
        {
            parts.Add(Read(trainFiles, o, h, w));
            parts.Add(Read(testFiles, o, h, w));
            if (valDir is not null) parts.Add(Read(Files(valDir, classes, o.Order), o, h, w));
            var (mean, std) = o.Mean.Length > 0 ? (o.Mean, o.Std) : Measure(parts[0].Pixels, o.Channels);
            TensorDataset Make((Tensor Pixels, Tensor Labels) p)
            {
                using var _ = NewDisposeScope();
                // The order of Fashion-MNIST's reader: to float32, ÷ 255, − mean, ÷ std (per channel, broadcast).
                var n = p.Pixels.shape[0];
                var m = tensor(mean.Select(v => (float)v).ToArray(), [1, o.Channels, 1]);
                var s = tensor(std.Select(v => (float)v).ToArray(), [1, o.Channels, 1]);
                var x = p.Pixels.to_type(ScalarType.Float32).div_(255f).view(n, o.Channels, -1).sub_(m).div_(s).view(n, -1);
                return new TensorDataset(x.DetachFromDisposeScope(), p.Labels.clone().DetachFromDisposeScope(), classes.Count);
            }
            var datasets = parts.Select(Make).ToList();
            return LoadedSplits.Handover(datasets[0], datasets[1], datasets.Count > 2 ? datasets[2] : null);
        }
        finally
        {
            foreach (var p in parts) { p.Pixels.Dispose(); p.Labels.Dispose(); }
        }
    }
}
