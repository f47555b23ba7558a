using System.Buffers.Binary;
using System.Net;
using System.Numerics;
using Google.Protobuf;

namespace Research.Core.Tracking;

/// <summary>
/// Writes a run's values as TensorBoard event files beside the run store: <c>tensorboard --logdir runs</c> shows every
/// run. Scalars (the store's metrics and evaluations), histograms (Δθ per parameter group at task ends) and images
/// (a study's accuracy matrix).
/// </summary>
/// <remarks>
/// The format (TensorFlow's <c>core/util/event.proto</c>, <c>summary.proto</c>, <c>core/lib/io/record_writer.cc</c>):
/// a file of records, each <c>uint64 length</c>, <c>uint32 masked CRC-32C of the length</c>, the bytes of one
/// <c>Event</c> message, <c>uint32 masked CRC-32C of the bytes</c>, all little-endian, with mask(c) = ((c ≫ 15) | (c ≪
/// 17)) + 0xa282ead8. The first event carries <c>file_version = "brain.Event:2"</c>. Messages are encoded with
/// Google.Protobuf's <see cref="CodedOutputStream"/> field by field rather than from generated classes: the writer needs
/// five messages and a handful of fields, and the test reads them back with a decoder of its own.
/// <para>A resumed run writes a new file that starts with a <c>SessionLog</c> START at the step it resumes from: TensorBoard
/// then drops what the interrupted process wrote from that step on, as the store drops its rows after the checkpoint.</para>
/// </remarks>
public sealed class TensorBoardWriter : IDisposable
{
    // Field numbers of the messages written (wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32).
    const int EventWallTime = 1, EventStep = 2, EventFileVersion = 3, EventSummary = 5, EventSessionLog = 6;
    const int SessionLogStatus = 1, SessionLogStart = 1;
    const int SummaryValue = 1;
    const int ValueTag = 1, ValueSimple = 2, ValueImage = 4, ValueHisto = 5;
    const int ImageHeight = 1, ImageWidth = 2, ImageColorspace = 3, ImageEncoded = 4;
    const int HistoMin = 1, HistoMax = 2, HistoNum = 3, HistoSum = 4, HistoSumSquares = 5, HistoLimits = 6, HistoBuckets = 7;

    readonly FileStream _file;
    readonly object _gate = new();
    bool _disposed;

    /// <summary>The event file this writer appends to.</summary>
    public string FilePath { get; }

    TensorBoardWriter(string path)
    {
        FilePath = path;
        _file = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.Read, 1 << 16);
    }

    /// <summary>
    /// A new event file in <paramref name="directory"/> (created if missing), named as TensorFlow names them
    /// (<c>events.out.tfevents.&lt;seconds&gt;.&lt;host&gt;.&lt;pid&gt;</c>, so files sort by when they were started), with its
    /// version event and, for a resumed run, the START that makes TensorBoard drop events from
    /// <paramref name="resumedAtStep"/> on.
    /// </summary>
    public static TensorBoardWriter Open(string directory, long? resumedAtStep = null)
    {
        Directory.CreateDirectory(directory);
        var seconds = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        string path;
        int attempt = 0;
        do path = Path.Combine(directory, $"events.out.tfevents.{seconds:D10}.{Dns.GetHostName()}.{Environment.ProcessId}{(attempt++ == 0 ? "" : $".{attempt}")}");
        while (File.Exists(path));
        var writer = new TensorBoardWriter(path);
        writer.Write(0, e => e.Field(EventFileVersion, "brain.Event:2"));
        if (resumedAtStep is { } step)
            writer.Write(step, e => e.Message(EventSessionLog, log => log.Varint(SessionLogStatus, SessionLogStart)));
        writer.Flush();
        return writer;
    }

    /// <summary>One scalar (stored as float32, as TensorBoard keeps them).</summary>
    public void Scalar(string tag, long step, double value) =>
        Write(step, e => e.Message(EventSummary, s => s.Message(SummaryValue, v =>
        {
            v.Field(ValueTag, tag);
            v.Fixed32(ValueSimple, (float)value);
        })));

    /// <summary>A histogram of <paramref name="values"/> in <paramref name="buckets"/> equal-width buckets between their
    /// minimum and maximum (bucket i counts the values in (limit[i−1], limit[i]], the first from the minimum on).</summary>
    public void Histogram(string tag, long step, ReadOnlySpan<float> values, int buckets = 30)
    {
        if (values.Length == 0) return;
        double min = double.PositiveInfinity, max = double.NegativeInfinity, sum = 0, squares = 0;
        foreach (var x in values) { min = Math.Min(min, x); max = Math.Max(max, x); sum += x; squares += (double)x * x; }
        int n = max > min ? buckets : 1;
        var width = (max - min) / n;
        var limits = new double[n];
        for (int i = 0; i < n; i++) limits[i] = i == n - 1 ? max : min + (i + 1) * width;
        var counts = new double[n];
        foreach (var x in values) counts[n == 1 ? 0 : Math.Clamp((int)Math.Ceiling((x - min) / width) - 1, 0, n - 1)]++;
        double num = values.Length;
        Write(step, e => e.Message(EventSummary, s => s.Message(SummaryValue, v =>
        {
            v.Field(ValueTag, tag);
            v.Message(ValueHisto, h =>
            {
                h.Fixed64(HistoMin, min); h.Fixed64(HistoMax, max); h.Fixed64(HistoNum, num);
                h.Fixed64(HistoSum, sum); h.Fixed64(HistoSumSquares, squares);
                h.Packed(HistoLimits, limits); h.Packed(HistoBuckets, counts);
            });
        })));
    }

    /// <summary>An encoded image (PNG) of the given size; colorspace 4 is RGBA.</summary>
    public void Image(string tag, long step, byte[] png, int width, int height, int colorspace = 4) =>
        Write(step, e => e.Message(EventSummary, s => s.Message(SummaryValue, v =>
        {
            v.Field(ValueTag, tag);
            v.Message(ValueImage, i =>
            {
                i.Varint(ImageHeight, height); i.Varint(ImageWidth, width); i.Varint(ImageColorspace, colorspace);
                i.Bytes(ImageEncoded, png);
            });
        })));

    /// <summary>What was written reaches the file, where TensorBoard reads it.</summary>
    public void Flush()
    {
        lock (_gate) if (!_disposed) _file.Flush();
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            _file.Dispose();
        }
    }

    void Write(long step, Action<Encoder> fields)
    {
        var e = new Encoder();
        e.Fixed64(EventWallTime, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0);
        e.Varint(EventStep, step);
        fields(e);
        var data = e.ToArray();
        Span<byte> header = stackalloc byte[12];
        BinaryPrimitives.WriteUInt64LittleEndian(header, (ulong)data.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], MaskedCrc32C(header[..8]));
        Span<byte> footer = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(footer, MaskedCrc32C(data));
        lock (_gate)
        {
            if (_disposed) return;
            _file.Write(header);
            _file.Write(data);
            _file.Write(footer);
        }
    }

    /// <summary>CRC-32C (Castagnoli), with the hardware instruction where there is one, masked as TFRecord masks it
    /// (a CRC of data that holds CRCs is then not trivially related to them).</summary>
    public static uint MaskedCrc32C(ReadOnlySpan<byte> data)
    {
        uint crc = ~0u;
        int i = 0;
        for (; i + 8 <= data.Length; i += 8) crc = BitOperations.Crc32C(crc, BinaryPrimitives.ReadUInt64LittleEndian(data[i..]));
        for (; i < data.Length; i++) crc = BitOperations.Crc32C(crc, data[i]);
        crc = ~crc;
        return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
    }

    /// <summary>One message's fields, in protobuf's wire format.</summary>
    sealed class Encoder
    {
        readonly MemoryStream _bytes = new();
        readonly CodedOutputStream _out;

        public Encoder() => _out = new CodedOutputStream(_bytes, leaveOpen: true);

        public void Varint(int field, long value) { _out.WriteTag(field, WireFormat.WireType.Varint); _out.WriteInt64(value); }
        public void Fixed64(int field, double value) { _out.WriteTag(field, WireFormat.WireType.Fixed64); _out.WriteDouble(value); }
        public void Fixed32(int field, float value) { _out.WriteTag(field, WireFormat.WireType.Fixed32); _out.WriteFloat(value); }
        public void Field(int field, string value) { _out.WriteTag(field, WireFormat.WireType.LengthDelimited); _out.WriteString(value); }
        public void Bytes(int field, byte[] value) { _out.WriteTag(field, WireFormat.WireType.LengthDelimited); _out.WriteBytes(ByteString.CopyFrom(value)); }

        /// <summary>A repeated double field, packed: one length-delimited run of fixed64 values.</summary>
        public void Packed(int field, double[] values)
        {
            _out.WriteTag(field, WireFormat.WireType.LengthDelimited);
            _out.WriteLength(values.Length * 8);
            foreach (var v in values) _out.WriteDouble(v);
        }

        /// <summary>An embedded message: its own fields, written as a length-delimited field.</summary>
        public void Message(int field, Action<Encoder> fields)
        {
            var inner = new Encoder();
            fields(inner);
            _out.WriteTag(field, WireFormat.WireType.LengthDelimited);
            _out.WriteBytes(ByteString.CopyFrom(inner.ToArray()));
        }

        public byte[] ToArray()
        {
            _out.Flush();
            return _bytes.ToArray();
        }
    }

    /// <summary>The tag of a store metric: a split's language-model measures under the split (<c>val/perplexity</c>), the
    /// training step's under <c>train/</c>, a plugin's logged values as they are (<c>plugin/NAME/…</c>), anything else
    /// (probes) under <c>probes/</c>. TensorBoard groups by the part before the first slash.</summary>
    public static string MetricTag(string key) =>
        key switch
        {
            "train_loss" => "train/loss",
            "lr" or "grad_norm" or "items_per_second" or "task" or "loss_scale" or "skipped_steps" => $"train/{key}",
            _ when key.EndsWith("_perplexity", StringComparison.Ordinal) => $"{key[..^"_perplexity".Length]}/perplexity",
            _ when key.EndsWith("_bits_per_byte", StringComparison.Ordinal) => $"{key[..^"_bits_per_byte".Length]}/bits_per_byte",
            _ when key.StartsWith("plugin/", StringComparison.Ordinal) => key,
            _ => $"probes/{key}",
        };
}
