/// A trial's identity: the SHA-256 of its canonical resolved config, so a rerun recognises the trials it has run.
module Research.Sweeps.Identity

open System
open System.Security.Cryptography
open System.Text
open System.Text.Json.Nodes
open Research.Core.Config
open Research.Core.Plugins
open Research.Core.Training

/// Keys of the resolved config that say where and how a trial runs, not what it computes: its label, its output
/// folder and its thread count (set by the executor). Two trials that differ only in them are the same trial.
let private excluded = set [ "Name"; "OutputDir"; "Threads" ]

/// Objects with their keys sorted (ordinal), recursively; arrays keep their order; numbers keep their JSON text.
let rec private canonical (node: JsonNode) : JsonNode =
    match node with
    | :? JsonObject as o ->
        let sorted = JsonObject()
        for kv in o |> Seq.sortWith (fun a b -> String.CompareOrdinal(a.Key, b.Key)) do
            sorted.Add(kv.Key, (if isNull kv.Value then null else canonical kv.Value))
        sorted :> JsonNode
    | :? JsonArray as a -> JsonArray([| for x in a -> if isNull x then null else canonical x |]) :> JsonNode
    | v -> v.DeepClone()

/// A bound option value as JSON, the way TOML spells it (enums in kebab case, as the binder reads them).
let rec private optionJson (v: obj) : JsonNode =
    match v with
    | null -> null
    | :? Enum as e -> JsonValue.Create(OptionsBinder.SnakeCase(e.ToString()).Replace('_', '-'))
    | :? string as s -> JsonValue.Create s
    | :? bool as b -> JsonValue.Create b
    | :? int as i -> JsonValue.Create(int64 i)
    | :? int64 as i -> JsonValue.Create i
    | :? float32 as f -> JsonValue.Create(float f)
    | :? float as f -> JsonValue.Create f
    | :? Array as a -> JsonArray([| for x in a -> optionJson x |]) :> JsonNode
    | v -> JsonNode.Parse(Text.Json.JsonSerializer.Serialize v)

/// A plugin's table as its options record sees it: bound (so defaults are filled in and spellings unified), then
/// every key written out. `lambda = 100.0` written out and left to its default are the same trial. A plugin without
/// an options type, or one the host does not know, stays as given.
let private pluginTable (host: PluginHost) (role: PluginRole) (choice: PluginChoice) (file: string) (given: JsonNode) : JsonNode =
    match host.Plugins |> Seq.tryFind (fun p -> p.Role = role && p.Name = choice.Name) with
    | Some d when not (isNull d.OptionsType) ->
        let bound = OptionsBinder.Bind(d.OptionsType, choice.Options, file, choice.Key, "name")
        let table = JsonObject()
        table["name"] <- JsonValue.Create choice.Name
        for KeyValue(key, prop) in OptionsBinder.Keys d.OptionsType do
            table[key] <- optionJson (prop.GetValue bound)
        table :> JsonNode
    | _ -> given

/// The canonical resolved config of a trial: the config loaded with its overrides, every section with its defaults,
/// plugin options bound and written out in full, the command (train or study) added, the run's label, folder and threads left out,
/// keys sorted. Its SHA-256 is the trial's identity.
let canonicalConfig (host: PluginHost) (command: string) (config: RunConfig) : string =
    let root = JsonNode.Parse(RunSetup.ResolvedJson config).AsObject()
    let run = root["run"].AsObject() // the resolved JSON names properties as the records do
    for key in excluded do run.Remove key |> ignore
    root["schedule"] <- pluginTable host PluginRole.Schedule config.Schedule config.File (root["schedule"].DeepClone())
    let regs = root["regularizers"].AsArray()
    let canonicalRegs = JsonArray([| for i in 0 .. regs.Count - 1 -> pluginTable host PluginRole.Regularizer config.Regularizers[i] config.File (regs[i].DeepClone()) |])
    root["regularizers"] <- canonicalRegs
    root["command"] <- JsonValue.Create command
    (canonical root).ToJsonString()

let sha256 (text: string) =
    Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes text))
