using System.Text;
using static TorchSharp.torch;

namespace Research.Core.Text;

/// <summary>One document of a corpus: its cleaned text and its topic (for fortunes, the file it came from).</summary>
public sealed record TextEntry(string Text, string Topic);

/// <summary>The three parts of a corpus split by entry; each keeps the corpus order.</summary>
public sealed record TextSplit(IReadOnlyList<TextEntry> Train, IReadOnlyList<TextEntry> Validation, IReadOnlyList<TextEntry> Test);

/// <summary>What reading a corpus kept and dropped, for reports.</summary>
/// <param name="Files">The files read, in reading order (one name per file, however many links lead to it).</param>
/// <param name="Dropped">Files not read on purpose, with the reason.</param>
/// <param name="RawEntries">Entries as the files delimit them, before cleaning.</param>
/// <param name="EmptyEntries">Entries that are empty after cleaning (a file that starts with a separator line).</param>
/// <param name="Duplicates">Entries equal to an earlier one after cleaning; the first keeps its topic.</param>
public sealed record CorpusReport(IReadOnlyList<string> Files, IReadOnlyDictionary<string, string> Dropped, int RawEntries, int EmptyEntries, int Duplicates);

/// <summary>
/// A corpus of cleaned, de-duplicated documents with topics, in a fixed order (files by ordinal name, entries in file
/// order), so that a split depends only on the seed.
/// </summary>
public sealed class TextCorpus
{
    public TextCorpus(string name, IReadOnlyList<TextEntry> entries, CorpusReport report)
    {
        Name = name;
        Entries = entries;
        Report = report;
        TopicCounts = entries.GroupBy(e => e.Topic, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
    }

    /// <summary>The corpus's name; it also names the random stream of its split.</summary>
    public string Name { get; }
    public IReadOnlyList<TextEntry> Entries { get; }
    public CorpusReport Report { get; }
    public IReadOnlyDictionary<string, int> TopicCounts { get; }

    /// <summary>Unicode code points over all entries.</summary>
    public long Characters => Entries.Sum(e => TextCleaning.CodePoints(e.Text));

    /// <summary>UTF-8 bytes over all entries (the denominator of bits per byte).</summary>
    public long Utf8Bytes => Entries.Sum(e => (long)Encoding.UTF8.GetByteCount(e.Text));

    /// <summary>
    /// The topics with at least <paramref name="minEntries"/> entries, in ordinal order: the classes of a topic
    /// classification task (a topic's class id is its index in this list).
    /// </summary>
    public IReadOnlyList<string> TopicsWithAtLeast(int minEntries) =>
        TopicCounts.Where(kv => kv.Value >= minEntries).Select(kv => kv.Key).Order(StringComparer.Ordinal).ToList();

    /// <summary>The entries whose topic is one of <paramref name="topics"/>, in corpus order.</summary>
    public TextCorpus WithTopics(IReadOnlyCollection<string> topics)
    {
        var keep = topics.ToHashSet(StringComparer.Ordinal);
        var unknown = keep.Where(t => !TopicCounts.ContainsKey(t)).Order(StringComparer.Ordinal).ToList();
        if (unknown.Count > 0)
            throw new ArgumentException($"corpus {Name} has no topic {string.Join(", ", unknown)} (it has: {string.Join(", ", TopicCounts.Keys.Order(StringComparer.Ordinal))})", nameof(topics));
        return new TextCorpus(Name, Entries.Where(e => keep.Contains(e.Topic)).ToList(), Report);
    }

    /// <summary>
    /// Splits by entry, seeded: a permutation π of the N entries from the stream <c>Seeds.Generator(seed,
    /// "text-split:NAME")</c>; its first ⌈f_val·N⌉ entries are the validation split, the next ⌈f_test·N⌉ the test
    /// split, the rest the training split, each in corpus order. The same seed gives the same split in every process;
    /// the parts are disjoint and together hold every entry.
    /// </summary>
    public TextSplit Split(double validationFraction, double testFraction, long seed)
    {
        if (!(validationFraction >= 0 && testFraction >= 0 && validationFraction + testFraction < 1))
            throw new ArgumentOutOfRangeException(nameof(validationFraction),
                $"validation {validationFraction} and test {testFraction} fractions must be ≥ 0 with a sum below 1");
        var n = Entries.Count;
        var nVal = (int)Math.Ceiling(validationFraction * n);
        var nTest = Math.Min((int)Math.Ceiling(testFraction * n), n - nVal);
        long[] perm;
        using (var generator = Seeds.Generator(seed, $"text-split:{Name}"))
        using (var p = randperm(n, generator: generator))
            perm = p.data<long>().ToArray();
        List<TextEntry> Part(int start, int count) => perm.Skip(start).Take(count).Order().Select(i => Entries[(int)i]).ToList();
        return new TextSplit(Part(nVal + nTest, n - nVal - nTest), Part(0, nVal), Part(nVal, nTest));
    }

    /// <summary>
    /// <see cref="Split"/> within each topic (stream <c>"text-split:NAME/TOPIC"</c>), the parts joined in corpus order:
    /// every topic keeps its share in every split, as a classifier's splits should (⌈f·n_topic⌉ per topic, so the
    /// held-out splits may hold a few entries more than ⌈f·N⌉).
    /// </summary>
    public TextSplit StratifiedSplit(double validationFraction, double testFraction, long seed)
    {
        var position = new Dictionary<TextEntry, int>(ReferenceEqualityComparer.Instance);
        foreach (var (e, i) in Entries.Select((e, i) => (e, i))) position[e] = i;
        var parts = TopicCounts.Keys.Order(StringComparer.Ordinal)
            .Select(topic => new TextCorpus($"{Name}/{topic}", Entries.Where(e => e.Topic == topic).ToList(), Report)
                .Split(validationFraction, testFraction, seed)).ToList();
        List<TextEntry> Joined(Func<TextSplit, IReadOnlyList<TextEntry>> part) =>
            parts.SelectMany(part).OrderBy(e => position[e]).ToList();
        return new TextSplit(Joined(p => p.Train), Joined(p => p.Validation), Joined(p => p.Test));
    }
}
