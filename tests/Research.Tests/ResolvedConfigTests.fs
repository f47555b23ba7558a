/// The canonical resolved config (ResolvedConfig): the one definition of "the same config" that resume, the run
/// record, sweeps and `research runs compare` use. Real plugins (the built-in ones) bind the plugin tables.
module Research.Tests.ResolvedConfigTests

open System
open System.IO
open System.Text.Json.Nodes
open Expecto
open Research.Core.Config
open Research.Core.Plugins
open Research.Core.Tracking
open Research.Tests.TestSupport

let private host = lazy (PluginHost.Load([]))

let private canonicalOf (command: string) (text: string) (overrides: string list) =
    ResolvedConfig.Canonical(ConfigLoader.Parse(text, "c.toml", overrides), host.Value, command)

let private identity (text: string) (overrides: string list) = ResolvedConfig.Identity(canonicalOf "train" text overrides, host.Value)

/// A config that sets something in every section, a schedule with options (an enum among them), and two methods
/// (an int where a double is bound; an enum written in snake case).
let private full = """
[run]
name = "full"
seed = 7
threads = 2
output_dir = "out"
[data]
dataset = "synthetic"
classes = [0, 1, 2]
batch_size = 32
validation_fraction = 0.2
[model]
hidden = [64, 32]
reinit = ["head"]
[optimizer]
name = "sgd"
lr = 0.05
momentum = 0.9
nesterov = true
no_decay_patterns = ["embed"]
[[optimizer.components]]
name = "head"
match = "^head\\."
lr_scale = 10.0
[[optimizer.components]]
name = "body"
match = "^layers\\."
frozen = true
[train]
epochs = 3
early_stopping_patience = 2
[precision]
mode = "fp16"
growth_interval = 100
[checkpoint]
every = 50
best_metric = "val_accuracy"
best_mode = "max"
[study]
benchmark = "split-class"
reset_optimizer = false
[schedule]
name = "warmup-stable-decay"
warmup_steps = 10
decay_shape = "cosine"
[[methods]]
name = "ewc"
lambda = 30
mode = "online"
gamma = 0.9
[[methods]]
name = "l2-sp"
anchor = "previous_task"
"""

/// `section.key=value` overrides that write out every value of a canonical config's table as TOML (JSON scalars and
/// arrays of scalars are TOML literals too), for a table at `path`.
let rec private assignments (path: string) (table: JsonObject) =
    [ for KeyValue(key, value) in table do
          match value with
          // A nested table (study.hessian) is written key by key, as a config writes it.
          | :? JsonObject as nested -> yield! assignments (sprintf "%s.%s" path key) nested
          | _ ->
              if key <> "name" || not (path.StartsWith "schedule" || path.StartsWith "methods") then
                  yield sprintf "%s.%s=%s" path key (value.ToJsonString()) ]

/// The node at a dotted path (`optimizer.components.0.lr`; numbers index arrays).
let private at (root: JsonNode) (path: string) : JsonNode =
    path.Split('.') |> Array.fold (fun (n: JsonNode) (k: string) -> match Int32.TryParse k with | true, i -> n.AsArray()[i] | _ -> n.AsObject()[k]) root

let rec private keysSorted (node: JsonNode) =
    match node with
    | :? JsonObject as o ->
        let keys = [ for kv in o -> kv.Key ]
        keys = List.sortWith (fun a b -> String.CompareOrdinal(a, b)) keys && (o |> Seq.forall (fun kv -> isNull kv.Value || keysSorted kv.Value))
    | :? JsonArray as a -> a |> Seq.forall (fun x -> isNull x || keysSorted x)
    | _ -> true

let tests =
    testList "resolved config" [
        test "the canonical config has the TOML keys (snake_case) of every section, the bound plugin tables and the command, keys sorted at every depth" {
            let c = canonicalOf "study" full []
            Expect.equal [ for kv in c -> kv.Key ]
                [ "checkpoint"; "command"; "data"; "methods"; "metrics"; "model"; "optimizer"; "precision"; "probes"; "run"; "schedule"; "study"; "train" ] "sections"
            Expect.equal [ for m in (at c "metrics").AsArray() -> m["name"].GetValue<string>() ] (List.ofSeq RunConfig.DefaultMetrics) "a study's default metrics, written out"
            Expect.equal ((at c "metrics.0").ToJsonString()) """{"after_task":-1,"name":"average-accuracy"}""" "bound with their options"
            Expect.equal (ResolvedConfig.Identity(c, host.Value)) (ResolvedConfig.Identity(canonicalOf "study" full [ "metrics=[{name=\"bwt\"}]" ], host.Value)) "the metrics are not part of the identity (they are computed after training)"
            Expect.isFalse ((canonicalOf "train" full []).ContainsKey "metrics" ) "a single run has no metrics"
            Expect.equal [ for kv in (at c "run").AsObject() -> kv.Key ] [ "name"; "output_dir"; "seed"; "tensorboard_dir"; "threads" ] "[run]"
            Expect.isTrue (keysSorted c) "sorted at every depth"
            Expect.equal ((at c "command").GetValue<string>()) "study" "command"
            Expect.equal ((at c "study.reset_optimizer").GetValue<bool>()) false "snake_case keys"
            Expect.equal ((at c "study.tasks").GetValue<int64>()) 5L "defaults filled in"
            Expect.equal ((at c "optimizer.components").AsArray().Count) 2 "components as an array of tables"
            Expect.equal ((at c "optimizer.components.0.lr_scale").GetValue<float>()) 10.0 "a component's keys"
            Expect.equal ((at c "optimizer.components.1.lr").GetValue<float>()) 0.0 "a component's defaults"
            Expect.equal ((at c "schedule").ToJsonString()) """{"decay_fraction":0.1,"decay_shape":"cosine","decay_steps":0,"min_lr_ratio":0,"name":"warmup-stable-decay","warmup_ratio":0,"warmup_steps":10}""" "schedule bound, defaults filled in"
            Expect.equal ((at c "methods.0").ToJsonString()) """{"fisher":"exact","gamma":0.9,"lambda":30,"mode":"online","name":"ewc"}""" "ewc bound"
            Expect.equal ((at c "methods.1").ToJsonString()) """{"alpha":0.01,"anchor":"previous-task","match":"","name":"l2-sp"}""" "enum in kebab case; a key added later (match) at its default"
            Expect.equal ((at c "methods.0.lambda").GetValue<float>()) 30.0 "an int bound to a double is a double"
        }
        testProperty "a default written out and left out give the same canonical config and identity (any subset of every section's keys and plugin options)" <|
            fun (seed: int) ->
                let baseText = "[schedule]\nname = \"step\"\nstep_size = 10\n[[methods]]\nname = \"ewc\"\n[[methods]]\nname = \"l2-sp\"\n"
                let defaults = canonicalOf "train" baseText []
                // Each section as a config may write it (the resolved TOML's keys): [data] without the identity's defaults
                // of other sources' keys, no section with an option its other options make unread (AppliesWhen).
                let resolved = Tomlyn.TomlSerializer.Deserialize<Tomlyn.Model.TomlTable>(ResolvedConfig.Toml defaults)
                let writable (section: string) (table: JsonObject) =
                    let keys = (resolved[section] :?> Tomlyn.Model.TomlTable).Keys |> Set.ofSeq
                    JsonObject(table |> Seq.filter (fun kv -> keys.Contains kv.Key) |> Seq.map (fun kv -> Collections.Generic.KeyValuePair(kv.Key, kv.Value.DeepClone())))
                let all =
                    [ for KeyValue(section, table) in defaults do
                          match section with
                          | "command" -> ()
                          | "methods" -> for i in 0 .. table.AsArray().Count - 1 do yield! assignments (sprintf "methods.%d" i) (table[i].AsObject())
                          | _ -> yield! assignments section (writable section (table.AsObject())) ]
                let rnd = Random seed
                let chosen = all |> List.filter (fun _ -> rnd.Next 2 = 0)
                let written = canonicalOf "train" baseText chosen
                ResolvedConfig.Json written = ResolvedConfig.Json defaults && ResolvedConfig.Identity(written, host.Value) = ResolvedConfig.Identity(defaults, host.Value)
        test "the identity of every config release 2.2 accepted is unchanged: the committed configs, the sweep arms' model overrides and the test configs (tests/Fixtures/identities/identities-2.2.tsv, written by 2.2)" {
            let fixture = Path.Combine(repoRoot, "tests", "Fixtures", "identities", "identities-2.2.tsv")
            let rows =
                File.ReadAllLines fixture |> Array.filter (fun l -> l <> "" && not (l.StartsWith "#")) |> Array.map (fun l -> l.Split '\t')
            Expect.equal rows.Length 65 "every row of the fixture"
            for row in rows do
                let path, command, expected = row[0], row[1], row[2]
                // "study --set model.kind=\"cnn\"": the command, then its overrides.
                let parts = command.Split(" --set ")
                let config = ConfigLoader.Load(Path.Combine(repoRoot, path), List.ofArray parts[1..])
                Expect.equal (ResolvedConfig.Identity(ResolvedConfig.Canonical(config, host.Value, parts[0]), host.Value)) expected (sprintf "%s, %s" path command)
        }
        test "study.classes_per_task, declared added later (AddedIn), is left out of the identity at its default 2 (a stored run keeps its identity) and counts when set" {
            let text = "[study]\nbenchmark = \"split-class\"\n"
            let c = canonicalOf "study" text []
            Expect.equal ((at c "study.classes_per_task").GetValue<int64>()) 2L "the canonical config writes it out"
            let before = c.DeepClone().AsObject()
            before["study"].AsObject().Remove("classes_per_task") |> ignore
            Expect.equal (ResolvedConfig.Identity(c, host.Value)) (ResolvedConfig.Identity(before, host.Value)) "the identity of the same config stored before the key existed"
            Expect.notEqual (ResolvedConfig.Identity(canonicalOf "study" text [ "study.classes_per_task=5" ], host.Value)) (ResolvedConfig.Identity(c, host.Value)) "another value is another run"
        }
        test "plugin options declared added in 2.2 (warmup-stable-decay's decay_steps, cosine-restarts' cycles), found through the plugins' options types, are left out of the identity at their default 0 and count when set" {
            for schedule, extra, key, value in [ "warmup-stable-decay", "", "decay_steps", "5"; "cosine-restarts", "cycle_steps = 10\n", "cycles", "" ] do
                let text = $"[schedule]\nname = \"{schedule}\"\n{extra}"
                let c = canonicalOf "train" text []
                Expect.equal ((at c $"schedule.{key}").GetValue<int64>()) 0L "the canonical config writes it out"
                let before = c.DeepClone().AsObject()
                before["schedule"].AsObject().Remove(key) |> ignore
                Expect.equal (ResolvedConfig.Identity(c, host.Value)) (ResolvedConfig.Identity(before, host.Value)) $"{key}: the identity of the same config stored before the option existed"
                if value <> "" then
                    Expect.notEqual (ResolvedConfig.Identity(canonicalOf "train" text [ $"schedule.{key}={value}" ], host.Value)) (ResolvedConfig.Identity(c, host.Value)) "another value is another run"
        }
        test "every default written out at once gives the same identity as none, for sections and plugin options" {
            let baseText = "[[methods]]\nname = \"ewc\"\n"
            let explicitText =
                baseText + "lambda = 100.0\nmode = \"separate\"\ngamma = 1.0\nfisher = \"exact\"\n" +
                "[optimizer]\nname = \"adamw\"\nlr = 0.001\nweight_decay = 0.01\ncomponents = []\n[schedule]\nname = \"constant\"\nwarmup_steps = 0\n" +
                "[study]\nbenchmark = \"permuted\"\ntasks = 5\nreset_optimizer = true\n[data]\nclasses = []\npath = \"\"\n"
            Expect.equal (identity explicitText []) (identity baseText []) "written out = left out"
        }
        test "an int where a double is bound (lambda = 100, lr = 1) gives the same identity as the double (100.0, 1.0)" {
            Expect.equal (identity "[optimizer]\nlr = 1\n[[methods]]\nname = \"ewc\"\nlambda = 100\n" [])
                         (identity "[optimizer]\nlr = 1.0\n[[methods]]\nname = \"ewc\"\nlambda = 100.0\n" []) "int = double"
        }
        test "an enum spelled in snake case (previous_task) or kebab case (previous-task) gives the same identity; a plugin option written with its default equals omitted" {
            let reg extra = identity ("[[methods]]\nname = \"l2-sp\"\n" + extra) []
            Expect.equal (reg "anchor = \"previous_task\"\n") (reg "anchor = \"previous-task\"\n") "snake = kebab"
            Expect.equal (reg "anchor = \"initial\"\nalpha = 0.01\n") (reg "") "defaults written = omitted"
            Expect.notEqual (reg "anchor = \"previous-task\"\n") (reg "") "another anchor"
            let schedule extra = identity ("[schedule]\nname = \"warmup-stable-decay\"\n" + extra) []
            Expect.equal (schedule "decay_shape = \"linear\"\n") (schedule "") "schedule enum default written = omitted"
        }
        testProperty "key order in the TOML does not change the identity (sections and the keys in each shuffled)" <|
            fun (seed: int) ->
                // Blocks: a header and its lines; [[…]] blocks keep their order (arrays keep theirs), [optimizer] keeps its components.
                let blocks =
                    full.Split("\n[") |> Array.filter (fun b -> b.Trim() <> "")
                    |> Array.map (fun b -> let lines = b.Trim().Split('\n') in "[" + lines[0], List.ofArray lines[1..])
                    |> List.ofArray
                let units =
                    blocks |> List.groupBy (fun (h, _) -> if h.StartsWith "[[methods" then "methods" elif h.Contains "optimizer" then "optimizer" else h)
                let rnd = Random seed
                let shuffle xs = xs |> List.sortBy (fun _ -> rnd.Next())
                let text =
                    [ for _, unit in shuffle units do
                          for header, lines in unit do
                              yield header
                              yield! shuffle lines ]
                    |> String.concat "\n"
                identity text [] = identity full []
        test "name, output_dir, threads and tensorboard_dir do not change the identity; the seed changes it but not the seed group" {
            let baseline = canonicalOf "train" full []
            for o in [ "run.name=\"other\""; "run.output_dir=\"elsewhere\""; "run.threads=4"; "run.tensorboard_dir=\"tb/arm/s1\"" ] do
                let c = canonicalOf "train" full [ o ]
                Expect.equal (ResolvedConfig.Identity(c, host.Value)) (ResolvedConfig.Identity(baseline, host.Value)) o
                Expect.equal (ResolvedConfig.SeedGroup(c, host.Value)) (ResolvedConfig.SeedGroup(baseline, host.Value)) o
                Expect.notEqual (ResolvedConfig.Json c) (ResolvedConfig.Json baseline) (o + ": but the canonical config records it")
            let reseeded = canonicalOf "train" full [ "run.seed=8" ]
            Expect.notEqual (ResolvedConfig.Identity(reseeded, host.Value)) (ResolvedConfig.Identity(baseline, host.Value)) "another seed, another identity"
            Expect.equal (ResolvedConfig.SeedGroup(reseeded, host.Value)) (ResolvedConfig.SeedGroup(baseline, host.Value)) "the same seed group"
            Expect.notEqual (ResolvedConfig.SeedGroup(canonicalOf "train" full [ "optimizer.lr=0.06" ], host.Value)) (ResolvedConfig.SeedGroup(baseline, host.Value)) "another lr, another group"
            Expect.equal (ResolvedConfig.WhereKeys |> List.ofSeq) [ "name"; "threads"; "output_dir"; "tensorboard_dir" ] "WhereKeys: [run]'s options declared outside the identity"
            Expect.equal (ResolvedConfig.Identity(baseline, host.Value)).Length 64 "SHA-256 in hex"
        }
        test "another command (train vs study) changes the identity and the seed group" {
            Expect.notEqual (ResolvedConfig.Identity(canonicalOf "train" full [], host.Value)) (ResolvedConfig.Identity(canonicalOf "study" full [], host.Value)) "identity"
            Expect.notEqual (ResolvedConfig.SeedGroup(canonicalOf "train" full [], host.Value)) (ResolvedConfig.SeedGroup(canonicalOf "study" full [], host.Value)) "seed group"
        }
        test "what a run computes changes the identity: a section's value, a plugin option, the plugin, the order of the methods" {
            let baseline = identity full []
            for o in [ "optimizer.lr=0.06"; "optimizer.components.0.lr_scale=2.0"; "methods.0.lambda=31"; "methods.0.fisher=\"empirical\""
                       "methods.1.anchor=\"initial\""; "schedule.warmup_steps=11"; "schedule.decay_shape=\"sqrt\""; "data.synthetic_features=9"; "study.tasks=6" ] do
                Expect.notEqual (identity full [ o ]) baseline o
            Expect.notEqual (identity "[schedule]\nname = \"cosine\"\n" []) (identity "[schedule]\nname = \"linear\"\n" []) "another schedule"
            Expect.notEqual (identity "[[methods]]\nname = \"l2\"\n[[methods]]\nname = \"l2-sp\"\n" [])
                            (identity "[[methods]]\nname = \"l2-sp\"\n[[methods]]\nname = \"l2\"\n" []) "the order of the methods"
        }
        test "Toml(canonical) read back by ConfigLoader gives the same canonical config and identity (round trip), the command as a comment" {
            let unknown = "[[methods]]\nname = \"not-a-plugin\"\nweight = 3\nscale = 2.0\nlist = [1.5, 2.0]\nwords = [\"a\", \"b\"]\n[methods.sub]\nx = \"y\"\n"
            for command, text in [ "train", ""; "study", full; "train", full + "\n" + unknown ] do
                let c = canonicalOf command text []
                let toml = ResolvedConfig.Toml c
                Expect.stringStarts toml (sprintf "# command: %s\n" command) "the command, as a comment"
                let back = ResolvedConfig.Canonical(ConfigLoader.Parse(toml, "back.toml"), host.Value, command)
                Expect.equal (ResolvedConfig.Json back) (ResolvedConfig.Json c) (sprintf "canonical config of:\n%s" toml)
                Expect.equal (ResolvedConfig.Identity(back, host.Value)) (ResolvedConfig.Identity(c, host.Value)) "identity"
            let c = canonicalOf "study" full []
            let toml = ResolvedConfig.Toml c
            Expect.stringContains toml "[[methods]]" "methods as an array of tables"
            Expect.stringContains toml "[[optimizer.components]]" "components as an array of tables"
            Expect.stringContains toml "reset_optimizer = false" "snake_case keys"
        }
        test "a plugin unknown to the host stays as given, its name added" {
            let c = canonicalOf "train" "[[methods]]\nname = \"not-a-plugin\"\nweight = 3\n" []
            Expect.equal ((at c "methods.0").ToJsonString()) """{"name":"not-a-plugin","weight":3}""" "as given"
        }
        test "study.hessian, declared outside the identity (PartOfIdentity = false), changes the canonical config but not the identity or the seed group" {
            let text = "[study]\nbenchmark = \"split-class\"\n"
            let plain = canonicalOf "study" text []
            let analysed = canonicalOf "study" text [ "study.hessian.samples=500"; "study.hessian.top_k=5" ]
            Expect.equal ((at analysed "study.hessian.samples").GetValue<int64>()) 500L "the canonical config records it"
            Expect.notEqual (ResolvedConfig.Json analysed) (ResolvedConfig.Json plain) "another canonical config"
            Expect.equal (ResolvedConfig.Identity(analysed, host.Value)) (ResolvedConfig.Identity(plain, host.Value)) "one identity"
            Expect.equal (ResolvedConfig.SeedGroup(analysed, host.Value)) (ResolvedConfig.SeedGroup(plain, host.Value)) "one seed group"
            Expect.isFalse ((JsonNode.Parse(ResolvedConfig.IdentityJson(analysed, host.Value))["study"]).AsObject().ContainsKey "hessian") "not in the text the identity hashes"
        }
        test "the text the identity hashes leaves out what the options declare (PartOfIdentity = false always, AddedIn at its default, the metrics' table) and keeps every other key" {
            let c = canonicalOf "study" "[schedule]\nname = \"cosine-restarts\"\ncycle_steps = 5\n[study]\nbenchmark = \"split-class\"\n" []
            let hashed = JsonNode.Parse(ResolvedConfig.IdentityJson(c, host.Value)).AsObject()
            Expect.equal [ for kv in hashed["run"].AsObject() -> kv.Key ] [ "seed" ] "[run]: the seed alone"
            Expect.isFalse (hashed["study"].AsObject().ContainsKey "classes_per_task") "classes_per_task at its default"
            Expect.isFalse (hashed["schedule"].AsObject().ContainsKey "cycles") "cycles at its default"
            Expect.isFalse (hashed.ContainsKey "metrics") "no metrics"
            Expect.equal (hashed["schedule"].AsObject().Count) ((at c "schedule").AsObject().Count - 1) "every other schedule key kept"
            Expect.equal (hashed["study"].AsObject().Count) ((at c "study").AsObject().Count - 2) "[study] less hessian and classes_per_task"
            Expect.equal (hashed["optimizer"].ToJsonString()) ((at c "optimizer").ToJsonString()) "a section without declarations whole"
            Expect.equal [ for kv in hashed -> kv.Key ] [ for kv in c do if kv.Key <> "metrics" then kv.Key ] "every other section"
            let set = canonicalOf "study" "[schedule]\nname = \"cosine-restarts\"\ncycles = 3\n[study]\nbenchmark = \"split-class\"\nclasses_per_task = 5\n" []
            let hashedSet = JsonNode.Parse(ResolvedConfig.IdentityJson(set, host.Value)).AsObject()
            Expect.equal ((at hashedSet "study.classes_per_task").GetValue<int64>()) 5L "an option added later counts once it is set"
            Expect.equal ((at hashedSet "schedule.cycles").GetValue<int64>()) 3L "a plugin's too"
        }
        test "Json is stable: the canonical JSON parsed back writes the same text, and SeedGroupOfJson of it is SeedGroup" {
            let c = canonicalOf "study" full []
            let text = ResolvedConfig.Json c
            let parsed = JsonNode.Parse(text).AsObject()
            Expect.equal (ResolvedConfig.Json parsed) text "same bytes"
            Expect.equal (ResolvedConfig.Identity(parsed, host.Value)) (ResolvedConfig.Identity(c, host.Value)) "same identity"
            Expect.equal (ResolvedConfig.SeedGroupOfJson(text, host.Value)) (ResolvedConfig.SeedGroup(c, host.Value)) "same seed group"
            Expect.equal (ResolvedConfig.Json (canonicalOf "study" full [])) text "same config, same bytes"
        }
        test "SeedGroupOfJson reads records of early versions by their declarations too (PascalCase run keys left out the same way) and hashes text that is not JSON as it is" {
            let old (name: string) (seed: int) (lr: float) =
                sprintf """{"run":{"Name":"%s","Seed":%d,"Threads":0,"OutputDir":"runs"},"optimizer":{"Lr":%g}}""" name seed lr
            Expect.equal (ResolvedConfig.SeedGroupOfJson(old "a-s1" 1 0.1, host.Value)) (ResolvedConfig.SeedGroupOfJson(old "a-s2" 2 0.1, host.Value)) "seed and name left out"
            Expect.notEqual (ResolvedConfig.SeedGroupOfJson(old "a-s1" 1 0.1, host.Value)) (ResolvedConfig.SeedGroupOfJson(old "a-s1" 1 0.2, host.Value)) "lr kept"
            Expect.equal (ResolvedConfig.SeedGroupOfJson("not json", host.Value)).Length 64 "hashed as it is"
        }
        test "research runs compare groups finished runs by the seed group of their resolved_json: seeds and names differ within a group, another lr is another group" {
            let dir = tempDir "compare-canonical"
            let runs = Path.Combine(dir, "runs")
            let record (name: string) (seed: int) (overrides: string list) (test: float) =
                let c = canonicalOf "train" full ([ sprintf "run.seed=%d" seed; sprintf "run.name=\"%s\"" name ] @ overrides)
                use store = new RunStore(Path.Combine(runs, name, RunStore.FileName))
                store.BeginRun(RunInfo(name, name, "c.toml", "", ResolvedConfig.Json c, ResolvedConfig.Identity(c, host.Value), "[]", int64 seed, "code", "{}", 1, "cpu"))
                store.Evaluation(name, 10L, 0, "epoch", "val", 0.5, test, 100L)
                store.Evaluation(name, 10L, 0, "epoch", "test", 0.5, test, 100L)
                store.EndRun(name, true)
            record "base-s1" 1 [] 0.5
            record "base-s2" 2 [ "run.threads=3" ] 0.6
            record "base-s3" 3 [ "run.output_dir=\"elsewhere\"" ] 0.7
            record "fast-s1" 1 [ "optimizer.lr=0.5" ] 0.8
            let r = research dir [ "runs"; "compare"; runs ]
            Expect.equal r.ExitCode 0 r.Err
            let words prefix =
                r.Out.Split('\n') |> Array.find (fun l -> l.StartsWith(prefix + " ")) |> fun l -> l.Split(' ', StringSplitOptions.RemoveEmptyEntries) |> List.ofArray
            Expect.equal (List.take 4 (words "base")) [ "base"; "3"; "0.6000"; "±" ] "three seeds in one group, mean 0.6"
            Expect.equal (words "fast") [ "fast"; "1"; "0.8000"; "0.8000" ] "another lr is another group"
        }
    ]
