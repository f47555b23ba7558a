using Research.Abstractions;
using System.Globalization;
using Research.Core.Data;
using Research.Core.Files;
using Tomlyn;
using Tomlyn.Model;

namespace Research.Core.Config;

/// <summary>Reads a run config: TOML → overrides (<c>--set optimizer.lr=3e-4</c>) → bound, validated sections.</summary>
public static class ConfigLoader
{
    static readonly string[] Sections = ["run", "data", "model", "optimizer", "precision", "checkpoint", "study", "train", "schedule", "methods", "callbacks", "metrics", "probes", "plugins"];

    /// <summary>The core's sections and their options types, in the order a config usually writes them; <c>[schedule]</c>,
    /// <c>[[methods]]</c> and <c>[[metrics]]</c> are the chosen plugins' own options.</summary>
    public static readonly IReadOnlyList<(string Name, Type Type)> SectionTypes =
    [
        ("run", typeof(RunSection)), ("data", typeof(DataSection)), ("model", typeof(ModelSection)),
        ("optimizer", typeof(OptimizerSection)), ("precision", typeof(PrecisionSection)), ("train", typeof(TrainSection)),
        ("checkpoint", typeof(CheckpointSection)), ("study", typeof(StudySection)), ("probes", typeof(ProbesSection)), ("plugins", typeof(PluginsSection)),
    ];

    public static RunConfig Load(string path, IEnumerable<string>? overrides = null)
    {
        // A FIFO would block the read and a device (a link to /dev/zero) never end it.
        if (InputFile.Problem(path) is { } notAFile) throw new ConfigException(path, "(file)", notAFile);
        if (!File.Exists(path)) throw new ConfigException(path, "(file)", "no such config file");
        var bytes = File.ReadAllBytes(path);
        if (bytes.Length == 0) throw new ConfigException(path, "(file)", "is empty");
        // TOML is UTF-8: a UTF-16 file is refused, not decoded by its byte-order mark as File.ReadAllText would.
        var (text, notUtf8) = InputFile.DecodeUtf8(bytes);
        if (notUtf8 != null) throw new ConfigException(path, "(file)", notUtf8);
        return Parse(text!, path, overrides);
    }

    /// <summary>
    /// Keys and tables defined twice, which the TOML specification forbids and Tomlyn's table model accepts (the last
    /// value wins, so <c>lr</c> written twice would silently change a run). Keys come from Tomlyn's event parser, which
    /// reports a reopened <c>[table]</c> as one table, so a key in both halves is caught; a <c>[table]</c> header written
    /// twice is caught from the headers themselves. Elements of an array of tables (<c>[[methods]]</c>) are separate tables.
    /// A table that a later header extends (<c>[optimizer]</c> … <c>[train]</c> … <c>[[optimizer.components]]</c>, valid
    /// TOML) is reported by the event parser as its key again: that is the table reopened, not defined twice, and its keys
    /// are the same set.
    /// </summary>
    static IEnumerable<string> DuplicateKeys(string text)
    {
        var found = new List<string>();
        var headers = System.Text.RegularExpressions.Regex.Matches(text, @"^[ \t]*(\[\[?)[ \t]*([^\[\]#]+?)[ \t]*\]\]?[ \t]*(#.*)?$",
            System.Text.RegularExpressions.RegexOptions.Multiline)
            .Select(m => (Array: m.Groups[1].Value == "[[", Name: System.Text.RegularExpressions.Regex.Replace(m.Groups[2].Value, @"[ \t]*\.[ \t]*", ".")))
            .ToList();
        // A key a header names or leads to ([a.b] leads to a) may appear again as a table: reopened by that header.
        bool Reopenable(string path) => headers.Any(h => h.Name == path || h.Name.StartsWith(path + ".", StringComparison.Ordinal));
        var parser = Tomlyn.Parsing.TomlParser.Create(text);
        var stack = new Stack<Frame>();
        var tableKeys = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        string? name = null, repeated = null;
        string Child(string parent, string key) => parent.Length == 0 ? key : $"{parent}.{key}";
        HashSet<string> KeysOf(string path) => tableKeys.TryGetValue(path, out var k) ? k : tableKeys[path] = new(StringComparer.Ordinal);
        while (parser.MoveNext())
        {
            var kind = parser.Current.Kind;
            if (repeated != null)
            {
                // The event after a repeated key says whether it is a table reopened or a key defined twice.
                if (!(kind == Tomlyn.Parsing.TomlParseEventKind.StartTable && Reopenable(repeated))) found.Add(repeated);
                repeated = null;
            }
            switch (kind)
            {
                case Tomlyn.Parsing.TomlParseEventKind.StartTable:
                    var path = stack.TryPeek(out var top) ? top.Keys is null ? $"{top.Path}[{top.Elements++}]" : Child(top.Path, name ?? "") : "";
                    stack.Push(new Frame(path, KeysOf(path)));
                    name = null;
                    break;
                case Tomlyn.Parsing.TomlParseEventKind.StartArray:
                    stack.Push(new Frame(stack.TryPeek(out var owner) && owner.Keys != null ? Child(owner.Path, name ?? "") : "", null));
                    name = null;
                    break;
                case Tomlyn.Parsing.TomlParseEventKind.EndTable or Tomlyn.Parsing.TomlParseEventKind.EndArray:
                    stack.TryPop(out _);
                    break;
                case Tomlyn.Parsing.TomlParseEventKind.PropertyName:
                    name = parser.GetPropertyName();
                    if (stack.TryPeek(out var table) && table.Keys is { } keys && !keys.Add(name)) repeated = Child(table.Path, name);
                    break;
                case Tomlyn.Parsing.TomlParseEventKind.String or Tomlyn.Parsing.TomlParseEventKind.Integer or Tomlyn.Parsing.TomlParseEventKind.Float
                    or Tomlyn.Parsing.TomlParseEventKind.Boolean or Tomlyn.Parsing.TomlParseEventKind.DateTime:
                    name = null;
                    break;
            }
        }
        if (repeated != null) found.Add(repeated);
        found.AddRange(headers.Where(h => !h.Array).GroupBy(h => h.Name).Where(g => g.Count() > 1).Select(g => g.Key));
        return found.Distinct();
    }

    /// <summary>A table or an array being read: its key path, its keys so far (tables; shared by a table's reopenings),
    /// its elements so far (arrays).</summary>
    sealed class Frame(string path, HashSet<string>? keys)
    {
        public string Path { get; } = path;
        public HashSet<string>? Keys { get; } = keys;
        public int Elements { get; set; }
    }

    /// <summary>
    /// The plugin folders a config file names (<c>[plugins] dirs</c>, absolute from the file's folder), read before the
    /// config is bound: a data source or model kind from a plugin must be loaded before <c>[data]</c> and <c>[model]</c>
    /// are bound. A file that cannot be read or parsed names none here; <see cref="Load"/> then reports why.
    /// </summary>
    public static IReadOnlyList<string> PluginDirs(string path)
    {
        try
        {
            if (InputFile.Problem(path) is not null || !File.Exists(path)) return [];
            var (text, notUtf8) = InputFile.DecodeUtf8(File.ReadAllBytes(path));
            if (notUtf8 != null) return [];
            var root = TomlSerializer.Deserialize<TomlTable>(text!);
            if (root is null || !root.TryGetValue("plugins", out var p) || p is not TomlTable plugins
                || !plugins.TryGetValue("dirs", out var d) || d is not TomlArray dirs) return [];
            var folder = Path.GetDirectoryName(Path.GetFullPath(path))!;
            return dirs.OfType<string>().Select(dir => Path.GetFullPath(dir, folder)).ToList();
        }
        catch (Exception e) when (e is TomlException or IOException or UnauthorizedAccessException) { return []; }
    }

    /// <summary>Parses config text; <paramref name="file"/> is the name errors report.</summary>
    public static RunConfig Parse(string text, string file, IEnumerable<string>? overrides = null)
    {
        TomlTable root;
        try { root = TomlSerializer.Deserialize<TomlTable>(text) ?? new TomlTable(); }
        catch (TomlException e)
        {
            // Tomlyn lists every diagnostic, one a line; after the first they mostly follow from it (an unclosed string
            // makes each later line "invalid"): report the first, and how many followed, as one line.
            var diagnostics = e.Message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            throw new ConfigException(file, "(syntax)", diagnostics.Length <= 1 ? e.Message.Trim()
                : $"{diagnostics[0]} (and {diagnostics.Length - 1} more error{(diagnostics.Length > 2 ? "s" : "")} after it)");
        }
        var duplicates = DuplicateKeys(text).Select(k => new ConfigError(file, k, "is defined twice (TOML allows a key or table once)")).ToList();
        if (duplicates.Count > 0) throw new ConfigException(duplicates);
        // [[regularizers]] is the contract-1 name of [[methods]]: read as it, in the file and in overrides.
        if (root.Remove("regularizers", out var older))
        {
            if (root.ContainsKey("methods"))
                throw new ConfigException(file, "regularizers", "[[regularizers]] is the older name of [[methods]]: use one of them");
            root["methods"] = older;
        }
        foreach (var o in overrides ?? []) ApplyOverride(root, o, file);

        var errors = new List<ConfigError>();
        // The same in overrides, where both names write one table and the last would replace the other.
        var overridden = (overrides ?? []).Select(o => o.Split('=', 2)[0].Trim().Split('.')[0]).ToHashSet(StringComparer.Ordinal);
        if (overridden.Contains("methods") && overridden.Contains("regularizers"))
            errors.Add(new(file, "regularizers", "--set regularizers=… and --set methods=… both given: regularizers is the older name of methods, use one of them"));
        foreach (var key in root.Keys)
            if (!Sections.Contains(key))
                errors.Add(new(file, key, $"unknown section (known sections: {string.Join(", ", Sections.Order())})"));

        T Section<T>(string name) where T : new()
        {
            try { return OptionsBinder.Bind<T>(TableAt(root, name, file, errors), file, name); }
            catch (ConfigException e) { errors.AddRange(e.Errors); return new T(); }
        }
        var run = Section<RunSection>("run");
        var dataErrors = errors.Count;
        // [model] holds the shared keys and the chosen kind's own: bound by the kinds' catalog.
        var model = ModelKindOptions.Bind(TableAt(root, "model", file, errors), file, errors);
        var optimizer = Section<OptimizerSection>("optimizer");
        var train = Section<TrainSection>("train");
        var precision = Section<PrecisionSection>("precision");
        var checkpoint = Section<CheckpointSection>("checkpoint");
        var study = Section<StudySection>("study");
        // [data] after [study]: a datasets study's sources take their keys from [data] too. Its errors keep their place.
        var problems = new List<ConfigError>();
        var data = Data(TableAt(root, "data", file, problems), study.Datasets, file, problems);
        errors.InsertRange(dataErrors, problems);
        var plugins = Section<PluginsSection>("plugins");
        var probes = Section<ProbesSection>("probes");

        var scheduleTable = TableAt(root, "schedule", file, errors) ?? new TomlTable();
        var schedule = Choice(scheduleTable, "schedule", "constant", file, errors);
        // [[callbacks]] is a second name for [[methods]] tables (Hugging Face's word for a callback): its tables follow them.
        var methods = (Choices(root, "methods", file, errors) ?? []).Concat(Choices(root, "callbacks", file, errors) ?? []).ToList();
        var (metrics, metricsOnly) = Only(Choices(root, "metrics", file, errors), file, errors);
        errors.AddRange(Selection(data, train, checkpoint, file));
        if (errors.Count > 0) throw new ConfigException(errors);
        return new RunConfig(file, root, run, data, model, optimizer, train, precision, checkpoint, study, plugins, schedule, methods, metrics, probes)
            { MetricsOnly = metricsOnly };
    }

    /// <summary>The key of a <c>[[metrics]]</c> table that is not the metric's own option: <c>only = true</c> (in any of
    /// the tables) makes the chosen metrics the whole set instead of additions to the standard seven.</summary>
    public const string OnlyKey = "only";

    /// <summary>The <c>[[metrics]]</c> choices without their <see cref="OnlyKey"/> (copies: the config as given keeps it),
    /// and whether one says <c>only = true</c>.</summary>
    static (List<PluginChoice>? Choices, bool Only) Only(List<PluginChoice>? choices, string file, List<ConfigError> errors)
    {
        if (choices is null) return (null, false);
        bool only = false;
        var stripped = choices.Select(choice =>
        {
            if (!choice.Options.TryGetValue(OnlyKey, out var value)) return choice;
            if (value is bool b) only |= b;
            else errors.Add(new(file, $"{choice.Key}.{OnlyKey}", $"{ConfigValue.Text(value)} must be true or false: true computes only the " +
                                                                 "chosen metrics, false adds them to the standard seven"));
            var options = new TomlTable();
            foreach (var (key, v) in choice.Options.Where(kv => kv.Key != OnlyKey)) options[key] = v;
            return choice with { Options = options };
        }).ToList();
        return (stripped, only);
    }

    /// <summary>Model selection reads the validation split: with <c>data.validation_fraction = 0</c> there is none, and the
    /// best checkpoint or an early stop would be chosen on nothing.</summary>
    static IEnumerable<ConfigError> Selection(DataSection data, TrainSection train, CheckpointSection checkpoint, string file)
    {
        if (data.ValidationFraction > 0) yield break;
        if (checkpoint.BestMetric.Length > 0)
            yield return new(file, "data.validation_fraction", $"0 holds out no validation items, and checkpoint.best_metric \"{checkpoint.BestMetric}\" chooses the best " +
                "checkpoint on them: hold out a fraction, or set checkpoint.best_metric = \"\"");
        if (train.EarlyStoppingPatience > 0)
            yield return new(file, "data.validation_fraction", $"0 holds out no validation items, and train.early_stopping_patience {train.EarlyStoppingPatience} " +
                $"stops on {train.EarlyStoppingMetric} of them: hold out a fraction, or set early_stopping_patience = 0");
    }

    /// <summary>
    /// Binds [data]: the core's keys to <see cref="DataSection"/>, and the keys of each source the run reads — the one
    /// <c>dataset</c> names and those of <paramref name="studyDatasets"/> — to that source's options record. A key of
    /// another source is refused naming the sources that have it; each source's rules between its keys and the core's
    /// (<see cref="IDataSource.Validate"/>) follow.
    /// </summary>
    static DataSection Data(TomlTable? table, IReadOnlyList<string> studyDatasets, string file, List<ConfigError> errors)
    {
        static IEnumerable<string> KeysOf(Type type) => OptionSchema.Of(type).SelectMany(o => o.Aliases.Prepend(o.Key));
        var coreKeys = KeysOf(typeof(DataSection)).ToHashSet(StringComparer.Ordinal);
        var core = new TomlTable();
        var rest = new List<(string Key, object Value)>();
        foreach (var (key, value) in table ?? new TomlTable())
            if (coreKeys.Contains(key)) core[key] = value;
            else rest.Add((key, value));
        DataSection data;
        try { data = OptionsBinder.Bind<DataSection>(core, file, "data"); }
        catch (ConfigException e) { errors.AddRange(e.Errors); data = new DataSection(); }
        if (DataSources.Find(data.Dataset) is null)
        {
            errors.Add(new(file, "data.dataset", $"{ConfigValue.Text(data.Dataset)} is not a data source (one of: {string.Join(", ", DataSources.Names)})"));
            return data;
        }
        var sources = studyDatasets.Prepend(data.Dataset).Distinct().Select(DataSources.Find).OfType<IDataSource>().ToList();
        var accepted = sources.SelectMany(s => KeysOf(s.OptionsType)).ToHashSet(StringComparer.Ordinal);
        foreach (var (key, _) in rest.Where(r => !accepted.Contains(r.Key)))
        {
            var owners = DataSources.All.Where(s => KeysOf(s.OptionsType).Contains(key)).Select(s => s.Name).ToList();
            var known = coreKeys.Concat(accepted).Order(StringComparer.Ordinal).ToList();
            errors.Add(new(file, $"data.{key}", owners.Count > 0
                ? $"is a key of {string.Join(" and ", owners)}, not of data.dataset \"{data.Dataset}\""
                : $"unknown key{OptionsBinder.Suggestion(key, known)} (known keys: {string.Join(", ", known)})"));
        }
        foreach (var source in sources)
        {
            var own = KeysOf(source.OptionsType).ToHashSet(StringComparer.Ordinal);
            var keys = new TomlTable();
            foreach (var (key, value) in rest.Where(r => own.Contains(r.Key))) keys[key] = value;
            object options;
            try { options = OptionsBinder.Bind(source.OptionsType, keys, file, "data"); }
            catch (ConfigException e) { errors.AddRange(e.Errors); continue; }
            data = data.WithOptions(source.Name, options);
            // As the binder writes a rule's error: the value of the key it names first.
            var values = new Dictionary<string, object?>(StringComparer.Ordinal);
            foreach (var (key, prop) in OptionsBinder.Keys(typeof(DataSection))) values[$"data.{key}"] = prop.GetValue(data);
            foreach (var (key, prop) in OptionsBinder.Keys(source.OptionsType)) values[$"data.{key}"] = prop.GetValue(options);
            foreach (var e in source.Validate(data.Keys, options))
                errors.Add(new(file, e.Key, values.TryGetValue(e.Key, out var v) ? $"{ConfigValue.Text(v)} {e.Message}" : e.Message));
        }
        return data;
    }

    /// <summary>The plugins of an array of tables (<c>[[methods]]</c>, <c>[[metrics]]</c>); null when the key is absent.</summary>
    static List<PluginChoice>? Choices(TomlTable root, string key, string file, List<ConfigError> errors)
    {
        if (!root.TryGetValue(key, out var value)) return null;
        // `methods = [{ name = "ewc", lambda = 30.0 }]`, an array of inline tables (the only form an override
        // on the command line or in a sweep can write), means the same as [[methods]] tables; [] means none.
        if (value is TomlArray inline && inline.All(x => x is TomlTable))
        {
            var tables = new TomlTableArray();
            foreach (var t in inline) tables.Add((TomlTable)t!);
            root[key] = value = tables;
        }
        var choices = new List<PluginChoice>();
        if (value is TomlTableArray array)
            for (int i = 0; i < array.Count; i++)
                choices.Add(Choice(array[i], $"{key}[{i}]", null, file, errors));
        else errors.Add(new(file, key, $"must be an array of tables: [[{key}]]"));
        return choices;
    }

    static TomlTable? TableAt(TomlTable root, string name, string file, List<ConfigError> errors)
    {
        if (!root.TryGetValue(name, out var value)) return null;
        if (value is TomlTable t) return t;
        errors.Add(new(file, name, $"must be a table: [{name}]"));
        return null;
    }

    static PluginChoice Choice(TomlTable table, string key, string? defaultName, string file, List<ConfigError> errors)
    {
        if (table.TryGetValue("name", out var n) && n is string name && name.Length > 0) return new(name, table, key);
        if (defaultName != null && !table.ContainsKey("name")) return new(defaultName, table, key);
        errors.Add(new(file, $"{key}.name", "must name a plugin (a string)"));
        return new("", table, key);
    }

    /// <summary>
    /// Applies <c>a.b.c=value</c>. The value is read as a TOML value (<c>3e-4</c>, <c>true</c>, <c>[1, 2]</c>,
    /// <c>"text"</c>); a bare word that is not TOML is taken as a string. A numeric segment indexes an
    /// array of tables (<c>methods.0.lambda=10</c>; <c>regularizers</c> is read as <c>methods</c>).
    /// </summary>
    public static void ApplyOverride(TomlTable root, string assignment, string file)
    {
        var eq = assignment.IndexOf('=');
        if (eq <= 0) throw new ConfigException(file, assignment, "an override must look like section.key=value");
        var path = assignment[..eq].Trim().Split('.');
        if (path[0] == "regularizers") path[0] = "methods";
        var text = assignment[(eq + 1)..].Trim();
        object value;
        try { value = TomlSerializer.Deserialize<TomlTable>("v = " + text)!["v"]; }
        catch (TomlException) { value = text; }

        object node = root;
        for (int i = 0; i < path.Length - 1; i++)
        {
            var seg = path[i];
            node = node switch
            {
                TomlTable t when t.TryGetValue(seg, out var next) => next,
                TomlTable t => t[seg] = new TomlTable(),
                TomlTableArray a when int.TryParse(seg, NumberStyles.None, CultureInfo.InvariantCulture, out var idx) && idx < a.Count => a[idx],
                // An array of inline tables (methods = [{ … }]) is indexed the same way.
                TomlArray a when int.TryParse(seg, NumberStyles.None, CultureInfo.InvariantCulture, out var idx) && idx < a.Count && a[idx] is TomlTable => a[idx]!,
                _ => throw new ConfigException(file, string.Join('.', path[..(i + 1)]), "cannot be overridden: not a table"),
            };
        }
        if (node is not TomlTable target)
            throw new ConfigException(file, string.Join('.', path), "cannot be overridden: not a table");
        target[path[^1]] = value;
    }

    /// <summary>The resolved config as TOML text, as stored with the run.</summary>
    public static string ToToml(TomlTable table) => TomlSerializer.Serialize(table);
}
