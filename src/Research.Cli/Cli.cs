using System.CommandLine;
using System.Globalization;
using Research.Core.Config;

namespace Research.Cli;

/// <summary>A command-line mistake found after parsing (a value out of range, options that conflict): one line, exit 2.</summary>
public sealed class UsageException(string message) : Exception(message);

/// <summary>
/// The command tree's building blocks on System.CommandLine, which parses, writes the help and finds parse errors. Every
/// option value is read as text and converted here, so a bad number names its option and its range the same way in every
/// command (System.CommandLine's own message names a .NET type). A default given to an option is the one the command
/// uses and the one the help shows.
/// </summary>
static class Cli
{
    /// <summary>A command whose action receives its parsed values.</summary>
    public static Command Command(string name, string description, Func<Parsed, int> action, params Symbol[] symbols)
    {
        var command = new Command(name, description);
        foreach (var symbol in symbols)
            switch (symbol)
            {
                case Option o: command.Options.Add(o); break;
                case Argument a: command.Arguments.Add(a); break;
                default: throw new ArgumentException($"{symbol.Name} is neither an option nor an argument", nameof(symbols));
            }
        command.SetAction(result => action(new Parsed(result)));
        return command;
    }

    /// <summary>A command that only groups others (<c>research plot schedule</c>, <c>research runs list</c>).</summary>
    public static Command Group(string name, string description, params Command[] subcommands)
    {
        var group = new Command(name, description);
        foreach (var s in subcommands) group.Subcommands.Add(s);
        return group;
    }

    /// <summary>An option with one value, given at most once (twice is a usage error, not a silent choice).</summary>
    public static Option<string> Value(string name, string valueName, string description, string? @default = null, string[]? aliases = null)
    {
        var option = new Option<string>(name, aliases ?? []) { Description = description, HelpName = valueName };
        if (@default is not null) option.DefaultValueFactory = _ => @default;
        return option;
    }

    /// <summary>An option that may be given any number of times, one value each (<c>--set a=1 --set b=2</c>).</summary>
    public static Option<string[]> Repeated(string name, string valueName, string description) =>
        new(name) { Description = description, HelpName = valueName, Arity = ArgumentArity.OneOrMore, AllowMultipleArgumentsPerToken = false };

    public static Option<bool> Flag(string name, string description) => new(name) { Description = description, Arity = ArgumentArity.Zero };

    /// <summary>The <c>--set</c> of every command that reads a config.</summary>
    public static Option<string[]> Set() =>
        Repeated("--set", "KEY=VALUE", "Override a config value in TOML syntax, e.g. --set optimizer.lr=3e-4 or --set run.name=\"a\" (repeatable, applied in order)");

    /// <summary>The <c>--plugins</c> of every command that loads plugins.</summary>
    public static Option<string[]> Plugins() =>
        Repeated("--plugins", "DIR", "Also load the plugin DLLs in DIR (repeatable); the built-in plugins are always loaded");

    /// <summary>A positional argument: required, or optional (with the default the help shows, if it has one).</summary>
    public static Argument<string> Argument(string name, string description, string? @default = null, bool optional = false)
    {
        var argument = new Argument<string>(name) { Description = description };
        if (@default is not null || optional) argument.Arity = ArgumentArity.ZeroOrOne;
        if (@default is not null) argument.DefaultValueFactory = _ => @default;
        return argument;
    }

    /// <summary>One or more positional arguments.</summary>
    public static Argument<string[]> Arguments(string name, string description) =>
        new(name) { Description = description, Arity = ArgumentArity.OneOrMore };

    /// <summary>
    /// One line per parse mistake, each naming what was wrong and where to look; none when the parse succeeded or asked
    /// for help. A mistyped command or option gets the closest known name (<see cref="OptionsBinder.Suggestion"/>).
    /// Unknown words after an unknown option are not reported again: they are most likely its value.
    /// </summary>
    public static IReadOnlyList<string> Errors(ParseResult result)
    {
        if (result.Action is System.CommandLine.Help.HelpAction) return [];
        var command = result.CommandResult.Command;
        var path = CommandPath(result);
        var help = $"see '{path} --help'";
        var unmatched = result.UnmatchedTokens;
        if (command.Subcommands.Count > 0 && command.Action is null)
        {
            var names = command.Subcommands.Where(c => !c.Hidden).Select(c => c.Name).ToList();
            if (unmatched.FirstOrDefault(t => !LooksLikeOption(t)) is { } word)
                return [names.Contains(word)
                    ? $"unexpected argument '{word}' for '{path}' (a command is not read after '--')"
                    : $"unknown command '{path} {word}'{OptionsBinder.Suggestion(word, names)} (commands: {string.Join(", ", names)})"];
            if (!unmatched.Any(LooksLikeOption))
                return [$"'{path}' needs a command: {string.Join(", ", names)} ({help})"];
        }
        // System.CommandLine binds an unknown --word to a positional argument that has room for it; a word that looks
        // like an option is one here (a value starting with '-' can follow its option, or come after "--").
        var positional = result.CommandResult.Children.OfType<System.CommandLine.Parsing.ArgumentResult>().SelectMany(a => a.Tokens).Select(t => t.Value);
        var unknownOptions = positional.Concat(unmatched).Where(LooksLikeOption).Distinct().ToList();
        var afterSeparator = Array.IndexOf(result.Tokens.Select(t => t.Value).ToArray(), "--") is var i and >= 0
            ? result.Tokens.Skip(i + 1).Select(t => t.Value).ToHashSet() : [];
        unknownOptions.RemoveAll(afterSeparator.Contains);
        var lines = new List<string>();
        foreach (var option in unknownOptions)
        {
            var written = option.Split('=', 2)[0];
            lines.Add($"unknown option {written} for '{path}'{OptionsBinder.Suggestion(written, OptionNames(result))} ({help})");
        }
        if (unknownOptions.Count == 0)
            lines.AddRange(unmatched.Select(t => $"unexpected argument '{t}' for '{path}' ({help})"));
        foreach (var error in result.Errors)
        {
            var message = error.Message;
            if (message.StartsWith("Unrecognized command or argument", StringComparison.Ordinal)) continue;
            lines.Add($"{message.TrimEnd('.')} ({help})");
        }
        return lines.Distinct().ToList();
    }

    /// <summary>A word that is written as an option: a dash and a letter, not a number such as -1 or -1e-3.</summary>
    static bool LooksLikeOption(string token) => token.Length > 1 && token[0] == '-' && token != "--" && !IsNumber(token);

    static bool IsNumber(string token) => double.TryParse(token, NumberStyles.Float, CultureInfo.InvariantCulture, out _);

    /// <summary><c>research plot schedule</c>: the words that led to the command parsed.</summary>
    static string CommandPath(ParseResult result)
    {
        var names = new List<string>();
        for (var r = result.CommandResult; r is not null; r = r.Parent as System.CommandLine.Parsing.CommandResult)
            names.Add(r.Command is RootCommand ? "research" : r.Command.Name);
        names.Reverse();
        return string.Join(' ', names);
    }

    /// <summary>The options the parsed command accepts: its own and its ancestors' recursive ones.</summary>
    static IEnumerable<string> OptionNames(ParseResult result)
    {
        var own = result.CommandResult.Command.Options.SelectMany(o => o.Aliases.Prepend(o.Name));
        var inherited = new List<string>();
        for (var r = result.CommandResult.Parent as System.CommandLine.Parsing.CommandResult; r is not null; r = r.Parent as System.CommandLine.Parsing.CommandResult)
            inherited.AddRange(r.Command.Options.Where(o => o.Recursive).SelectMany(o => o.Aliases.Prepend(o.Name)));
        return own.Concat(inherited);
    }
}

/// <summary>
/// The values of one parsed command, read by option name. Numbers are converted here so that every mistake names the
/// option: "--steps must be between 1 and 10000000, not 0".
/// </summary>
sealed class Parsed(ParseResult result)
{
    readonly Command _command = result.CommandResult.Command;

    /// <summary>The positional values, in the order the command declares its arguments.</summary>
    public IReadOnlyList<string> Positional =>
        _command.Arguments.SelectMany(a => a switch
        {
            Argument<string[]> many => result.GetValue(many) ?? [],
            Argument<string> one => result.GetValue(one) is { } v ? [v] : Array.Empty<string>(),
            _ => throw new InvalidOperationException($"argument {a.Name} is of an unexpected type"),
        }).ToList();

    Option Find(string name) =>
        _command.Options.FirstOrDefault(o => o.Name == name || o.Aliases.Contains(name))
        ?? throw new InvalidOperationException($"'{_command.Name}' declares no option {name}");

    /// <summary>Every value of a repeatable option, in the order given.</summary>
    public IReadOnlyList<string> All(string name) => Find(name) switch
    {
        Option<string[]> many => result.GetValue(many) ?? [],
        Option<string> one => result.GetValue(one) is { } v ? [v] : [],
        var o => throw new InvalidOperationException($"option {o.Name} takes no value"),
    };

    /// <summary>The value of an option, its default when not given, null when it has neither.</summary>
    public string? One(string name) => All(name) is { Count: > 0 } values ? values[^1] : null;

    /// <summary>Whether the option was written, rather than taken from its default.</summary>
    public bool Given(string name) => result.GetResult(Find(name)) is { Implicit: false };

    public bool Flag(string name) => Find(name) is Option<bool> flag ? result.GetValue(flag) : throw new InvalidOperationException($"option {name} is not a flag");

    /// <summary>The value of an option that has a default, so always has a value.</summary>
    string Required(string name) => One(name) ?? throw new InvalidOperationException($"option {name} has no default");

    public long Long(string name)
    {
        var v = Required(name);
        return long.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out var r) ? r : throw new UsageException($"{name} must be an integer, not '{v}'");
    }

    /// <summary>An integer option within [min, max]; anything else is a usage error naming it.</summary>
    public long Long(string name, long min, long max)
    {
        var v = Long(name);
        return v >= min && v <= max ? v : throw new UsageException($"{name} must be between {min} and {max}, not {v}");
    }

    /// <summary>As <see cref="Long(string, long, long)"/>, for the options an int holds.</summary>
    public int Int(string name, int min, int max) => (int)Long(name, min, max);

    double Double(string name)
    {
        var v = Required(name);
        return double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out var r) && double.IsFinite(r)
            ? r : throw new UsageException($"{name} must be a finite number, not '{v}'");
    }

    /// <summary>A number option within (min, max] (from <paramref name="min"/> itself when <paramref name="minExclusive"/>
    /// is false): a value beyond any a researcher means is a mistake, and would only fill a table with digits.</summary>
    public double Double(string name, double min, double max, bool minExclusive = true)
    {
        var v = Double(name);
        return (minExclusive ? v > min : v >= min) && v <= max ? v
            : throw new UsageException($"{name} must be in {(minExclusive ? "(" : "[")}{Text(min)}, {Text(max)}], not {One(name)}");
    }

    static string Text(double v) => v.ToString(Math.Abs(v) >= 1e6 ? "0.###e0" : "G", CultureInfo.InvariantCulture);
}
