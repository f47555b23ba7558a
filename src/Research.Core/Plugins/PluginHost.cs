using System.Reflection;
using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;
using System.Runtime.Loader;
using McMaster.NETCore.Plugins;
using Research.Abstractions;
using Research.Core.Config;
using Research.Core.Data;
using Research.Core.Files;
using Research.Core.Models;
using TorchSharp;

namespace Research.Core.Plugins;

/// <summary>The three kinds of plugin: a schedule, a method (one or more of the method roles of the contract), a
/// forgetting metric.</summary>
public enum PluginRole { Schedule, Method, ForgettingMetric, DataSource, ModelKind }

/// <summary>A plugin found in a DLL: its role, name, type, options type (if any) and where it came from.</summary>
public sealed record PluginDescriptor(PluginRole Role, string Name, string Summary, Type Type, Type? OptionsType, string AssemblyPath)
{
    /// <summary>Other names that choose this plugin (<see cref="PluginAttribute.Aliases"/>); runs record <see cref="Name"/>.</summary>
    public IReadOnlyList<string> Aliases { get; init; } = [];

    /// <summary>Whether a config's <c>name = "…"</c> chooses this plugin: its name or one of its aliases.</summary>
    public bool IsNamed(string name) => Name == name || Aliases.Contains(name);
}

/// <summary>Something wrong with one DLL or folder, reported as one line: the path and the reason.</summary>
public sealed record PluginProblem(string Path, string Reason)
{
    /// <summary>The plugin names the DLL declares (its <c>[Plugin("…")]</c> names and aliases, read from its metadata) that
    /// this problem leaves unusable: a run asking for one of them is told this problem first.</summary>
    public IReadOnlyList<string> Declares { get; init; } = [];

    public override string ToString() => $"{Path}: {Reason}";
}

/// <summary>A user-facing plugin error (one line, no stack trace); the run that needs the plugin stops.</summary>
public sealed class PluginException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// Loads plugins from folders (McMaster.NETCore.Plugins), each DLL in its own load context that shares the
/// host's contract and TorchSharp types, so one TorchSharp and one libtorch exist per process.
/// </summary>
/// <remarks>
/// A folder is scanned for <c>X.dll</c> with <c>X.deps.json</c> beside it (a plugin's main assembly; the
/// other DLLs there are its dependencies), in the folder itself and one level of sub-folders. A folder
/// without any deps.json has every DLL scanned. Problems are collected, not thrown: a broken plugin that
/// the run does not use is a warning; asking for it is an error that names the DLL and the reason.
/// </remarks>
public sealed class PluginHost : IPluginOptions
{
    static readonly Type[] SharedTypes =
        [typeof(ISchedule), typeof(IPenalty), typeof(IForgettingMetric), typeof(Batch), typeof(torch.Tensor), typeof(torch.nn.Module)];

    /// <summary>The interfaces that make a class a plugin of each kind (a method plays one or more roles).</summary>
    static readonly Dictionary<PluginRole, Type[]> RoleInterfaces = new()
    {
        [PluginRole.Schedule] = [typeof(ISchedule)],
        [PluginRole.Method] = [typeof(IPenalty), typeof(ILossTerm), typeof(IStepObserver), typeof(IGradientHook), typeof(ITaskHooks), typeof(IDataRole), typeof(ICallback), typeof(IPredictor)],
        [PluginRole.ForgettingMetric] = [typeof(IForgettingMetric)],
    };

    static IEnumerable<Type> AllRoleInterfaces => RoleInterfaces.Values.SelectMany(t => t);

    /// <summary>The method roles a forgetting metric may play too: they let it measure the model, not change training.</summary>
    static readonly Type[] MetricObserverRoles = [typeof(ITaskHooks), typeof(IStepObserver)];

    readonly List<PluginDescriptor> _plugins = [];
    readonly List<PluginProblem> _problems = [];
    readonly List<PluginProblem> _missingFolders = [];
    readonly Dictionary<(PluginRole, string), List<string>> _claims = [];
    readonly List<PluginLoader> _loaders = [];
    readonly HashSet<string> _loaded = new(StringComparer.Ordinal);

    public IReadOnlyList<PluginDescriptor> Plugins => _plugins;
    public IReadOnlyList<PluginProblem> Problems => _problems;

    /// <summary>The folder of built-in plugins, beside the host's assemblies.</summary>
    public static string BuiltInDirectory => Path.Combine(AppContext.BaseDirectory, "plugins");

    /// <summary>Loads the built-in folder (unless excluded), every folder given, then every plugin DLL given by its path
    /// (a run's recorded plugins); a DLL is loaded once however often it is named.</summary>
    public static PluginHost Load(IEnumerable<string> directories, bool includeBuiltIn = true, IEnumerable<string>? files = null)
    {
        var host = new PluginHost();
        var dirs = (includeBuiltIn ? [BuiltInDirectory] : Array.Empty<string>()).Concat(directories)
            .Select(d => Path.GetFullPath(d)).Distinct().ToList();
        foreach (var dir in dirs) host.LoadDirectory(dir);
        foreach (var file in files ?? []) host.LoadAssembly(Path.GetFullPath(file));
        foreach (var ((role, name), paths) in host._claims.Where(c => c.Value.Count > 1))
            host._problems.Add(new(paths[^1], $"{RoleName(role)} '{name}' is claimed by two plugins: {string.Join(" and ", paths)}"));
        return host;
    }

    /// <summary>The folders that do not exist (a missing folder the user named is always an error).</summary>
    public IReadOnlyList<PluginProblem> MissingFolders => _missingFolders;

    void LoadDirectory(string dir)
    {
        if (!Directory.Exists(dir))
        {
            var missing = new PluginProblem(dir, "plugin folder does not exist");
            _missingFolders.Add(missing);
            _problems.Add(missing);
            return;
        }
        foreach (var dll in Candidates(dir)) LoadAssembly(dll);
    }

    static IEnumerable<string> Candidates(string dir)
    {
        IEnumerable<string> InFolder(string d)
        {
            var dlls = Directory.GetFiles(d, "*.dll").Order(StringComparer.Ordinal).ToList();
            var withDeps = dlls.Where(f => File.Exists(Path.ChangeExtension(f, ".deps.json"))).ToList();
            return withDeps.Count > 0 ? withDeps : dlls;
        }
        return InFolder(dir).Concat(Directory.GetDirectories(dir).Order(StringComparer.Ordinal).SelectMany(InFolder));
    }

    void LoadAssembly(string path)
    {
        if (!_loaded.Add(path)) return;
        var (refused, declares) = CheckMetadata(path);
        if (refused != null) { if (refused.Length > 0) _problems.Add(new(path, refused) { Declares = declares }); return; }

        Type[] types;
        try
        {
            var loader = PluginLoader.CreateFromAssemblyFile(path, SharedTypes, c => c.PreferSharedTypes = true);
            _loaders.Add(loader);
            types = loader.LoadDefaultAssembly().GetTypes();
        }
        catch (ReflectionTypeLoadException e)
        {
            var first = e.LoaderExceptions.FirstOrDefault(x => x != null);
            _problems.Add(new(path, $"its types cannot be loaded: {first?.Message ?? e.Message}") { Declares = declares });
            return;
        }
        catch (Exception e) when (e is BadImageFormatException or FileLoadException or FileNotFoundException)
        {
            _problems.Add(new(path, $"cannot be loaded: {e.Message}") { Declares = declares });
            return;
        }

        int found = 0;
        foreach (var type in types.Where(t => t is { IsClass: true, IsAbstract: false, IsPublic: true }))
        {
            if (typeof(IDataSource).IsAssignableFrom(type) || type.IsSubclassOf(typeof(ModelKind)))
            {
                found++;
                LoadRegistered(type, path);
                continue;
            }
            var roles = RoleInterfaces.Where(r => r.Value.Any(i => i.IsAssignableFrom(type))).Select(r => r.Key).ToList();
            // A metric that measures the model at task ends (or streams over the steps) observes as a method does; those
            // roles are part of the metric, not a second plugin.
            if (roles.Contains(PluginRole.ForgettingMetric) && MetricObserverRoles.Any(i => i.IsAssignableFrom(type)) &&
                RoleInterfaces[PluginRole.Method].Except(MetricObserverRoles).All(i => !i.IsAssignableFrom(type)))
                roles.Remove(PluginRole.Method);
            var attribute = type.GetCustomAttribute<PluginAttribute>();
            if (roles.Count == 0)
            {
                var foreign = type.GetInterfaces().FirstOrDefault(i => AllRoleInterfaces.Any(r => r.FullName == i.FullName));
                if (foreign != null) { _problems.Add(new(path, ForeignContract(type, foreign)) { Declares = ForeignNames(type) }); found++; }
                else if (attribute != null) { _problems.Add(new(path, $"{type.FullName} has [Plugin(\"{attribute.Name}\")] but implements none of ISchedule, IForgettingMetric or the method roles (IPenalty, ILossTerm, IStepObserver, IGradientHook, ITaskHooks, IDataRole, ICallback, IPredictor)")); found++; }
                continue;
            }
            found++;
            if (roles.Count > 1) { _problems.Add(new(path, $"{type.FullName} is more than one kind of plugin ({string.Join(", ", roles.Select(RoleName))}); a plugin type is a schedule, a method or a metric (a metric may also implement ITaskHooks and IStepObserver, to measure the model)")); continue; }
            if (attribute == null) { _problems.Add(new(path, $"{type.FullName} is a {RoleName(roles[0])} but has no [Plugin(\"name\")] attribute")); continue; }
            if (!TryOptionsType(type, out var optionsType, out var why)) { _problems.Add(new(path, $"{type.FullName} ('{attribute.Name}'): {why}")); continue; }

            // A name and an alias are claimed alike: two plugins answering to one name is the same conflict.
            foreach (var name in attribute.Aliases.Prepend(attribute.Name).Distinct())
            {
                var key = (roles[0], name);
                if (!_claims.TryGetValue(key, out var claimants)) _claims[key] = claimants = [];
                claimants.Add(path);
            }
            _plugins.Add(new(roles[0], attribute.Name, attribute.Summary, type, optionsType, path) { Aliases = attribute.Aliases });
        }
        if (found == 0)
            _problems.Add(new(path, "no plugin type found: no public class implements ISchedule, IForgettingMetric or a method role"));
    }

    /// <summary>
    /// A data source or a model kind: named by itself (its <c>Name</c>), made once with its parameterless constructor and
    /// added to its registry (<see cref="DataSources"/>, <see cref="ModelKinds"/>), so a config names it as it names a
    /// built-in one; a name taken by a built-in or by another DLL's type is a problem naming both.
    /// </summary>
    void LoadRegistered(Type type, string path)
    {
        var role = type.IsSubclassOf(typeof(ModelKind)) ? PluginRole.ModelKind : PluginRole.DataSource;
        if (type.GetConstructor(Type.EmptyTypes) is null)
        {
            _problems.Add(new(path, $"{type.FullName} is a {RoleName(role)} but has no public parameterless constructor"));
            return;
        }
        try
        {
            var instance = Activator.CreateInstance(type)!;
            var (name, summary, options) = instance switch
            {
                ModelKind k => (k.Name, k.Summary, k.OptionsType),
                IDataSource s => (s.Name, s.Summary, s.OptionsType),
                _ => throw new InvalidOperationException(),
            };
            if (options.GetConstructor(Type.EmptyTypes) is null)
            {
                _problems.Add(new(path, $"{type.FullName} ('{name}'): its options type {options.Name} needs a public parameterless constructor (defaults for every key)"));
                return;
            }
            if (instance is ModelKind kind) ModelKinds.Register(kind);
            else DataSources.Register((IDataSource)instance);
            _plugins.Add(new(role, name, summary, type, options, path));
        }
        catch (Exception e) when (e is ArgumentException or TargetInvocationException or InvalidOperationException or MissingMethodException)
        {
            var reason = e is TargetInvocationException { InnerException: { } inner } ? $"its constructor threw {inner.GetType().Name}: {inner.Message}" : e.Message;
            _problems.Add(new(path, $"{type.FullName}: {reason}"));
        }
    }

    /// <summary>
    /// Reads the DLL's metadata without loading it. Returns null when it may be loaded, "" when it is not a
    /// plugin and not worth a word (a dependency), or the reason it is refused; and the plugin names it declares.
    /// </summary>
    static (string? Refused, IReadOnlyList<string> Declares) CheckMetadata(string path)
    {
        // A FIFO named *.dll would block the open; a device would be read as an image.
        if (InputFile.Problem(path) is { } notAFile) return (notAFile, []);
        try
        {
            using var stream = File.OpenRead(path);
            using var pe = new PEReader(stream);
            if (!pe.HasMetadata) return ("not a .NET assembly (no CLI metadata)", []);
            var md = pe.GetMetadataReader();
            if (!md.IsAssembly) return ("not a .NET assembly (a module without an assembly manifest)", []);
            var declares = DeclaredNames(md);
            var host = typeof(ISchedule).Assembly.GetName().Version!;
            foreach (var handle in md.AssemblyReferences)
            {
                var r = md.GetAssemblyReference(handle);
                if (md.GetString(r.Name) != "Research.Abstractions") continue;
                var v = r.Version;
                if (v.Major != host.Major || v.Minor > host.Minor)
                    return ($"built against plugin contract {v.Major}.{v.Minor}; this host provides {host.Major}.{host.Minor} " +
                            "(rebuild the plugin against this Research.Abstractions)", declares);
                return (null, declares);
            }
            return ("no plugin type found: it does not reference Research.Abstractions", declares);
        }
        catch (BadImageFormatException) { return ("not a .NET assembly (not a PE file)", []); }
        catch (IOException e) { return ($"cannot be read: {e.Message}", []); }
    }

    /// <summary>
    /// The names and aliases of the DLL's <c>[Plugin("name", Aliases = […])]</c> attributes, read from its metadata (ECMA-335
    /// II.23.3: a prolog 0x0001, the constructor's string, then the named arguments), so that a DLL that cannot be loaded
    /// still says which plugins it would have provided. A value it cannot read ends the reading of that attribute.
    /// </summary>
    static IReadOnlyList<string> DeclaredNames(MetadataReader md)
    {
        var names = new List<string>();
        foreach (var handle in md.CustomAttributes)
        {
            var attribute = md.GetCustomAttribute(handle);
            if (attribute.Parent.Kind != HandleKind.TypeDefinition || attribute.Constructor.Kind != HandleKind.MemberReference) continue;
            var parent = md.GetMemberReference((MemberReferenceHandle)attribute.Constructor).Parent;
            if (parent.Kind != HandleKind.TypeReference) continue;
            var type = md.GetTypeReference((TypeReferenceHandle)parent);
            if (md.GetString(type.Name) != nameof(PluginAttribute) || md.GetString(type.Namespace) != typeof(PluginAttribute).Namespace) continue;
            try
            {
                var blob = md.GetBlobReader(attribute.Value);
                if (blob.ReadUInt16() != 1 || blob.ReadSerializedString() is not { } name) continue;
                names.Add(name);
                for (int i = blob.ReadUInt16(); i > 0; i--)
                {
                    blob.ReadByte();   // field or property
                    var kind = (SerializationTypeCode)blob.ReadByte();
                    var element = kind == SerializationTypeCode.SZArray ? (SerializationTypeCode)blob.ReadByte() : kind;
                    var argument = blob.ReadSerializedString();
                    if (element != SerializationTypeCode.String) break;
                    if (kind == SerializationTypeCode.String) { blob.ReadSerializedString(); continue; }
                    var strings = new List<string>();
                    for (int n = blob.ReadInt32(); n > 0; n--) if (blob.ReadSerializedString() is { } s) strings.Add(s);
                    if (argument == nameof(PluginAttribute.Aliases)) names.AddRange(strings);
                }
            }
            catch (BadImageFormatException) { }
        }
        return names;
    }

    /// <summary>The name and aliases of a plugin type's attribute from another copy of the contract.</summary>
    static IReadOnlyList<string> ForeignNames(Type type)
    {
        var attribute = type.GetCustomAttributesData().FirstOrDefault(a => a.AttributeType.FullName == typeof(PluginAttribute).FullName);
        if (attribute is null || attribute.ConstructorArguments.FirstOrDefault().Value is not string name) return [];
        var aliases = attribute.NamedArguments.FirstOrDefault(a => a.MemberName == nameof(PluginAttribute.Aliases)).TypedValue.Value
            as IReadOnlyCollection<CustomAttributeTypedArgument>;
        return [name, .. aliases?.Select(a => a.Value).OfType<string>() ?? []];
    }

    static string ForeignContract(Type type, Type foreign)
    {
        var copy = foreign.Assembly.Location;
        var context = AssemblyLoadContext.GetLoadContext(type.Assembly);
        var ownCopies = context?.Assemblies.Where(a => a.GetName().Name is "TorchSharp" or "Research.Abstractions")
            .Select(a => $"{a.GetName().Name} {a.GetName().Version} from {a.Location}") ?? [];
        return $"{type.FullName} implements {foreign.FullName} from another copy of the contract ({copy}), so the host " +
               $"cannot use it: the plugin carries its own {string.Join(", ", ownCopies.DefaultIfEmpty("Research.Abstractions/TorchSharp"))}. " +
               "Reference Research.Abstractions and TorchSharp with Private=false and ExcludeAssets=runtime;native";
    }

    static bool TryOptionsType(Type type, out Type? optionsType, out string why)
    {
        optionsType = null; why = "";
        var ctors = type.GetConstructors();
        var withOptions = ctors.FirstOrDefault(c => c.GetParameters().Length == 1);
        if (withOptions != null)
        {
            optionsType = withOptions.GetParameters()[0].ParameterType;
            if (optionsType.GetConstructor(Type.EmptyTypes) == null)
            { why = $"its options type {optionsType.Name} needs a public parameterless constructor (defaults for every key)"; return false; }
            return true;
        }
        if (ctors.Any(c => c.GetParameters().Length == 0)) return true;
        why = "needs a public constructor taking nothing or one options object";
        return false;
    }

    /// <summary>A config table's plugin by name or alias (<see cref="IPluginOptions"/>).</summary>
    public (string Name, Type? OptionsType)? Lookup(string table, string name)
    {
        PluginRole? role = table switch
        {
            "schedule" => PluginRole.Schedule,
            "methods" or "callbacks" => PluginRole.Method,
            "metrics" => PluginRole.ForgettingMetric,
            _ => null,
        };
        return Plugins.FirstOrDefault(p => p.Role == role && p.IsNamed(name)) is { } d ? (d.Name, d.OptionsType) : null;
    }

    /// <summary>The method roles a type plays, as <c>research plugins list</c> shows them (penalty, loss term, …).</summary>
    public static IEnumerable<string> MethodRoles(Type type) =>
        new (Type Role, string Name)[]
        {
            (typeof(IPenalty), "penalty"), (typeof(ILossTerm), "loss term"), (typeof(IStepObserver), "step observer"),
            (typeof(IGradientHook), "gradient hook"), (typeof(ITaskHooks), "task hooks"), (typeof(IDataRole), "data"),
            (typeof(ICallback), "callback"), (typeof(IPredictor), "predictor"), (typeof(IStateful), "stateful"),
        }.Where(r => r.Role.IsAssignableFrom(type)).Select(r => r.Name);

    public static string RoleName(PluginRole role) => role switch
    {
        PluginRole.Schedule => "schedule",
        PluginRole.Method => "method",
        PluginRole.DataSource => "data source",
        PluginRole.ModelKind => "model kind",
        _ => "forgetting metric",
    };

    /// <summary>The descriptor for a name, or an error naming what is available and which DLLs failed.</summary>
    public PluginDescriptor Find(PluginRole role, string name)
    {
        var matches = _plugins.Where(p => p.Role == role && p.IsNamed(name)).ToList();
        if (matches.Count > 1)
            throw new PluginException($"{RoleName(role)} '{name}' is claimed by two plugins: {string.Join(" and ", matches.Select(m => m.AssemblyPath))}; remove one");
        if (matches.Count == 1) return matches[0];
        // A DLL that declares the name but cannot be used (another contract, its own copy of it) is the cause: said first.
        var cause = _problems.Where(p => p.Declares.Contains(name)).ToList();
        if (cause.Count > 0)
            throw new PluginException($"{RoleName(role)} '{name}' cannot be used: " +
                                      string.Join("; ", cause.Select(p => $"{p.Path}, which declares it, was refused: {p.Reason}")));
        var available = _plugins.Where(p => p.Role == role).Select(p => p.Name).Order().ToList();
        var aliases = _plugins.Where(p => p.Role == role).SelectMany(p => p.Aliases);
        var message = $"no {RoleName(role)} named '{name}'{OptionsBinder.Suggestion(name, available.Concat(aliases))} (available: {(available.Count == 0 ? "none" : string.Join(", ", available))})";
        if (_problems.Count > 0) message += "; plugins that failed to load: " + string.Join("; ", _problems);
        throw new PluginException(message);
    }

    /// <summary>Creates the plugin a config chose: finds it, binds its TOML table, runs its constructor.</summary>
    public T Create<T>(PluginRole role, PluginChoice choice, string file) where T : class
    {
        PluginDescriptor descriptor;
        try { descriptor = Find(role, choice.Name); }
        catch (PluginException e) { throw new PluginException($"{file}: {choice.Key}.name: \"{choice.Name}\": {e.Message}", e); }
        return (T)Instantiate(descriptor, choice.Options, file, choice.Key);
    }

    /// <summary>Binds options (ignoring <c>name</c>) and runs the plugin's constructor.</summary>
    public static object Instantiate(PluginDescriptor d, Tomlyn.Model.TomlTable? options, string file, string section)
    {
        object? boundOptions = null;
        if (d.OptionsType != null)
        {
            try { boundOptions = OptionsBinder.Bind(d.OptionsType, options, file, section, "name"); }
            catch (Exception e) when (e is TypeInitializationException or TargetInvocationException)
            {
                var cause = Innermost(e);
                throw new PluginException($"{d.AssemblyPath}: the options type {d.OptionsType.Name} of {RoleName(d.Role)} '{d.Name}' cannot be created: " +
                                          $"{cause.GetType().Name}: {cause.Message}", e);
            }
        }
        else if (options != null && options.Keys.Any(k => k != "name"))
            throw new ConfigException(file, $"{section}.{options.Keys.First(k => k != "name")}",
                $"unknown key ({RoleName(d.Role)} '{d.Name}' takes no options)");
        try
        {
            return boundOptions != null ? Activator.CreateInstance(d.Type, boundOptions)! : Activator.CreateInstance(d.Type)!;
        }
        catch (TargetInvocationException e) when (e.InnerException != null)
        {
            throw new PluginException($"{d.AssemblyPath}: the constructor of {RoleName(d.Role)} '{d.Name}' ({d.Type.FullName}) threw " +
                                      $"{e.InnerException.GetType().Name}: {e.InnerException.Message}", e.InnerException);
        }
    }

    /// <summary>What a reflection call's wrappers (TargetInvocationException, TypeInitializationException) were thrown for.</summary>
    static Exception Innermost(Exception e)
    {
        while (e.InnerException != null) e = e.InnerException;
        return e;
    }

    /// <summary>The options type's keys with their default values, for <c>research plugins list</c>.</summary>
    /// <exception cref="PluginException">The options type cannot be created (its static constructor throws, say).</exception>
    public static IEnumerable<(string Key, object? Default)> OptionDefaults(PluginDescriptor d)
    {
        if (d.OptionsType == null) yield break;
        object? defaults;
        try { defaults = Activator.CreateInstance(d.OptionsType); }
        catch (Exception e) when (e is TypeInitializationException or TargetInvocationException)
        {
            var cause = Innermost(e);
            throw new PluginException($"its options type {d.OptionsType.Name} cannot be created: {cause.GetType().Name}: {cause.Message}", e);
        }
        foreach (var (key, prop) in OptionsBinder.Keys(d.OptionsType).OrderBy(k => k.Key, StringComparer.Ordinal))
            yield return (key, prop.GetValue(defaults));
    }
}
