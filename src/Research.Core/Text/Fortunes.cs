using System.Text;
using Research.Core.Files;

namespace Research.Core.Text;

/// <summary>
/// The fortune-cookie corpora of Debian's packages <c>fortunes</c> (English, with <c>fortunes-min</c>) and
/// <c>fortunes-de</c> (German): one plain UTF-8 file per topic, entries separated by a line holding only <c>%</c>.
/// Index files (<c>.dat</c>) are skipped, and every file is read once however many names lead to it (each topic also
/// has a <c>.u8</c> symbolic link to itself). Subfolders are not read: <c>de/</c> inside the English folder is the
/// German corpus, and <c>off/</c> (package <c>fortunes-off</c>, offensive fortunes) is left out of both on purpose.
/// </summary>
public static class Fortunes
{
    public const string EnglishDirectory = "/usr/share/games/fortunes";
    public const string GermanDirectory = "/usr/share/games/fortunes/de";

    /// <summary>Why the ASCII-art files are dropped (measured on the Debian 12 packages).</summary>
    public const string ArtReason =
        "ASCII art: letters are 18% of its non-space characters, against at least 79% in every other file; pictures are not text";

    /// <summary>English files not read: <c>ascii-art</c> (11 pictures). The topic file <c>art</c> (quotes about art) stays.</summary>
    public static readonly IReadOnlyDictionary<string, string> EnglishDropped = new Dictionary<string, string> { ["ascii-art"] = ArtReason };

    /// <summary>German files not read: <c>asciiart</c> (34 pictures).</summary>
    public static readonly IReadOnlyDictionary<string, string> GermanDropped = new Dictionary<string, string> { ["asciiart"] = ArtReason };

    /// <summary>The largest file a reader accepts; the largest fortune file (German <c>zitate</c>) has 1.9 MB.</summary>
    const long MaxFileBytes = 64L << 20;

    /// <summary>The English corpus ("fortunes-en").</summary>
    public static TextCorpus English(string directory = EnglishDirectory) => Read(directory, "fortunes-en", EnglishDropped);

    /// <summary>The German corpus ("fortunes-de").</summary>
    public static TextCorpus German(string directory = GermanDirectory) => Read(directory, "fortunes-de", GermanDropped);

    /// <summary>
    /// Reads every fortune file of a folder (not its subfolders) except <paramref name="dropped"/>: entries split on
    /// <c>%</c> lines, cleaned (<see cref="TextCleaning.Clean"/>), empty ones dropped, duplicates (equal after cleaning)
    /// kept once with the topic of their first occurrence, files in ordinal order of their topic name.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The folder is missing; the message says which package installs it.</exception>
    /// <exception cref="InvalidDataException">A file is empty, too large, or not UTF-8; the folder holds no fortune file,
    /// or no entry that is not empty; the message names the file or the folder.</exception>
    /// <exception cref="NotAFileException">A name leads to a FIFO, a device, a socket or nowhere; the message names it.</exception>
    public static TextCorpus Read(string directory, string name, IReadOnlyDictionary<string, string> dropped)
    {
        if (!Directory.Exists(directory))
            throw new DirectoryNotFoundException(
                $"fortune folder {directory} is missing: install the Debian packages fortunes and fortunes-de (apt-get install fortunes fortunes-de)");
        var files = TopicFiles(directory);
        var entries = new List<TextEntry>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var read = new List<string>();
        var droppedHere = new Dictionary<string, string>(StringComparer.Ordinal);
        int raw = 0, empty = 0, duplicates = 0;
        foreach (var (topic, path) in files)
        {
            if (dropped.TryGetValue(topic, out var reason)) { droppedHere[topic] = reason; continue; }
            read.Add(topic);
            foreach (var entry in SplitEntries(InputFile.ReadUtf8(path, MaxFileBytes, "a fortune file")))
            {
                raw++;
                var text = TextCleaning.Clean(entry);
                if (text.Length == 0) empty++;
                else if (!seen.Add(text)) duplicates++;
                else entries.Add(new TextEntry(text, topic));
            }
        }
        // Said here, naming the folder: further on, an empty corpus is only a run with nothing to train on.
        if (entries.Count == 0)
            throw new InvalidDataException(read.Count == 0
                ? $"fortune folder {directory} holds no fortune files (plain-text files of entries separated by lines holding only %; " +
                  $".dat indexes and subfolders are not read{(droppedHere.Count > 0 ? $", nor {string.Join(", ", droppedHere.Keys)}" : "")})"
                : $"fortune folder {directory} holds no fortunes: every entry of its {read.Count} file(s) ({string.Join(", ", read)}) is empty");
        return new TextCorpus(name, entries, new CorpusReport(read, droppedHere, raw, empty, duplicates));
    }

    /// <summary>
    /// The entries of a fortune file's text as stored: the lines between separator lines (a line that is exactly
    /// <c>%</c>), joined by LF. A line such as <c>%DCL-MEM-BAD</c> is text. The last entry needs no separator after it.
    /// </summary>
    public static IReadOnlyList<string> SplitEntries(string text)
    {
        var entries = new List<string>();
        var current = new StringBuilder();
        var any = false;
        foreach (var line in text.Replace("\r\n", "\n").Split('\n'))
        {
            if (line == "%")
            {
                entries.Add(current.ToString());
                current.Clear();
                any = false;
                continue;
            }
            if (any) current.Append('\n');
            current.Append(line);
            any = true;
        }
        if (current.Length > 0) entries.Add(current.ToString());
        return entries;
    }

    /// <summary>
    /// (topic, path) of each file to read, ordered by topic: <c>.dat</c> indexes and folders skipped; names that lead to
    /// the same file (a <c>.u8</c> link beside its target) read once, under the name of the regular file, else under the
    /// link's name without <c>.u8</c>.
    /// </summary>
    static List<(string Topic, string Path)> TopicFiles(string directory)
    {
        var byTarget = new Dictionary<string, (string Topic, string Path, bool IsLink)>(StringComparer.Ordinal);
        var unresolved = new List<(string Topic, string Path)>();
        foreach (var info in new DirectoryInfo(directory).EnumerateFileSystemInfos())
        {
            if (info is DirectoryInfo || info.Name.EndsWith(".dat", StringComparison.Ordinal)) continue;
            var isLink = info.LinkTarget != null;
            FileSystemInfo? target;
            try { target = isLink ? info.ResolveLinkTarget(returnFinalTarget: true) : info; }
            catch (IOException) { target = null; } // a loop of links
            var topic = isLink && info.Name.EndsWith(".u8", StringComparison.Ordinal) ? info.Name[..^3] : info.Name;
            // A link that leads nowhere, or to a folder, is refused when read (InputFile), naming the link.
            if (target is not FileInfo { Exists: true } file) { if (target is not DirectoryInfo) unresolved.Add((topic, info.FullName)); continue; }
            var key = file.FullName;
            if (!byTarget.TryGetValue(key, out var known) || (known.IsLink && !isLink) || (known.IsLink == isLink && string.CompareOrdinal(topic, known.Topic) < 0))
                byTarget[key] = (topic, info.FullName, isLink);
        }
        return byTarget.Values.Select(v => (v.Topic, v.Path)).Concat(unresolved)
            .OrderBy(f => f.Topic, StringComparer.Ordinal).ThenBy(f => f.Path, StringComparer.Ordinal).ToList();
    }
}
