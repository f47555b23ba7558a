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
    | v -> JsonNode.Parse(v.ToJsonString())

/// Plugin options the config leaves out take their defaults, so that `lambda = 1.0` written out and left to its
/// default are the same trial. Options of a plugin the host does not know stay as given.
let private withDefaults (host: PluginHost) (role: Research.Core.Plugins.PluginRole) (table: JsonNode) =
    match table with
    | :? JsonObject as o when not (isNull o["name"]) ->
        match host.Plugins |> Seq.tryFind (fun p -> p.Role = role && p.Name = o["name"].GetValue<string>()) with
        | Some d ->
            for (key, value) in PluginHost.OptionDefaults d do
                if not (o.ContainsKey key) then
                    o[key] <- JsonNode.Parse(Text.Json.JsonSerializer.Serialize(value))
        | None -> ()
    | _ -> ()

/// The canonical resolved config of a trial: the config loaded with its overrides, every section with its defaults,
/// plugin options with theirs, the command (train or study) added, the run's label, folder and threads left out,
/// keys sorted. Its SHA-256 is the trial's identity.
let canonicalConfig (host: PluginHost) (command: string) (config: RunConfig) : string =
    let root = JsonNode.Parse(RunSetup.ResolvedJson config).AsObject()
    let run = root["run"].AsObject() // the resolved JSON names properties as the records do
    for key in excluded do run.Remove key |> ignore
    withDefaults host PluginRole.Schedule root["schedule"]
    for r in root["regularizers"].AsArray() do withDefaults host PluginRole.Regularizer r
    root["command"] <- JsonValue.Create command
    (canonical root).ToJsonString()

let sha256 (text: string) =
    Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes text))
