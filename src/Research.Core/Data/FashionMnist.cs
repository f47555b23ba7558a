using System.Buffers.Binary;
using System.IO.Compression;
using static TorchSharp.torch;

namespace Research.Core.Data;

/// <summary>
/// Fashion-MNIST (Xiao et al. 2017): 60,000 training and 10,000 test images, 28×28, 10 classes, read from
/// the four gzipped IDX files. Pixels are scaled to [0, 1] and standardised with the training set's mean
/// 0.2860 and standard deviation 0.3530, flattened to 784 features.
/// </summary>
public static class FashionMnist
{
    public const string DebianDirectory = "/usr/share/datasets/fashion-mnist";
    public static readonly string[] ClassNames =
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

    /// <summary>The folder to read: the given one, else $FASHION_MNIST_DIR, else the Debian package's folder.</summary>
    public static string ResolveDirectory(string configured) =>
        configured.Length > 0 ? configured
        : Environment.GetEnvironmentVariable("FASHION_MNIST_DIR") is { Length: > 0 } env ? env
        : DebianDirectory;

    public static (TensorDataset Train, TensorDataset Test) Load(string directory)
    {
        string File(string name)
        {
            var path = Path.Combine(directory, name);
            if (!System.IO.File.Exists(path))
                throw new FileNotFoundException(
                    $"Fashion-MNIST file {path} is missing. Install the Debian package dataset-fashion-mnist " +
                    "(apt-get install dataset-fashion-mnist), or set [data] path or $FASHION_MNIST_DIR to a folder " +
                    "with the four files of the dataset's public release.", path);
            return path;
        }
        return (Read(File("train-images-idx3-ubyte.gz"), File("train-labels-idx1-ubyte.gz")),
                Read(File("t10k-images-idx3-ubyte.gz"), File("t10k-labels-idx1-ubyte.gz")));
    }

    static TensorDataset Read(string imagesPath, string labelsPath)
    {
        var images = ReadIdx(imagesPath, 2051, out var dims);
        var labels = ReadIdx(labelsPath, 2049, out var labelDims);
        if (dims[0] != labelDims[0]) throw new InvalidDataException($"{imagesPath} and {labelsPath} hold different counts");
        int n = dims[0], d = dims[1] * dims[2];
        using var _ = NewDisposeScope();
        var x = tensor(images, [n, d], ScalarType.Byte).to_type(ScalarType.Float32).div_(255f).sub_(0.2860f).div_(0.3530f);
        var y = tensor(labels, [n], ScalarType.Byte).to_type(ScalarType.Int64);
        return new TensorDataset(x.DetachFromDisposeScope(), y.DetachFromDisposeScope(), 10);
    }

    /// <summary>IDX: big-endian magic (0x0000 type ndim), then ndim big-endian int32 sizes, then the bytes.</summary>
    static byte[] ReadIdx(string path, int expectedMagic, out int[] dims)
    {
        using var gz = new GZipStream(System.IO.File.OpenRead(path), CompressionMode.Decompress);
        using var ms = new MemoryStream();
        gz.CopyTo(ms);
        var buf = ms.GetBuffer().AsSpan(0, (int)ms.Length);
        var magic = BinaryPrimitives.ReadInt32BigEndian(buf);
        if (magic != expectedMagic) throw new InvalidDataException($"{path}: IDX magic {magic}, expected {expectedMagic}");
        var ndim = magic & 0xff;
        dims = new int[ndim];
        for (int i = 0; i < ndim; i++) dims[i] = BinaryPrimitives.ReadInt32BigEndian(buf[(4 + 4 * i)..]);
        var header = 4 + 4 * ndim;
        return buf[header..].ToArray();
    }
}
