/// `research memory --config` by component: a vision-language model's vision encoder, connector and language model, each
/// predicted from its parameter counts and read off its own tensors and its slices of the optimizer's flat tensors, equal
/// byte for byte and adding up to the whole model's bytes. Tiny VLMs (the cnn encoder, a GPT of width 16), nothing
/// downloaded; the caption data read Fashion-MNIST as the other caption tests do.
module Research.Tests.VlmMemoryTests

open System
open System.Collections.Generic
open System.IO
open Expecto
open TorchSharp
open Research.Abstractions
open Research.Core.Config
open Research.Core.Data
open Research.Core.Memory
open Research.Core.Optim
open Research.Core.Tasks
open Research.Core.Training
open Research.Tests.TestSupport

/// The seed's three [[optimizer.components]]; `encoderLine` is an extra line of the vision encoder's table ("frozen = true").
let private threeComponents (encoderLine: string) =
    "[[optimizer.components]]\nname = \"vision_encoder\"\nmatch = \"^vision_encoder\\\\.\"\nlr_scale = 0.1\n" + encoderLine + "\n" +
    "[[optimizer.components]]\nname = \"connector\"\nmatch = \"^connector\\\\.\"\nlr_scale = 10\n" +
    "[[optimizer.components]]\nname = \"language_model\"\nmatch = \"^language_model\\\\.\"\n"

/// A tiny VLM run config: the cnn encoder, a 2-layer connector of 24, a GPT d 16 × 1 layer × 2 heads on bytes, P = 3.
/// `optimizer` is the [optimizer] section's lines, `components` the [[optimizer.components]] tables (or "").
let private config (precision: string) (optimizer: string) (components: string) =
    let text =
        "[run]\nname = \"vlm-memory\"\nseed = 1\n" +
        "[data]\ndataset = \"fashion-captions\"\ntext_tokenizer = \"bytes\"\nbatch_size = 4\n" +
        "[model]\nkind = \"vlm\"\nencoder = \"cnn\"\nlanguage_model = \"gpt\"\nprefix_tokens = 3\nconnector_hidden = 24\n" +
        "[model.gpt]\nwidth = 16\nlayers = 1\nheads = 2\n" +
        sprintf "[optimizer]\n%s\n%s" optimizer components +
        sprintf "[precision]\nmode = \"%s\"\n" precision
    let dir = tempDir "vlm-memory"
    let file = Path.Combine(dir, "vlm.toml")
    File.WriteAllText(file, text)
    file

/// Two captions of 12 byte tokens (the first is the begin id 256) with images, as the caption data give them.
let private captionBatch () =
    use g = new torch.Generator(5UL)
    let image = torch.randn([| 2L; 1L; 28L; 28L |], generator = g)
    let ids = torch.randint(0L, 256L, [| 2L; 12L |], generator = g)
    ids.index_put_(torch.tensor 256L, [| torch.TensorIndex.Colon; torch.TensorIndex.Single(0L) |]) |> ignore
    Batch([ KeyValuePair(Batch.Image, image); KeyValuePair(Batch.InputIds, ids); KeyValuePair(Batch.Targets, ids.clone()) ])

let private names (cs: IReadOnlyList<ComponentMemory>) = cs |> Seq.map (fun c -> c.Name) |> List.ofSeq

let tests =
    testList "vlm-memory" [
        testList "each component's bytes after a real step" [
            for precision, optimizer, frozen in [ "fp32", "name = \"adamw\"\nlr = 1e-3", false
                                                  "bf16", "name = \"adamw\"\nlr = 1e-3", true
                                                  "fp16", "name = \"adamw\"\nlr = 1e-3", false
                                                  "bf16", "name = \"sgd\"\nlr = 1e-3\nmomentum = 0.9", false
                                                  "fp32", "name = \"sgd\"\nlr = 1e-3", false ] ->
                let label = sprintf "%s %s%s" precision (optimizer.Split('"')[1]) (if frozen then ", a frozen vision encoder" else "")
                test (sprintf "%s: predicted = allocated for vision_encoder, connector and language_model, and they add up to the whole model" label) {
                    use _ = torch.NewDisposeScope()
                    let file = config precision optimizer (threeComponents (if frozen then "frozen = true" else ""))
                    let c = ConfigLoader.Load(file, [||])
                    let struct (model, policy, o, _) = RunBuilder.ModelState(c)
                    use model = model
                    use o = o
                    let step = TrainStep(model, o, policy, MethodSet.None, 0.0, task = CausalLmTask())
                    let outcome = step.Run([| captionBatch () |], 1e-3)
                    Expect.isTrue outcome.Applied "a real step was taken"
                    let rules = (RunBuilder.Plan c.Optimizer).Components
                    let components = ComponentMemory.Of(model, o, ComponentMemory.ComponentOf(rules), policy.Mode, c.Optimizer.Name, c.Optimizer.Momentum)
                    Expect.equal (names components) [ "vision_encoder"; "connector"; "language_model" ] "the config's three components, in the model's order"
                    for m in components do
                        Expect.equal m.Allocated m.Predicted $"{m.Name}: byte for byte"
                        Expect.isGreaterThan m.Allocated.Weights 0L $"{m.Name} holds weights"
                    let vision = components |> Seq.find (fun m -> m.Name = "vision_encoder")
                    if frozen then
                        Expect.equal vision.Trainable 0L "a frozen encoder trains nothing"
                        Expect.equal (vision.Allocated.Gradients, vision.Allocated.MasterWeights, vision.Allocated.Moments) (0L, 0L, 0L) "and holds only weights"
                    else Expect.equal vision.Trainable vision.Parameters "all of it trains"
                    if policy.Mode <> Research.Core.Precision.PrecisionMode.Fp32 then
                        Expect.equal vision.Allocated.Weights (2L * vision.Parameters) "16-bit weights, 2 B each"
                    let whole = ModelMemory.Measure(model, o)
                    Expect.equal (ComponentMemory.Sum(components |> Seq.map (fun m -> m.Allocated))) whole "the components add up to the whole model's allocated bytes"
                    Expect.equal (components |> Seq.sumBy (fun m -> m.Parameters)) (model.parameters() |> Seq.sumBy (fun p -> p.numel())) "every parameter in one component"
                }
        ]
        test "without [[optimizer.components]] a VLM's components are its top-level modules, with the same bytes" {
            use _ = torch.NewDisposeScope()
            let load components =
                let c = ConfigLoader.Load(config "bf16" "name = \"adamw\"\nlr = 1e-3" components, [||])
                let struct (model, policy, o, _) = RunBuilder.ModelState(c)
                try
                    ComponentMemory.Of(model, o, ComponentMemory.ComponentOf((RunBuilder.Plan c.Optimizer).Components), policy.Mode, c.Optimizer.Name)
                    |> Seq.map (fun m -> m.Name, m.Allocated) |> List.ofSeq
                finally
                    o.Dispose()
                    model.Dispose()
            let byModule = load ""
            Expect.equal (byModule |> List.map fst) [ "vision_encoder"; "connector"; "language_model" ] "the top-level modules"
            Expect.equal byModule (load (threeComponents "")) "the same bytes as the config's components"
        }
        test "a pattern that leaves parameters out puts them in 'other', and the bytes still add up" {
            use _ = torch.NewDisposeScope()
            let c = ConfigLoader.Load(config "fp32" "name = \"adamw\"\nlr = 1e-3" "[[optimizer.components]]\nname = \"connector\"\nmatch = \"^connector\\\\.\"\nlr_scale = 10\n", [||])
            let struct (model, policy, o, _) = RunBuilder.ModelState(c)
            use model = model
            use o = o
            let components = ComponentMemory.Of(model, o, ComponentMemory.ComponentOf((RunBuilder.Plan c.Optimizer).Components), policy.Mode, c.Optimizer.Name)
            Expect.equal (names components) [ "other"; "connector" ] "the encoder comes first and is in 'other', with the language model"
            for m in components do Expect.equal m.Allocated m.Predicted $"{m.Name}: byte for byte"
            Expect.equal (ComponentMemory.Sum(components |> Seq.map (fun m -> m.Allocated))) (ModelMemory.Measure(model, o)) "they add up"
        }
        test "research memory --config on a VLM prints the three components, predicted = allocated, and the language model's activations" {
            let file = config "bf16" "name = \"adamw\"\nlr = 1e-3" (threeComponents "")
            let r = researchInProcess [ "memory"; "--config"; file ]
            Expect.equal r.ExitCode 0 r.Err
            let lines = r.Out.Split('\n') |> Array.map (fun l -> l.TrimEnd())
            let cells (l: string) = l.Split(' ', StringSplitOptions.RemoveEmptyEntries)
            let at = lines |> Array.findIndex (fun l -> l.StartsWith "by component")
            Expect.equal (cells lines[at + 1] |> List.ofArray)
                [ "component"; "parameters"; "trainable"; "weights"; "gradients"; "fp32"; "master"; "weights"; "fp32"; "master"; "gradients"; "optimizer"; "moments"; "total"; "MB" ]
                "the header, with the master copy's columns in bf16"
            for i, name in List.indexed [ "vision_encoder"; "connector"; "language_model" ] do
                let predicted, allocated = cells lines[at + 2 + 2 * i], cells lines[at + 3 + 2 * i]
                Expect.equal predicted[0] name "the component's row"
                Expect.equal predicted[3] "predicted" "predicted first"
                Expect.equal allocated[0] "allocated" "then allocated"
                Expect.sequenceEqual allocated[1..] predicted[4..] $"{name}: the same bytes"
            let sum = cells lines[at + 8]
            Expect.equal sum[0] "sum" "a sum row"
            let wholeTotal = lines |> Array.find (fun l -> l.StartsWith "total model state") |> cells
            Expect.equal sum[sum.Length - 2] wholeTotal[4] "the components' total is the whole model's allocated total"
            Expect.exists lines (fun l -> l = "  vision_encoder: not estimated") "the encoder's activations are said to be missing"
            Expect.exists lines (fun l -> l.StartsWith "  language_model: " && l.Contains " MB, estimated for 1 layers of width 16 on 67 positions") "the language model's activations"
            Expect.stringContains r.Out "each component: allocated = predicted, byte for byte" "the verdict"
        }
        test "research memory --config on an MLP with [[optimizer.components]] breaks it down too: a frozen body, the head in 'other'" {
            let dir = tempDir "vlm-memory"
            let file = Path.Combine(dir, "mlp.toml")
            File.WriteAllText(file,
                "[data]\ndataset = \"fashion-mnist\"\n[model]\nkind = \"mlp\"\nhidden = [32]\noutputs = 10\n[optimizer]\nname = \"adamw\"\nlr = 1e-3\n" +
                "[[optimizer.components]]\nname = \"body\"\nmatch = \"^layers\\\\.\"\nfrozen = true\n[precision]\nmode = \"bf16\"\n")
            let r = researchInProcess [ "memory"; "--config"; file ]
            Expect.equal r.ExitCode 0 r.Err
            let lines = r.Out.Split('\n') |> Array.map (fun l -> l.TrimEnd())
            let cells (l: string) = l.Split(' ', StringSplitOptions.RemoveEmptyEntries)
            let body = lines |> Array.find (fun l -> l.StartsWith "body ") |> cells
            // 784·32 + 32 frozen weights in bf16: 2 B each and nothing else.
            Expect.equal body[1..9] [| "25,120"; "0"; "predicted"; "50,240"; "0"; "0"; "0"; "0"; "50,240" |] "a frozen body holds only its 16-bit weights"
            let other = lines |> Array.find (fun l -> l.StartsWith "other ") |> cells
            // 32·10 + 10 trainable: 2 + 2 + 4 + 4 + 8 = 20 B each.
            Expect.equal other[1..9] [| "330"; "330"; "predicted"; "660"; "660"; "1,320"; "1,320"; "2,640"; "6,600" |] "the head, trained"
            Expect.exists lines (fun l -> l = "  body: not estimated") "an MLP has no activation estimate"
            Expect.stringContains r.Out "each component: allocated = predicted, byte for byte" "the verdict"
        }
        test "research memory --config on a model without components prints no breakdown" {
            let r = researchInProcess [ "memory"; "--config"; Path.Combine(repoRoot, "experiments/configs/demo-pretrain.toml") ]
            Expect.equal r.ExitCode 0 r.Err
            Expect.stringContains r.Out "total model state" "the whole-model table"
            Expect.isFalse (r.Out.Contains "by component") "one component: no breakdown"
        }
    ]
