/// Model kinds as a registry: a kind defined here, in the test project alone, registered and trained through the normal
/// builder; the built-in kinds as the binder sees them; a key of another kind refused naming the kinds that have it; each
/// kind's keys in `research config schema`; a kind's memory shape.
module Research.Tests.ModelRegistryTests

open System
open System.IO
open Expecto
open TorchSharp
open Research.Abstractions
open Research.Core.Config
open Research.Core.Memory
open Research.Core.Models
open Research.Core.Models.Kinds
open Research.Core.Plugins
open Research.Core.Training
open Research.Tests.TestSupport

type private Tensor = torch.Tensor

/// The test kind's own keys: the width of its hidden layer.
[<ModelOptions("tiny-test")>]
type TinyOptions() =
    /// Width of the hidden layer.
    [<Option(Min = 1.0, Max = 4096.0)>]
    member val Width = 12 with get, set

/// features → body (Linear, ReLU) → head: the head's input is the representation the probes read.
type TinyNet(features: int64, width: int64, outputs: int64) as this =
    inherit torch.nn.Module<Tensor, Tensor>("tiny")
    let body = torch.nn.Linear(features, width)
    let head = torch.nn.Linear(width, outputs)
    do this.RegisterComponents()
    override _.forward x = head.call (torch.nn.functional.relu (body.call x))

/// A kind written as a built-in one is: options, a check against the data, a seeded creation; loading, the head, the
/// representation and the memory shape are the defaults (by name, "head", its input, none).
type TinyKind() =
    inherit ModelKind<TinyOptions>()
    override _.Summary = "a test's two-layer network (body, head) on feature vectors"
    override _.Check(options: TinyOptions, model: ModelKeys, data: DataShape) =
        seq { if data.IsText then yield OptionError("model.kind", "\"tiny-test\" reads feature vectors, not text") }
    override _.Create(options: TinyOptions, context: ModelContext, generator: torch.Generator) =
        let net = new TinyNet(context.Target.Features, int64 options.Width, int64 context.Outputs)
        Init.LinearDefault(net, generator)
        net :> torch.nn.Module<Tensor, Tensor>

let private registered = lazy (ModelKinds.Register(TinyKind()))

let private host = lazy (PluginHost.Load([]))

let private write (dir: string) (name: string) (text: string) =
    let path = Path.Combine(dir, name + ".toml")
    File.WriteAllText(path, text)
    path

/// The errors a config text gets, one string per error ("file: key: message").
let private errorsOf (text: string) =
    try ConfigLoader.Parse(text, "kinds.toml") |> ignore; []
    with :? ConfigException as e -> [ for err in e.Errors -> string err ]

let tests =
    testList "model registry" [
        test "a kind defined in the test project, registered, trains through the normal builder: its keys are bound, its model built and checkpointed, the loss falls, and the probes read its representation" {
            registered.Force()
            let dir = tempDir "kind"
            let path =
                write dir "tiny" (sprintf "[run]\nname = \"tiny\"\nseed = 5\nthreads = 1\noutput_dir = \"%s\"\n[data]\ndataset = \"synthetic\"\nsynthetic_samples = 600\nsynthetic_features = 8\nsynthetic_classes = 3\nbatch_size = 50\n[model]\nkind = \"tiny-test\"\nwidth = 24\n[optimizer]\nlr = 0.01\n[train]\nepochs = 3\nlog_every = 1\n[probes]\ncka = true\nitems = 64\n"
                                      (Path.Combine(dir, "runs").Replace("\\", "/")))
            let config = ConfigLoader.Load path
            Expect.equal (config.Model.Options :?> TinyOptions).Width 24 "the kind's own key, bound from [model]"
            let outcome = Trainer.Run(config, host.Value)
            let weights = TorchSharp.PyBridge.Safetensors.LoadStateDict(outcome.WeightsPath)
            Expect.equal (weights.["body.weight"].shape) [| 24L; 8L |] "the test kind's body, width 24 on 8 features"
            Expect.equal (weights.["head.weight"].shape) [| 3L; 24L |] "its head, one output per class"
            let losses = TrainingTests.storeRows outcome.RunDir "SELECT value FROM metrics WHERE key = 'train_loss' ORDER BY step" |> List.map (fun r -> Convert.ToDouble r[0])
            Expect.isLessThan (List.last losses) (List.head losses * 0.7) "the loss falls by more than 30%"
            let cka = TrainingTests.storeRows outcome.RunDir "SELECT value FROM metrics WHERE key = 'probe_cka'" |> List.map (fun r -> Convert.ToDouble r[0])
            Expect.isNonEmpty cka "the CKA probe read the representation (the head's input)"
            for v in cka do Expect.isTrue (v > 0.0 && v <= 1.0 + 1e-9) (sprintf "CKA %g in (0, 1]" v)
            let stored = TrainingTests.storeRows outcome.RunDir "SELECT resolved_json FROM runs" |> List.exactlyOne
            let model = (Text.Json.Nodes.JsonNode.Parse(string stored[0])).["model"].AsObject()
            Expect.equal [ for kv in model -> kv.Key ] [ "head_init"; "init_from"; "kind"; "models_dir"; "outputs"; "reinit"; "strict"; "width" ]
                "the canonical [model]: the shared keys and the kind's own, none of another kind's"
        }

        test "a kind and a data source defined in the test project alone train a 2-task study with the probes and the Hessian decomposition: both tasks learned, CKA in (0, 1], the measured loss increase of task 0 the matrix's, the groups' quadratic terms (body, head) summing to the whole within 1e-9" {
            registered.Force()
            DataRegistryTests.registered.Force()
            let dir = tempDir "kind-and-source"
            let path =
                write dir "open" (sprintf "[run]\nname = \"open\"\nseed = 7\nthreads = 1\noutput_dir = \"%s\"\n[data]\ndataset = \"bands\"\nband_items = 1600\nbatch_size = 32\n[model]\nkind = \"tiny-test\"\nwidth = 16\n[optimizer]\nlr = 0.02\n[train]\nepochs = 8\n[probes]\ncka = true\nitems = 64\n[study]\nbenchmark = \"split-class\"\nhessian = { samples = 200, top_k = 4, trace_probes = 0, fisher = [\"empirical\"] }\n"
                                      (Path.Combine(dir, "runs").Replace("\\", "/")))
            let o = Trainer.Run(ConfigLoader.Load path, host.Value, kind = RunKind.Study)
            let probe name =
                match o.Record.Probes.TryGetValue name with
                | true, m -> m
                | _ -> failtestf "the record has no probe %s (it has: %s)" name (String.Join(", ", o.Record.Probes.Keys))
            Expect.equal o.Record.Tasks.Count 2 "two tasks"
            for i in 0 .. 1 do Expect.isGreaterThan (o.Record.Accuracy[i][i]) 0.8 (sprintf "task %d learned (chance: 0.5 over its two classes)" i)
            let cka = probe "probe_cka" |> Array.concat |> Array.filter Double.IsFinite
            Expect.isNonEmpty cka "CKA read through the kind's representation at each task end"
            for v in cka do Expect.isTrue (v > 0.0 && v <= 1.0 + 1e-9) (sprintf "CKA %g in (0, 1]" v)
            let measured = (probe ProbeNames.MeasuredTestLossIncrease).[1].[0]
            Expect.floatClose { absolute = 1e-6; relative = 1e-6 } measured (o.Record.Loss[1][0] - o.Record.Loss[0][0]) "task 0's measured test-loss increase is the matrix's"
            let quadratic = (probe ProbeNames.QuadraticLossIncrease).[1].[0]
            Expect.isTrue (Double.IsFinite quadratic) "½ΔθᵀHΔθ of task 0 after task 1"
            let groups =
                o.Record.Probes |> Seq.filter (fun kv -> kv.Key.StartsWith(ProbeNames.QuadraticLossIncrease + "/")) |> Seq.map (fun kv -> kv.Key, kv.Value[1][0]) |> List.ofSeq
            Expect.isGreaterThanOrEqual groups.Length 1 "the decomposition split by parameter group"
            Expect.floatClose { absolute = 1e-12; relative = 1e-9 } (groups |> List.sumBy snd) quadratic "Σ_g ½Δθ_gᵀ(HΔθ)_g = ½ΔθᵀHΔθ"
        }

        test "a registered kind refuses the keys of other kinds and data it does not read, naming the key and the file" {
            registered.Force()
            let errs = errorsOf "[model]\nkind = \"tiny-test\"\nwidth = 8\nblocks = [2, 2, 2, 2]\nhiden = [3]\n"
            Expect.contains errs "kinds.toml: model.blocks: is a key of kind resnet, not of tiny-test" "another kind's key"
            Expect.exists errs (fun e -> e.StartsWith "kinds.toml: model.hiden: unknown key" && e.Contains "known keys of kind tiny-test" && e.Contains "width") "an unknown key, with the kind's keys"
            let text = ConfigLoader.Parse("[data]\ndataset = \"fortunes\"\n[model]\nkind = \"tiny-test\"\n", "kinds.toml")
            let problem = Expect.wantSome (ModelKinds.Check(text.Model, RunBuilder.Shape text) |> Seq.tryHead) "a problem"
            Expect.equal problem (OptionError("model.kind", "\"tiny-test\" reads feature vectors, not text")) "the kind's own check"
        }

        test "a key of another built-in kind is one error naming the key, the file and the kinds that have it" {
            registered.Force()
            Expect.equal (errorsOf "[model]\nkind = \"gpt\"\nhidden = [8]\n") [ "kinds.toml: model.hidden: is a key of kind mlp, not of gpt" ] "hidden on a gpt"
            Expect.equal (errorsOf "[model]\nwidth = 64\n") [ "kinds.toml: model.width: is a key of kind bert, gpt, llama and tiny-test, not of mlp" ] "width on the default mlp (the test's kind has one too)"
            Expect.equal (errorsOf "[model]\nkind = \"cnn\"\nimage_side = 96\n") [ "kinds.toml: model.image_side: is a key of kind resnet, not of cnn" ] "image_side on a cnn"
            Expect.equal (errorsOf "[model]\nkind = \"resnet\"\nimage_side = 100\n") [ "kinds.toml: model.image_side: 100 is not a multiple of 32 (the ResNet halves the side five times)" ] "the kind's own rule"
            Expect.equal (errorsOf "[model]\nkind = \"transformer\"\n") [ "kinds.toml: model.kind: \"transformer\" is not a model kind (one of: bert, cnn, gpt, llama, mlp, resnet, vlm, tiny-test)" ] "an unknown kind, and the kinds there are"
            Expect.isEmpty (errorsOf "[model]\nkind = \"gpt\"\nwidth = 64\nheads = 4\n") "a gpt's own keys"
            let both = errorsOf "[model]\nkind = \"gpt\"\noutputs = -1\nwidth = -2\n"
            Expect.equal both [ "kinds.toml: model.outputs: -1 must be in [0, 1000000]"; "kinds.toml: model.width: -2 must be in [0, 65536]" ]
                "a shared key and the kind's own key, both wrong: both reported at once"
        }

        test "the built-in kinds are the binder's: ModelKinds and ModelKindOptions name the same kinds, each with its options type, and no kind's key is a shared one" {
            let builtIn = [ for k in ModelKinds.BuiltIn -> k.Name, k.OptionsType ]
            Expect.equal (builtIn |> List.map fst) [ "bert"; "cnn"; "gpt"; "llama"; "mlp"; "resnet"; "vlm" ] "the built-in kinds, by name"
            for name, options in builtIn do
                Expect.equal (ModelKindOptions.Find name) options (sprintf "%s: the options type the binder binds" name)
                for spec in OptionSchema.Of options do
                    Expect.isFalse (ModelKindOptions.SharedKeys |> Seq.contains spec.Key) (sprintf "%s.%s is not a shared key" name spec.Key)
            // Kinds added after 2.2 (llama, issue 30) have no 2.2 keys: the frozen keys are those of 2.2's kinds.
            let builtIn = builtIn |> List.filter (fun (name, _) -> Release22Keys.Kinds |> Seq.contains name)
            Expect.equal (set Release22Keys.Kinds) (set (List.map fst builtIn)) "the kinds of 2.2 are built in"
            let ownKeys = builtIn |> List.collect (fun (_, t) -> [ for s in OptionSchema.Of t -> s.Key ]) |> set
            Expect.equal (set [ for struct (key, _) in Release22Keys.Model -> key ]) ownKeys "2.2's flat keys are the built-in kinds' keys, each frozen at its 2.2 default"
            for name, options in builtIn do
                let defaults = Activator.CreateInstance options
                for spec in OptionSchema.Of options do
                    let frozen = Release22Keys.Model |> Seq.find (fun struct (k, _) -> k = spec.Key) |> fun struct (_, v) -> v
                    let now = Text.Json.JsonSerializer.Serialize(spec.Property.GetValue defaults)
                    Expect.equal now frozen (sprintf "%s.%s: today's default is 2.2's" name spec.Key)
        }

        test "research config schema shows each kind's keys under [model] kind = \"…\", with defaults and docs" {
            let dir = tempDir "schema-kinds"
            let r = research dir [ "config"; "schema"; "model" ]
            Expect.equal r.ExitCode 0 r.Err
            let blocks = r.Out.Split("\n\n", StringSplitOptions.RemoveEmptyEntries) |> Array.map (fun b -> b.Trim())
            let block (header: string) = blocks |> Array.find (fun b -> b.StartsWith header)
            for kind, keys in [ "mlp", [ "hidden" ]; "gpt", [ "width"; "layers"; "heads"; "max_positions"; "dropout" ]
                                "bert", [ "width"; "layers"; "heads"; "intermediate"; "max_positions" ]; "resnet", [ "blocks"; "image_side"; "batch_norm" ] ] do
                let b = block (sprintf "[model] kind = \"%s\"" kind)
                for key in keys do Expect.stringContains b (sprintf "\n  %s " key) (sprintf "%s lists %s" kind key)
            Expect.stringContains (block "[model] kind = \"cnn\"") "(no options)" "the cnn has no keys of its own"
            Expect.stringContains (block "[model] kind = \"gpt\"") "Width d of the residual stream; 0: 256." "a kind's key with its doc"
            let shared = block "[model]"
            for key in [ "kind"; "outputs"; "head_init"; "init_from"; "models_dir"; "strict"; "reinit" ] do
                Expect.stringContains shared (sprintf "\n  %s " key) (sprintf "[model] lists the shared key %s" key)
            Expect.isFalse (shared.Contains "\n  hidden ") "[model] itself lists no kind's key"
            let gptOnly = research dir [ "config"; "schema"; "gpt" ]
            Expect.equal gptOnly.ExitCode 0 gptOnly.Err
            Expect.stringStarts (gptOnly.Out.Trim()) "[model] kind = \"gpt\"" "one kind by its name"
        }

        test "a transformer kind's memory shape is its layers, width and heads on the data's context and batch; other kinds have none" {
            let shapeOf (text: string) =
                let c = ConfigLoader.Parse(text, "m.toml")
                ModelKinds.MemoryShape(c, ModelPlan.Of(c, RunBuilder.Shape c))
            let gpt = shapeOf "[data]\ndataset = \"fortunes\"\ncontext = 64\nbatch_size = 8\n[model]\nkind = \"gpt\"\nwidth = 128\nlayers = 3\nheads = 8\n"
            Expect.equal gpt (TransformerShape(3L, 128L, 8L, 64L, 8L)) "gpt"
            let bert = shapeOf "[data]\ndataset = \"fortunes\"\ntokenizer = \"wordpiece\"\ncontext = 32\nbatch_size = 4\n[model]\nkind = \"bert\"\n"
            Expect.equal bert (TransformerShape(6L, 384L, 12L, 32L, 4L)) "bert: MiniLM's shape"
            Expect.isNull (shapeOf "[model]\nhidden = [8]\n") "an mlp is not a transformer"
        }
    ]
