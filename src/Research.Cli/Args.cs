namespace Research.Cli;

/// <summary>A command-line mistake: printed as one line with the usage, exit code 2.</summary>
public sealed class UsageException(string message) : Exception(message);

/// <summary>
/// Minimal argument reader: positional words, repeatable <c>--name value</c> options and <c>--flag</c>s.
/// Every option must be declared; an unknown one is a usage error that names it.
/// </summary>
public sealed class Args
{
    readonly Dictionary<string, List<string>> _values = [];
    readonly HashSet<string> _flags = [];
    public List<string> Positional { get; } = [];

    public Args(IEnumerable<string> args, IReadOnlyCollection<string> valued, IReadOnlyCollection<string> flags)
    {
        var list = args.ToList();
        for (int i = 0; i < list.Count; i++)
        {
            var a = list[i];
            if (a.StartsWith('-') && a.Length > 1 && !double.TryParse(a, System.Globalization.CultureInfo.InvariantCulture, out _))
            {
                var (name, inline) = a.Contains('=') && a.StartsWith("--") ? (a[..a.IndexOf('=')], a[(a.IndexOf('=') + 1)..]) : (a, null);
                if (flags.Contains(name)) { _flags.Add(name); continue; }
                if (!valued.Contains(name))
                    throw new UsageException($"unknown option {name} (options: {string.Join(", ", valued.Concat(flags).Order())})");
                var value = inline ?? (i + 1 < list.Count ? list[++i] : throw new UsageException($"{name} needs a value"));
                if (!_values.TryGetValue(name, out var l)) _values[name] = l = [];
                l.Add(value);
            }
            else Positional.Add(a);
        }
    }

    public IReadOnlyList<string> All(string name) => _values.TryGetValue(name, out var l) ? l : [];
    public string? One(string name) => All(name) is { Count: > 0 } l ? l[^1] : null;
    public bool Flag(string name) => _flags.Contains(name);

    public long Long(string name, long fallback)
    {
        var v = One(name);
        if (v is null) return fallback;
        return long.TryParse(v, out var r) ? r : throw new UsageException($"{name} must be an integer, not '{v}'");
    }

    /// <summary>An integer option within [min, max], or the fallback when absent; anything else is a usage error naming it.</summary>
    public long Long(string name, long fallback, long min, long max)
    {
        var v = Long(name, fallback);
        return v >= min && v <= max ? v : throw new UsageException($"{name} must be between {min} and {max}, not {v}");
    }

    /// <summary>As <see cref="Long(string, long, long, long)"/>, for the options an int holds.</summary>
    public int Int(string name, int fallback, int min, int max) => (int)Long(name, fallback, min, max);

    public double Double(string name, double fallback)
    {
        var v = One(name);
        if (v is null) return fallback;
        return double.TryParse(v, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var r) && double.IsFinite(r)
            ? r : throw new UsageException($"{name} must be a finite number, not '{v}'");
    }
}
