using System.Buffers.Binary;
using System.IO.Compression;
using Research.Core.Files;
using static TorchSharp.torch;

namespace Research.Core.Data;

/// <summary>
/// Fashion-MNIST (Xiao et al. 2017): 60,000 training and 10,000 test images, 28×28, 10 classes, read from
/// the four gzipped IDX files. Pixels are scaled to [0, 1] and standardised with the training set's mean
/// <see cref="PixelMean"/> and standard deviation <see cref="PixelStd"/>, flattened to 784 features.
/// </summary>
public static class FashionMnist
{
    /// <summary>The training set's mean pixel on the [0, 1] scale.</summary>
    public const float PixelMean = 0.2860f;
    /// <summary>The training set's pixel standard deviation on the [0, 1] scale.</summary>
    public const float PixelStd = 0.3530f;
    /// <summary>Image side: the 784 features are 28 rows of 28 pixels.</summary>
    public const int Side = 28;

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
        var images = ReadIdx(imagesPath, 2051, 3, out var dims);
        var labels = ReadIdx(labelsPath, 2049, 1, out var labelDims);
        if (dims[0] != labelDims[0])
            throw new InvalidDataException($"{imagesPath} holds {dims[0]} images and {labelsPath} {labelDims[0]} labels; they must match");
        if (dims[1] != 28 || dims[2] != 28) throw new InvalidDataException($"{imagesPath}: images are {dims[1]}×{dims[2]}, Fashion-MNIST's are 28×28");
        var bad = Array.FindIndex(labels, l => l >= 10);
        if (bad >= 0) throw new InvalidDataException($"{labelsPath}: label {labels[bad]} of item {bad} is not a class (0–9)");
        int n = dims[0], d = dims[1] * dims[2];
        using var _ = NewDisposeScope();
        var x = tensor(images, [n, d], ScalarType.Byte).to_type(ScalarType.Float32).div_(255f).sub_(PixelMean).div_(PixelStd);
        var y = tensor(labels, [n], ScalarType.Byte).to_type(ScalarType.Int64);
        return new TensorDataset(x.DetachFromDisposeScope(), y.DetachFromDisposeScope(), 10);
    }

    /// <summary>The pixels [B, 28, 28] on the [0, 1] scale of standardised features [B, 784] (the inverse of the reader's
    /// standardisation).</summary>
    public static Tensor Pixels(Tensor features) => features.mul(PixelStd).add_(PixelMean).view(-1, Side, Side);

    /// <summary>The most a Fashion-MNIST IDX file decompresses to (60,000 × 784 bytes and a header, with room): a damaged
    /// or hostile file is refused before it fills memory.</summary>
    const long MaxDecompressed = 64L << 20;

    /// <summary>
    /// IDX: big-endian magic (0x0000 type ndim), then ndim big-endian int32 sizes, then the bytes. Every size is checked
    /// against the bytes there are before anything is allocated from it, and every problem names the file: an empty file
    /// or one that is not a regular file (<see cref="InputFile"/>: reading a FIFO would wait forever), a
    /// gzip stream that is cut or damaged, a wrong magic or rank, a header that promises more bytes than follow.
    /// </summary>
    static byte[] ReadIdx(string path, int expectedMagic, int rank, out int[] dims)
    {
        if (InputFile.Length(path) == 0) throw new InvalidDataException($"{path} is empty");
        byte[] bytes;
        try
        {
            using var gz = new GZipStream(System.IO.File.OpenRead(path), CompressionMode.Decompress);
            using var ms = new MemoryStream();
            var chunk = new byte[1 << 16];
            int read;
            while ((read = gz.Read(chunk)) > 0)
            {
                if (ms.Length + read > MaxDecompressed) throw new InvalidDataException($"{path} decompresses to more than {MaxDecompressed >> 20} MB: not a Fashion-MNIST file");
                ms.Write(chunk, 0, read);
            }
            bytes = ms.ToArray();
        }
        catch (Exception e) when (e is IOException or InvalidDataException && !e.Message.StartsWith(path))
        {
            throw new InvalidDataException($"{path} is not a readable gzip file ({e.Message})", e);
        }
        var header = 4 + 4 * rank;
        if (bytes.Length < header) throw new InvalidDataException($"{path} holds {bytes.Length} bytes, shorter than an IDX header of rank {rank} ({header})");
        var magic = BinaryPrimitives.ReadInt32BigEndian(bytes);
        if (magic != expectedMagic) throw new InvalidDataException($"{path}: IDX magic {magic}, expected {expectedMagic} (unsigned bytes, rank {rank})");
        dims = new int[rank];
        long count = 1;
        for (int i = 0; i < rank; i++)
        {
            dims[i] = BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(4 + 4 * i));
            if (dims[i] <= 0) throw new InvalidDataException($"{path}: dimension {i} of the IDX header is {dims[i]}");
            count *= dims[i];
        }
        if (count != bytes.Length - header)
            throw new InvalidDataException($"{path}: the IDX header promises {count} bytes of data ({string.Join(" × ", dims)}), the file holds {bytes.Length - header}");
        return bytes[header..];
    }
}
