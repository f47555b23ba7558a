/// The vision-language model kind (`[model] kind = "vlm"`): each component's output shape, the seed's three parameter
/// groups, the loss on caption tokens only, generation after an image prefix, a training step, per-component learning
/// rates and the refusals of bad configs. Tiny widths, nothing downloaded.
module Research.Tests.VlmTests

open System
open System.Collections.Generic
open Expecto
open TorchSharp
open Research.Abstractions
open Research.Core
open Research.Core.Config
open Research.Core.Data
open Research.Core.Forgetting
open Research.Core.Models
open Research.Core.Models.Kinds
open Research.Core.Optim
open Research.Core.Tasks
open Research.Core.Text
open Research.Tests.TestSupport

/// T, the caption tokens of a row (the begin id included).
let private context = 12L
let private vocab = 257
let private beginId = 256L

let private shape =
    DataShape("fashion-captions", InputKind.ImagesAndTokens, context, 10,
              NextToken = true, ImageSide = 28, Tokenizer = "bytes", Vocabulary = vocab)

let private modelContext = ModelContext(ModelKeys("vlm", 0, "", true, [||]), shape, ModelTarget(context, 10), "")

let private options (encoder: string) (lm: string) =
    VlmOptions(Encoder = encoder, LanguageModel = lm, PrefixTokens = 3, ConnectorHidden = 24,
               Resnet = ResNetOptions(ImageSide = 32),
               Gpt = GptOptions(Width = 16, Layers = 1, Heads = 2),
               Llama = LlamaOptions(Width = 16, Layers = 1, Heads = 2, Intermediate = 32))

let private create (o: VlmOptions) (seed: uint64) =
    let kind = VlmKind()
    use g = new torch.Generator(seed)
    kind.Create(kind.Resolve(o, modelContext), modelContext, g) :?> Vlm

/// Two captions: row 0 fills T, row 1 is padded after 8 tokens (pad id = begin id, target −100); both start with the
/// begin id, whose target never counts (the task shifts it away).
let private captionBatch (seed: uint64) =
    use g = new torch.Generator(seed)
    let image = torch.randn([| 2L; 1L; 28L; 28L |], generator = g)
    let ids = torch.randint(0L, 256L, [| 2L; context |], generator = g)
    ids.index_put_(torch.tensor(beginId), [| torch.TensorIndex.Colon; torch.TensorIndex.Single(0L) |]) |> ignore
    let targets = ids.clone()
    ids.index_put_(torch.tensor(beginId), [| torch.TensorIndex.Single(1L); torch.TensorIndex.Slice(8L) |]) |> ignore
    targets.index_put_(torch.tensor(Batch.IgnoreIndex), [| torch.TensorIndex.Single(1L); torch.TensorIndex.Slice(8L) |]) |> ignore
    Batch([ KeyValuePair(Batch.Image, image); KeyValuePair(Batch.InputIds, ids); KeyValuePair(Batch.Targets, targets) ])

let private named (m: torch.nn.Module) = m.named_parameters() |> Seq.map (fun struct (n, p) -> struct (n, p :> torch.Tensor)) |> Array.ofSeq
let private count (m: torch.nn.Module) = m.parameters() |> Seq.sumBy (fun p -> p.numel())

/// The task's mean loss on a batch: Σℓ / N, as a training window of one micro-batch computes it.
let private meanLoss (model: Vlm) (batch: Batch) =
    let task = CausalLmTask()
    use logits = ModelInput.Logits(model, batch)
    use sum = task.LossSum(logits, batch)
    sum.item<float32>() |> float, task.Items(batch)

/// The gradient of the mean loss Σℓ/N of a batch, accumulated into the parameters' gradients.
let private backward (model: Vlm) (batch: Batch) =
    use scope = torch.NewDisposeScope()
    let task = CausalLmTask()
    task.LossSum(ModelInput.Logits(model, batch), batch).div(torch.tensor (float32 (task.Items batch))).backward()

let private configErrors (model: string) =
    let text = sprintf "[data]\ndataset = \"fashion-mnist\"\n[model]\nkind = \"vlm\"\n%s\n" model
    try ConfigLoader.Parse(text, "bad.toml") |> ignore; []
    with :? ConfigException as e -> e.Errors |> Seq.map string |> List.ofSeq

/// Twenty labelled images (two of each class), as Fashion-MNIST's reader gives them: input [N, 784], targets [N].
let private images () =
    use g = new torch.Generator(11UL)
    new TensorDataset(torch.randn([| 20L; 784L |], generator = g), torch.arange(20L).remainder(torch.tensor 10L), 10)

let private captionOf (ids: int64[]) =
    ByteTokenizer().Decode(ids |> Array.filter (fun i -> i < 256L) |> Array.map int)

let private dataTests =
    testList "captions" [
        test "each caption is a phrasing of its own class (training: the first 8 phrasings, test: the held-out 2 only), and its word span is the class word" {
            use data = images ()
            let tokenizer = ByteTokenizer()
            for first, last in [ 0, 8; 8, 10 ] do
                use stream = Seeds.Generator(5L, "captions")
                let items = FashionCaptionSource.Items(data, tokenizer, 64, first, last, stream)
                let ids = items[Batch.InputIds]
                let targets = items[Batch.Targets]
                for i in 0 .. 19 do
                    let row = ids[int64 i].data<int64>().ToArray()
                    let at (name: string) = (items[name]).[int64 i].item<int64>()
                    let label = at TensorDataset.Labels |> int
                    Expect.equal label (i % 10) "labels are the images' classes"
                    Expect.equal row[0] beginId "a row starts with the begin id"
                    let text = captionOf row
                    let possible =
                        [ for p in first .. last - 1 do
                            for a in 0 .. FashionCaptionSource.Adjectives.Count - 1 do
                                let struct (before, word, after) = FashionCaptionSource.Caption(label, p, a)
                                yield before + " " + word + after ]
                    Expect.contains possible text $"row {i}: '{text}' is a phrasing in [{first}, {last}) of class {label}"
                    let s, e = at FashionCaptionSource.WordStart, at FashionCaptionSource.WordEnd
                    Expect.equal (captionOf row[int s .. int e - 1]) (" " + FashionCaptionSource.ClassWords[label]) "the word span"
                    let length = (tokenizer.Encode text).Length + 2
                    let counted = targets[int64 i].ne(torch.tensor Batch.IgnoreIndex).sum().item<int64>()
                    Expect.equal counted (int64 length) "targets count the caption with its begin and end ids, not the padding"
                items.DisposeTensors()
        }
        test "the same seed gives the same captions; another seed other phrasings" {
            use data = images ()
            let draw (seed: int64) =
                use stream = Seeds.Generator(seed, "captions")
                let items = FashionCaptionSource.Items(data, ByteTokenizer(), 64, 0, 8, stream)
                let ids = items[Batch.InputIds].data<int64>().ToArray()
                items.DisposeTensors()
                ids
            Expect.sequenceEqual (draw 1L) (draw 1L) "seeded"
            Expect.notEqual (draw 1L) (draw 2L) "another seed"
        }
        test "data.classes picks caption items by their labels (targets are sequences), as for Fashion-MNIST" {
            use data = images ()
            use stream = Seeds.Generator(1L, "captions")
            let items = FashionCaptionSource.Items(data, ByteTokenizer(), 64, 0, 8, stream)
            use all = new TensorDataset(items, 10)
            use first = all.WithClasses([| 0; 1; 2; 3; 4 |])
            Expect.equal first.Count 10L "two images of each of classes 0–4"
            Expect.isTrue (first.Tensors[TensorDataset.Labels].lt(torch.tensor 5L).all().item<bool>()) "only classes 0–4"
            Expect.equal (List.ofArray first.Tensors[Batch.InputIds].shape) [ 10L; 64L ] "whole caption rows"
        }
        test "a bad caption config is one line naming the key: max_tokens too few for the longest caption, a class outside 0–9" {
            let errors (data: string) =
                let text = sprintf "[data]\ndataset = \"fashion-captions\"\n%s\n[model]\nkind = \"vlm\"\nencoder = \"cnn\"\n" data
                let dir = tempDir "vlm-config"
                let file = IO.Path.Combine(dir, "bad.toml")
                IO.File.WriteAllText(file, text)
                let r = research dir [ "train"; file; "--dry-run" ]
                r.ExitCode, r.Err.Trim().Split('\n') |> List.ofArray
            let code, lines = errors "max_tokens = 16"
            Expect.notEqual code 0 "refused"
            Expect.equal lines.Length 1 (sprintf "one line: %A" lines)
            Expect.stringContains lines.Head "data.max_tokens: 16 is shorter than the longest caption row" "names the key"
            let code, lines = errors "classes = [3, 12]"
            Expect.notEqual code 0 "refused"
            Expect.stringContains (String.Join("\n", lines)) "data.classes: [3, 12] names class 12" "names the key"
        }
    ]

let tests =
    testList "vlm" [
        dataTests
        test "each component's output: encoder [B, F], connector [B, P·d], prefix [B, P, d], caption logits [B, T, V], sequence [B, P + T, V]" {
            for encoder, lm, features in [ "cnn", "gpt", 128L; "cnn", "llama", 128L; "resnet", "gpt", 512L ] do
                use model = create (options encoder lm) 1UL
                let batch = captionBatch 2UL
                use _ = torch.no_grad()
                use flat = batch[Batch.Image].flatten(1)
                use f = model.VisionEncoder.call(flat)
                Expect.equal (List.ofArray f.shape) [ 2L; features ] $"{encoder} features"
                use c = model.Connector.call(f)
                Expect.equal (List.ofArray c.shape) [ 2L; 3L * 16L ] "connector"
                use prefix = model.Prefix(batch[Batch.Image])
                Expect.equal (List.ofArray prefix.shape) [ 2L; 3L; 16L ] "prefix"
                use logits = ModelInput.Logits(model, batch)
                Expect.equal (List.ofArray logits.shape) [ 2L; context; int64 vocab ] $"{lm} caption logits"
                use full = model.SequenceLogits(batch[Batch.Image], batch[Batch.InputIds])
                Expect.equal (List.ofArray full.shape) [ 2L; 3L + context; int64 vocab ] "sequence logits"
                batch.DisposeTensors()
        }
        test "the seed's three groups: every parameter in exactly one; counts equal the component kinds' own models' counts" {
            use model = create (options "cnn" "gpt") 1UL
            let struct (trainable, frozen) = ParameterGroups.Build(named model, GroupPlan(0.01, GroupPlan.VisionLanguage))
            Expect.isEmpty frozen "nothing frozen"
            let byComponent =
                trainable |> Seq.groupBy (fun p -> p.Group.Name.Split('.')[0])
                |> Seq.map (fun (k, ps) -> k, ps |> Seq.sumBy (fun p -> p.Value.numel())) |> Map.ofSeq
            Expect.equal (Set.ofSeq byComponent.Keys) (set [ "vision_encoder"; "connector"; "language_model" ]) "no parameter falls to 'other'"
            Expect.equal (trainable.Count) (Seq.length (model.parameters())) "each parameter once"
            // The same components built by their own kinds, as [model] kind = "cnn" / "gpt" would build them.
            let imageShape = DataShape("fashion-captions", InputKind.Images, 784L, 10, ImageSide = 28)
            let textShape = DataShape("fashion-captions", InputKind.Tokens, 3L + context, vocab, NextToken = true, Tokenizer = "bytes", Vocabulary = vocab)
            use g = new torch.Generator(1UL)
            use cnn = CnnKind().Create(CnnOptions(), ModelContext(ModelKeys("cnn", 128, "", true, [||]), imageShape, ModelTarget(784L, 0), ""), g)
            use gpt = GptKind().Create(GptOptions(Width = 16, Layers = 1, Heads = 2), ModelContext(ModelKeys("gpt", 0, "", true, [||]), textShape, ModelTarget(15L, vocab), ""), g)
            Expect.equal byComponent["vision_encoder"] (count cnn) "encoder = the cnn kind's model (head of 128 as the feature layer)"
            Expect.equal byComponent["language_model"] (count gpt) "language model = the gpt kind's model"
            Expect.equal byComponent["connector"] (128L * 24L + 24L + 24L * 48L + 48L) "connector = F·h + h + h·P·d + P·d"
        }
        test "the loss ignores the prefix: Σℓ/N equals a hand-masked float64 cross-entropy over all P + T positions (1e-6 relative)" {
            use model = create (options "cnn" "gpt") 3UL
            let batch = captionBatch 4UL
            let loss, items = meanLoss model batch
            // By hand: the full sequence's logits, position i scored against token i + 1 of [prefix ; caption], with −100 on
            // the prefix and on the begin id (given, not predicted) and where the caption is padding.
            use full = model.SequenceLogits(batch[Batch.Image], batch[Batch.InputIds]).to_type(torch.float64)
            use logp = full.log_softmax(-1)
            let targets = batch[Batch.Targets]
            let p = 3
            let mutable total = 0.0
            let mutable n = 0L
            for b in 0 .. 1 do
                for i in 0 .. p + int context - 2 do
                    let next = i + 1
                    let target = if next <= p then Batch.IgnoreIndex else targets[int64 b, int64 (next - p)].item<int64>()
                    if target <> Batch.IgnoreIndex then
                        total <- total - logp[int64 b, int64 i, target].item<float>()
                        n <- n + 1L
            Expect.equal items n "N counts the caption's predicted tokens"
            Expect.equal n (11L + 7L) "row 0: 11 tokens after the begin id; row 1: 7 before the padding"
            let hand = total / float n
            Expect.isLessThan (abs (loss / float items - hand) / hand) 1e-6 $"task {loss / float items} vs hand {hand}"
            batch.DisposeTensors()
        }
        test "generation after an image prefix: greedy is deterministic, and two images fitted to two captions give back each its own" {
            use model = create (options "cnn" "gpt") 5UL
            // Two images far apart: a bright one and a dark one (on the standardised scale).
            use images = torch.tensor([| 2.0f; -2.0f |]).view(2L, 1L, 1L, 1L).expand(2L, 1L, 28L, 28L).contiguous()
            let captions = [| "a bag"; "shirt" |] |> Array.map (fun c -> Array.append [| beginId |] (c |> Seq.map int64 |> Array.ofSeq))
            use ids = torch.tensor(Array.concat captions).view(2L, 6L)
            let batch = Batch([ KeyValuePair(Batch.Image, images); KeyValuePair(Batch.InputIds, ids); KeyValuePair(Batch.Targets, ids) ])
            let struct (trainable, _) = ParameterGroups.Build(named model, GroupPlan(0.0))
            use opt = Optimizer.AdamW(trainable)
            for _ in 1 .. 100 do
                opt.ZeroGrad()
                backward model batch
                opt.Step(1e-2, false) |> ignore
            let run (i: int64) =
                use image = images.narrow(0, i, 1L)
                model.Generate(image, [| beginId |], GenerationOptions(5, Decoding.Greedy()))
            let first = run 0L
            Expect.sequenceEqual (run 0L) first "the same image gives the same tokens"
            Expect.sequenceEqual first (captions.[0].[1..]) "image 0 gives its caption"
            Expect.sequenceEqual (run 1L) (captions.[1].[1..]) "image 1 gives its own, another caption"
        }
        test "a few AdamW steps on a fixed batch lower its loss" {
            use model = create (options "cnn" "gpt") 7UL
            let batch = captionBatch 8UL
            let struct (trainable, _) = ParameterGroups.Build(named model, GroupPlan(0.0, GroupPlan.VisionLanguage))
            use opt = Optimizer.AdamW(trainable)
            let before, _ = meanLoss model batch
            for _ in 1 .. 5 do
                use scope = torch.NewDisposeScope()
                opt.ZeroGrad()
                backward model batch
                opt.Step(1e-3) |> ignore
            let after, _ = meanLoss model batch
            Expect.isLessThan after (before - 0.05) $"loss {before} → {after}"
            batch.DisposeTensors()
        }
        test "per-component learning rates: one SGD step's update is exactly −lr·multiplier·grad in each group (1e-6), and θ moves by it" {
            use model = create (options "cnn" "gpt") 9UL
            let batch = captionBatch 10UL
            let struct (trainable, _) = ParameterGroups.Build(named model, GroupPlan(0.0, GroupPlan.VisionLanguage))
            use opt = Optimizer.Sgd(trainable)
            opt.ZeroGrad()
            backward model batch
            let slots = opt.Buffer.Slots
            let before = slots |> Seq.map (fun s -> s.Parameter.detach().clone()) |> Array.ofSeq
            let grads = opt.Views(opt.MasterGrad) |> Seq.map (fun g -> g.clone()) |> Array.ofSeq
            let lr = 2e-3
            use delta = opt.Step(lr)
            let updates = opt.Views(delta) |> Array.ofSeq
            let multipliers = slots |> Seq.map (fun s -> s.Name.Split('.')[0], s.Group.LrMultiplier) |> Seq.distinct |> Map.ofSeq
            Expect.equal multipliers (Map.ofList [ "vision_encoder", 0.1; "connector", 10.0; "language_model", 1.0 ]) "the seed's multipliers"
            for i in 0 .. slots.Count - 1 do
                let m = slots[i].Group.LrMultiplier
                use expected = grads[i].to_type(torch.float64).mul(torch.tensor (-lr * m))
                use update = updates[i].to_type(torch.float64)
                let error = update.sub(expected).abs().max().item<float>()
                let scale = max 1e-30 (expected.abs().max().item<float>())
                Expect.isLessThan (error / scale) 1e-6 $"{slots[i].Name}: Δθ = −{lr * m}·g"
                // θ + Δθ in float32: the parameter moved by Δθ up to one rounding of θ.
                use moved = slots[i].Parameter.detach().sub(before[i]).to_type(torch.float64)
                let rounding = before[i].abs().max().item<float32>() |> float |> (*) 1.2e-7
                Expect.isLessThanOrEqual (moved.sub(update).abs().max().item<float>()) (rounding + 1e-30) $"{slots[i].Name} moved by Δθ"
            for t in Array.append before grads do t.Dispose()
            batch.DisposeTensors()
        }
        test "the Fisher runs on the VLM unchanged (its forward hooks' captures outlive the model's call): every parameter of the three components gets a finite, non-negative diagonal" {
            use model = create (options "cnn" "gpt") 12UL
            let batch = captionBatch 13UL
            for kind in [ FisherKind.Empirical; FisherKind.Sampled ] do
                use g = new torch.Generator(14UL)
                use fisher = Fisher.Compute(model, [ batch ], kind, g, task = CausalLmTask())
                let names = model.named_parameters() |> Seq.map (fun struct (n, _) -> n) |> Set.ofSeq
                Expect.equal (Set.ofSeq fisher.Diagonal.Keys) names $"{kind}: every parameter"
                for KeyValue(name, d) in fisher.Diagonal do
                    Expect.isTrue (d.isfinite().all().item<bool>() && d.ge(torch.tensor 0.0f).all().item<bool>()) $"{kind} {name}: finite, ≥ 0"
                for prefix in [ "vision_encoder."; "connector."; "language_model." ] do
                    let total = fisher.Diagonal |> Seq.filter (fun kv -> kv.Key.StartsWith prefix) |> Seq.sumBy (fun kv -> kv.Value.sum().item<float32>() |> float)
                    Expect.isGreaterThan total 0.0 $"{kind}: {prefix} has curvature"
            batch.DisposeTensors()
        }
        test "bad configs are refused in one line naming the key: unknown encoder, unknown language model, P = 0, data without captions" {
            for model, key in [ "encoder = \"vit\"", "model.encoder"
                                "language_model = \"bert\"", "model.language_model"
                                "prefix_tokens = 0", "model.prefix_tokens" ] do
                let errors = configErrors model
                Expect.equal errors.Length 1 $"one error for {model}: {errors}"
                Expect.stringContains errors.Head $"bad.toml: {key}: " "names the file and the key"
                Expect.isFalse (errors.Head.Contains('\n')) "one line"
            let images = DataShape("fashion-mnist", InputKind.Images, 784L, 10, ImageSide = 28)
            let problems = VlmKind().Check(VlmOptions(), ModelKeys("vlm", 0, "", true, [||]), images) |> List.ofSeq
            Expect.equal (problems |> List.map (fun e -> e.Key)) [ "model.kind" ] "fashion-mnist has no captions"
            let tooShort = VlmOptions(Gpt = GptOptions(MaxPositions = 8))
            let problems = VlmKind().Check(tooShort, ModelKeys("vlm", 0, "", true, [||]), shape) |> List.ofSeq
            Expect.equal (problems |> List.map (fun e -> e.Key)) [ "model.gpt.max_positions" ] "the gpt's positions must cover P + T, under its own sub-table"
        }
    ]
