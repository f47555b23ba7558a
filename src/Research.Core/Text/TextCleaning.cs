using System.Text;
using System.Text.RegularExpressions;

namespace Research.Core.Text;

/// <summary>
/// Turns an entry as a fortune file stores it into the text a model sees: teletype overstriking resolved, terminal
/// control characters removed, Unicode normalised to NFC (so "é" is one code point whatever the source wrote), line ends
/// LF, blank lines at either end removed. Every step is a pure function of the string.
/// </summary>
public static partial class TextCleaning
{
    /// <summary>
    /// The whole cleaning of one entry: CRLF → LF, <see cref="ResolveOverstrikes"/>, ASCII control characters other
    /// than LF and TAB removed (BEL, ESC, DEL: effects on a terminal, not text; C1 characters, U+0080–U+009F, stay: in
    /// these files they are parts of mojibake, which is left as the source has it), NFC, blank lines at the start and
    /// whitespace at the end removed. Leading spaces of the first line stay (some files indent every entry).
    /// </summary>
    public static string Clean(string entry)
    {
        var text = ResolveOverstrikes(entry.Replace("\r\n", "\n"));
        var kept = new StringBuilder(text.Length);
        foreach (var c in text)
            if (c is '\n' or '\t' || (c >= ' ' && c != '\x7f')) kept.Append(c);
        var nfc = kept.ToString().Normalize(NormalizationForm.FormC);
        return LeadingBlankLines().Replace(nfc.TrimEnd(), "");
    }

    /// <summary>
    /// A prompt to continue (<c>research generate</c>), cleaned as the corpora are (<see cref="Clean"/>: overstrikes, control characters, NFC),
    /// but with its own trailing line breaks, spaces and tabs kept: a fortune ends without them, so cleaning strips them,
    /// while an instruction set's prompt ends with the separator its response follows ("…about love.\n"), and a model
    /// tuned on it answers after that separator — without it, it was never trained to go on (it ends the text).
    /// </summary>
    public static string Prompt(string prompt)
    {
        var body = prompt.TrimEnd();
        var tail = prompt[body.Length..].Replace("\r\n", "\n").Where(c => c is '\n' or ' ' or '\t');
        return Clean(body) + string.Concat(tail);
    }

    [GeneratedRegex(@"\A(?:[ \t]*\n)+")]
    private static partial Regex LeadingBlankLines();

    /// <summary>
    /// Resolves backspace overstriking as a teletype prints it, line by line: a backspace moves the print position one
    /// character left, and a character printed where another stands combines with it. Bold (<c>x\bx</c> → x),
    /// underline (<c>_\bx</c> or <c>x\b_</c> → x, also the run form <c>___\b\b\bnot</c> → not) and accents
    /// (<c>'\be</c> → é, <c>"\bu</c> → ü, <c>^\bo</c> → ô, <c>`\ba</c> → à, <c>,\bc</c> → ç, <c>~\bn</c> → ñ, when
    /// Unicode has the composed letter); any other pair keeps the later character, as a screen shows it. A backspace
    /// at the start of a line does nothing. Text without backspaces is returned as it is.
    /// </summary>
    public static string ResolveOverstrikes(string text)
    {
        if (!text.Contains('\b')) return text;
        var result = new StringBuilder(text.Length);
        var cells = new List<Rune>();
        var lines = text.Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            if (i > 0) result.Append('\n');
            cells.Clear();
            var position = 0;
            foreach (var rune in lines[i].EnumerateRunes())
            {
                if (rune.Value == '\b') { if (position > 0) position--; continue; }
                if (position < cells.Count) cells[position] = Overstrike(cells[position], rune);
                else cells.Add(rune);
                position++;
            }
            foreach (var cell in cells) result.Append(cell.ToString());
        }
        return result.ToString();
    }

    /// <summary>The combining mark a typewriter accent stands for.</summary>
    static readonly Dictionary<int, char> AccentMarks = new()
    {
        ['\''] = '\u0301', ['`'] = '\u0300', ['^'] = '\u0302', ['"'] = '\u0308', ['~'] = '\u0303', [','] = '\u0327',
    };

    static Rune Overstrike(Rune under, Rune over)
    {
        if (under == over || over.Value == '_') return under;
        if (under.Value == '_') return over;
        if (Accented(under, over) is { } a) return a;
        if (Accented(over, under) is { } b) return b;
        return over;
    }

    /// <summary>The letter with the accent a mark stands for, if Unicode has it as one code point.</summary>
    static Rune? Accented(Rune mark, Rune letter)
    {
        if (!AccentMarks.TryGetValue(mark.Value, out var combining) || !Rune.IsLetter(letter)) return null;
        var composed = (letter.ToString() + combining).Normalize(NormalizationForm.FormC);
        return Rune.TryGetRuneAt(composed, 0, out var r) && r.Utf16SequenceLength == composed.Length ? r : null;
    }

    /// <summary>Unicode code points of a string (a surrogate pair counts once): the "characters" a corpus reports.</summary>
    public static long CodePoints(string text)
    {
        long n = 0;
        foreach (var _ in text.EnumerateRunes()) n++;
        return n;
    }
}
