/// The Llama-family kind: logits against an independent float64 Python implementation (tests/Fixtures/llama-reference:
/// a Llama with grouped-query attention and an untied lm_head, a Qwen2 with q/k/v biases and tied embeddings), Hugging
/// Face's layout and config.json both ways, rotary positions, RMSNorm's dtypes, and the refusals of files it cannot read.
module Research.Tests.LlamaTests

open System
open System.IO
open Expecto
open TorchSharp
open Research.Abstractions
open Research.Core.Models
open Research.Core.Models.Kinds
open Research.Tests.TestSupport

type private Tensor = torch.Tensor

let private referenceDir = Path.Combine(repoRoot, "tests", "Fixtures", "llama-reference")

let private named (m: torch.nn.Module) = [ for struct (n, p) in m.named_parameters() -> n, (p :> Tensor) ]

let private bitwiseEqual (a: Tensor) (b: Tensor) = a.shape = b.shape && a.dtype = b.dtype && torch.eq(a, b).all().item<bool>()

let private maxAbs (t: Tensor) = t.abs().max().to_type(torch.float64).item<float>()

let private readFile (path: string) = TorchSharp.PyBridge.Safetensors.LoadStateDict(path)

/// Text data of the reference's context and vocabulary (what a causal-lm run on a 300-id tokenizer looks like).
let private textShape (context: int64) (vocabulary: int) =
    DataShape("fortunes", InputKind.Tokens, context, vocabulary, NextToken = true, Vocabulary = vocabulary, Tokenizer = "test")

let private kind = LlamaKind() :> ModelKind

/// The context the kind builds a model in, init_from naming <paramref name="path"/> (empty: none), strict.
let private contextOf (path: string) (shape: DataShape) =
    ModelContext(ModelKeys("llama", 0, path, true, Array.empty<string>), shape, ModelTarget(shape.Features, shape.Classes), path, Weights = WeightFiles.Instance)

/// A reference variant's model built the way a run builds it: the kind resolves config.json beside init_from, creates the
/// model, moves it to <paramref name="dtype"/> and loads the file.
let private loadVariant (variant: string) (dtype: torch.ScalarType) =
    let folder = Path.Combine(referenceDir, variant)
    let context = contextOf folder (textShape 32L 300)
    let options = kind.Resolve(LlamaOptions(), context)
    let model = kind.Create(options, context, new torch.Generator(1UL)) :?> Llama
    model.``to``(dtype) |> ignore
    let summary = kind.Load(model, options, context)
    model, summary

let private variants = [ "llama"; "qwen2" ]

let private referenceTests =
    testList "reference" [
        for variant in variants do
            test (sprintf "%s: logits equal the independent float64 Python reference's (float32 within 1e-5·max|ref|, float64 within 1e-10·max|ref|)" variant) {
                let expected = readFile (Path.Combine(referenceDir, variant, "expected.safetensors"))
                let ids, reference = expected["input_ids"], expected["logits"]
                let scale = maxAbs reference
                Expect.isGreaterThan scale 1.0 "the reference logits are not near zero"
                for dtype, tolerance in [ torch.float32, 1e-5; torch.float64, 1e-10 ] do
                    let model, summary = loadVariant variant dtype
                    use model = model
                    Expect.stringContains summary "(Llama layout): every body tensor loaded" "loaded through the kind's layout"
                    use _ = torch.NewDisposeScope()
                    use _ = torch.no_grad()
                    let logits = model.forward ids
                    Expect.equal logits.dtype dtype "logits in the model's dtype"
                    let error = maxAbs (logits.to_type(torch.float64) - reference)
                    printfn "llama reference %s %A: max |ours − reference| = %.3g, max |reference| = %.3g, relative %.3g" variant dtype error scale (error / scale)
                    Expect.isLessThanOrEqual error (tolerance * scale) (sprintf "%A: max |ours − reference| = %.3g, max |reference| = %.3g" dtype error scale)
                for t in expected.Values do t.Dispose()
            }

        test "config.json decides the shape: the Llama variant has 8 heads over 2 key/value heads and an lm_head; the Qwen2 variant q/k/v biases (none on o_proj) and no lm_head" {
            let llama = LlamaConfig.Read(Path.Combine(referenceDir, "llama", "config.json"))
            Expect.equal (llama.Heads, llama.KvHeads, llama.HeadWidth, llama.TieWordEmbeddings, llama.QkvBias, llama.RopeTheta) (8L, 2L, 8L, false, false, 500.0) "llama"
            let qwen2 = LlamaConfig.Read(Path.Combine(referenceDir, "qwen2", "config.json"))
            Expect.equal (qwen2.Heads, qwen2.KvHeads, qwen2.TieWordEmbeddings, qwen2.QkvBias, qwen2.OutputBias, qwen2.RmsNormEps) (6L, 3L, true, true, false, 1e-6) "qwen2"
            for variant in variants do
                let model, _ = loadVariant variant torch.float32
                use model = model
                let stored = readFile (Path.Combine(referenceDir, variant, "model.safetensors"))
                let ps = named model
                Expect.equal (set [ for n, _ in ps -> n ]) (set stored.Keys) (sprintf "%s: the parameter names are the file's keys" variant)
                for n, p in ps do Expect.sequenceEqual p.shape stored[n].shape (sprintf "%s: %s's shape" variant n)
                Expect.equal (ps |> List.sumBy (fun (_, p) -> p.numel())) model.Config.ParameterCount (sprintf "%s: ParameterCount is the built model's" variant)
                for t in stored.Values do t.Dispose()
        }
    ]

let private layoutTests =
    testList "layout" [
        test "the kind's Save writes the file's tensors bitwise and a config.json that reads back to the same config; that folder loads back bitwise (float32 and float64)" {
            for variant in variants do
                let source = readFile (Path.Combine(referenceDir, variant, "model.safetensors"))
                let model, _ = loadVariant variant torch.float32
                use model = model
                let folder = tempDir "llama-save"
                let path = Path.Combine(folder, "model.safetensors")
                let context = contextOf "" (textShape 32L 300)
                kind.Save(model, LlamaOptions(), context, path)
                let written = readFile path
                Expect.equal (set written.Keys) (set source.Keys) (sprintf "%s: the same keys (a tied model writes no lm_head.weight)" variant)
                for k in source.Keys do Expect.isTrue (bitwiseEqual written[k] source[k]) (sprintf "%s: %s bitwise" variant k)
                Expect.equal (LlamaConfig.Read(Path.Combine(folder, "config.json"))) model.Config (sprintf "%s: config.json reads back" variant)
                for dtype in [ torch.float32; torch.float64 ] do
                    let back, _ = loadVariant variant dtype
                    use back = back
                    LlamaLayout.Load(back, folder)
                    let original, _ = loadVariant variant dtype
                    use original = original
                    for (n, a), (_, b) in List.zip (named original) (named back) do
                        Expect.isTrue (bitwiseEqual a b) (sprintf "%s %A: %s read back bitwise" variant dtype n)
                for t in Seq.append source.Values written.Values do t.Dispose()
        }

        test "a random model's folder from Save is read by the kind through init_from (config.json resolved, strict load), bitwise" {
            let shape = textShape 16L 50
            let options = LlamaOptions(Width = 32, Layers = 2, Heads = 4, KvHeads = 2, Intermediate = 48, QkvBias = true, TieEmbeddings = true, RopeTheta = 1000.0)
            let fresh = contextOf "" shape
            use a = kind.Create(kind.Resolve(options, fresh), fresh, new torch.Generator(3UL))
            let folder = tempDir "llama-random"
            kind.Save(a, options, fresh, Path.Combine(folder, "model.safetensors"))
            let context = contextOf folder shape
            let resolved = kind.Resolve(LlamaOptions(), context)
            use b = kind.Create(resolved, context, new torch.Generator(4UL))
            kind.Load(b, resolved, context) |> ignore
            Expect.equal (b :?> Llama).Config (a :?> Llama).Config "the same shape from config.json"
            for (n, pa), (_, pb) in List.zip (named a) (named b) do Expect.isTrue (bitwiseEqual pa pb) n
        }

        test "refused, each naming the file and key: a [model] key the config.json contradicts, rope_scaling, another activation or model type, a missing tensor, an untied lm_head on a tied model" {
            let folder = tempDir "llama-bad"
            let copy (variant: string) =
                for f in [ "config.json"; "model.safetensors" ] do File.Copy(Path.Combine(referenceDir, variant, f), Path.Combine(folder, f), true)
            let config () = Path.Combine(folder, "config.json")
            let refusal (f: unit -> unit) =
                try f (); failtest "accepted" with :? InvalidDataException as e -> e.Message
            copy "llama"
            let resolve (o: LlamaOptions) () = kind.Resolve(o, contextOf folder (textShape 32L 300)) |> ignore
            Expect.stringContains (refusal (resolve (LlamaOptions(Width = 32)))) (sprintf "model.width = 32, and %s says 64" (config ())) "a contradicted key"
            Expect.stringContains (refusal (resolve (LlamaOptions(KvHeads = 8)))) "model.kv_heads = 8" "a contradicted key/value head count"
            resolve (LlamaOptions(Width = 64, KvHeads = 2)) ()
            let text = File.ReadAllText(config ())
            let edit (f: string -> string) = File.WriteAllText(config (), f text)
            for change, message in
                [ (fun (s: string) -> s.Replace("\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"")), "hidden_act \"gelu\""
                  (fun s -> s.Replace("\"model_type\": \"llama\"", "\"model_type\": \"gpt2\"")), "model_type \"gpt2\" is not one this kind reads"
                  (fun s -> s.Replace("\"rope_theta\": 500.0", "\"rope_theta\": 500.0, \"rope_scaling\": {\"rope_type\": \"llama3\"}")), "rope_scaling"
                  (fun s -> s.Replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3")), "num_key_value_heads 3 does not divide num_attention_heads 8"
                  (fun s -> s.Replace("\"hidden_size\": 64,", "")), "no \"hidden_size\"" ] do
                edit change
                let m = refusal (resolve (LlamaOptions()))
                Expect.stringContains m (config ()) "names the file"
                Expect.stringContains m message message
            File.WriteAllText(config (), text)
            let weights = Path.Combine(folder, "model.safetensors")
            let good = readFile weights |> Seq.map (fun kv -> kv.Key, kv.Value) |> List.ofSeq
            let write (tensors: (string * Tensor) list) = Research.Core.Checkpoints.WeightFile.Save(tensors |> Seq.map (fun (n, t) -> struct (n, t)), weights)
            let load () =
                let context = contextOf folder (textShape 32L 300)
                let options = kind.Resolve(LlamaOptions(), context)
                use model = kind.Create(options, context, new torch.Generator(1UL))
                kind.Load(model, options, context) |> ignore
            let q = "model.layers.1.self_attn.k_proj.weight"
            write (good |> List.filter (fun (k, _) -> k <> q))
            Expect.stringContains (refusal load) (sprintf "%s: no tensor '%s' (expected [16, 64]" weights q) "a missing tensor"
            write (good |> List.map (fun (k, v) -> k, (if k = q then torch.zeros(64L, 64L) else v)))
            Expect.stringContains (refusal load) (sprintf "tensor '%s' is [64, 64], expected [16, 64]" q) "a key/value projection of full width"
            write (good @ [ "model.layers.2.input_layernorm.weight", torch.ones(64L) ])
            Expect.stringContains (refusal load) "unexpected tensor 'model.layers.2.input_layernorm.weight'" "a third layer"
            write (good @ [ "model.layers.0.self_attn.rotary_emb.inv_freq", torch.ones(4L) ])
            load ()
            copy "qwen2"
            let tied = readFile weights |> Seq.map (fun kv -> kv.Key, kv.Value) |> List.ofSeq
            let embed = tied |> List.find (fun (k, _) -> k = LlamaLayout.Embedding) |> snd
            write (tied @ [ LlamaLayout.LmHead, embed.clone() ])
            load ()
            write (tied @ [ LlamaLayout.LmHead, embed.mul(2.0f.ToScalar()) ])
            Expect.stringContains (refusal load) "tensor 'lm_head.weight' differs from 'model.embed_tokens.weight', and this model ties them" "an untied head on a tied model"
        }
    ]

let private mechanismTests =
    testList "mechanisms" [
        testPropertyWithConfig { propConfig with maxTest = 30 } "rotary positions: the score of q at p and k at p' depends on p − p' only (float64, 1e-12·|q||k|)"
        <| fun (seed: int) (shift: byte) ->
            use _ = torch.NewDisposeScope()
            let g = new torch.Generator(uint64 (abs seed))
            let h, t, s = 16L, 24L, int64 (shift % 40uy)
            let q = torch.randn([| 1L; 1L; 1L; h |], dtype = torch.float64, generator = g)
            let k = torch.randn([| 1L; 1L; 1L; h |], dtype = torch.float64, generator = g)
            let cos, sin = Rotary.CosSin(t + s, h, 10000.0, torch.float64, torch.CPU).ToTuple()
            let score (p: int64) (p2: int64) =
                let rq = Rotary.Apply(q, cos.narrow(0L, p, 1L), sin.narrow(0L, p, 1L))
                let rk = Rotary.Apply(k, cos.narrow(0L, p2, 1L), sin.narrow(0L, p2, 1L))
                rq.mul(rk).sum().item<float>()
            let bound = 1e-12 * (q.norm().item<float>() * k.norm().item<float>())
            for p, p2 in [ 5L, 2L; 11L, 0L; 3L, 3L; 0L, 7L ] do
                Expect.floatClose { absolute = bound; relative = 0.0 } (score (p + s) (p2 + s)) (score p p2) (sprintf "positions %d, %d shifted by %d" p p2 s)
            Expect.isGreaterThan (abs (score 5L 2L - score 2L 5L)) 1e-6 "the sign of the offset matters (the rotation is not the identity)"

        test "RMSNorm follows Hugging Face's dtypes: bfloat16 input normalised in float32, cast back, then scaled (bitwise); float64 stays float64 (1e-15)" {
            use _ = torch.NewDisposeScope()
            use norm = new RmsNorm(32L, 1e-5)
            let g = new torch.Generator(9UL)
            use _ = torch.no_grad()
            for struct (_, p) in norm.named_parameters() do p.copy_(torch.randn([| 32L |], generator = g).mul(0.3f.ToScalar()).add(1.0f.ToScalar())) |> ignore
            let x = torch.randn([| 3L; 5L; 32L |], generator = g).mul(4.0f.ToScalar())
            let byHand (x: Tensor) = x.div(x.pow(2.0f.ToScalar()).mean([| -1L |], keepdim = true).add(1e-5.ToScalar()).sqrt())
            norm.``to``(torch.bfloat16) |> ignore
            let xb = x.to_type(torch.bfloat16)
            let weight = (named norm |> List.head |> snd)
            Expect.equal weight.dtype torch.bfloat16 "the gain in bfloat16"
            let expected = weight.to_type(torch.bfloat16).mul(byHand(xb.to_type(torch.float32)).to_type(torch.bfloat16))
            Expect.isTrue (bitwiseEqual (norm.forward xb) expected) "bfloat16, as LlamaRMSNorm"
            norm.``to``(torch.float64) |> ignore
            let x64 = x.to_type(torch.float64)
            let w64 = (named norm |> List.head |> snd)
            Expect.isLessThanOrEqual (maxAbs (norm.forward x64 - w64.mul(byHand x64))) 1e-15 "float64 not narrowed"
        }

        testPropertyWithConfig { propConfig with maxTest = 20 } "causality: changing the tokens after position t never changes the logits at positions ≤ t (bitwise)"
        <| fun (seed: int) (cut: byte) ->
            let config = LlamaConfig(40L, 32L, 48L, 2L, 4L, 2L, MaxPositions = 12L, QkvBias = true)
            use model = Llama.Create(config, new torch.Generator(uint64 (abs seed)))
            use _ = torch.NewDisposeScope()
            let t = int64 (cut % 12uy)
            let a = torch.randint(0L, 40L, [| 2L; 12L |], dtype = torch.int64, generator = new torch.Generator(uint64 (abs seed) + 1UL))
            let b = a.clone()
            if t + 1L < 12L then b.narrow(1L, t + 1L, 11L - t).copy_(torch.randint(0L, 40L, [| 2L; 11L - t |], dtype = torch.int64)) |> ignore
            Expect.isTrue (bitwiseEqual ((model.forward a).narrow(1L, 0L, t + 1L)) ((model.forward b).narrow(1L, 0L, t + 1L))) (sprintf "positions ≤ %d" t)

        test "a classifier (classify data) has a head and no lm_head; with right padding its logits are the unpadded text's (the last real token's state, 1e-6)" {
            let shape = DataShape("fortunes", InputKind.Tokens, 10L, 3, Vocabulary = 40, Tokenizer = "test")
            let context = contextOf "" shape
            let options = LlamaOptions(Width = 32, Layers = 2, Heads = 4, KvHeads = 1, Intermediate = 48)
            use model = kind.Create(options, context, new torch.Generator(8UL))
            let names = [ for n, _ in named model -> n ]
            Expect.contains names "head.weight" "a head"
            Expect.isFalse (names |> List.exists (fun n -> n.StartsWith "lm_head")) "no lm_head"
            Expect.equal (kind.Head(options, context) |> List.ofSeq) [ "head" ] "the kind names it"
            use _ = torch.NewDisposeScope()
            let ids = torch.randint(1L, 40L, [| 2L; 10L |], dtype = torch.int64, generator = new torch.Generator(9UL))
            let mask = torch.ones([| 2L; 10L |], dtype = torch.int64)
            mask[1L].narrow(0L, 6L, 4L).zero_() |> ignore
            let padded = ids.clone()
            padded[1L].narrow(0L, 6L, 4L).zero_() |> ignore
            let batch = Batch([ Collections.Generic.KeyValuePair(Batch.InputIds, padded); Collections.Generic.KeyValuePair(Batch.AttentionMask, mask) ])
            let logits = (model :?> Llama).Logits batch
            Expect.sequenceEqual logits.shape [| 2L; 3L |] "[B, classes]"
            let alone = model.forward(ids[1L].narrow(0L, 0L, 6L).unsqueeze(0L))
            Expect.isLessThanOrEqual (maxAbs (logits[1L] - alone[0L])) 1e-6 "row 1: its first 6 tokens alone"
            Expect.isLessThanOrEqual (maxAbs (logits[0L] - model.forward(ids[0L].unsqueeze(0L))[0L])) 1e-6 "row 0: unpadded"
        }

        test "a random model from [model] keys: defaults d 256, 4 layers, 4 heads, SwiGLU 8d/3 rounded up to 32 (704), positions from data.context; the same seed gives the same model" {
            let shape = textShape 64L 257
            let options = LlamaOptions()
            let context = contextOf "" shape
            let config = options.ConfigFor shape
            Expect.equal (config.Hidden, config.Layers, config.Heads, config.KvHeads, config.Intermediate, config.MaxPositions, config.Vocab) (256L, 4L, 4L, 4L, 704L, 64L, 257L) "defaults"
            use a = kind.Create(options, context, new torch.Generator(5UL))
            use b = kind.Create(options, context, new torch.Generator(5UL))
            for (n, pa), (_, pb) in List.zip (named a) (named b) do Expect.isTrue (bitwiseEqual pa pb) n
            Expect.isEmpty (kind.Check(options, context.Model, shape)) "no problems"
            Expect.exists (kind.Check(LlamaOptions(Heads = 4, KvHeads = 3), context.Model, shape)) (fun e -> e.Key = "model.kv_heads" && e.Message.Contains "num_key_value_heads 3 does not divide") "3 key/value heads for 4, under model.kv_heads"
            Expect.exists (kind.Check(LlamaOptions(MaxPositions = 32), context.Model, shape)) (fun e -> e.Key = "model.max_positions") "fewer positions than the context"
        }
    ]

/// Hugging Face's config.json of three published models, shapes as they publish them (sizes only), and the parameter
/// counts their model cards and `num_parameters()` give.
let private publishedShapes =
    [ "Llama-2-7B", 6_738_415_616L, """{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "max_position_embeddings": 4096, "tie_word_embeddings": false, "vocab_size": 32000, "hidden_act": "silu", "rope_scaling": null}"""
      "Mistral-7B-v0.1", 7_241_732_096L, """{"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "max_position_embeddings": 32768, "sliding_window": 4096, "tie_word_embeddings": false, "vocab_size": 32000, "hidden_act": "silu"}"""
      "Qwen2-0.5B", 494_032_768L, """{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "max_position_embeddings": 131072, "sliding_window": 131072, "use_sliding_window": false, "tie_word_embeddings": true, "vocab_size": 151936, "hidden_act": "silu"}""" ]

let private publishedTests =
    testList "published shapes" [
        test "config.json of Llama-2-7B, Mistral-7B and Qwen2-0.5B read to their published parameter counts (6,738,415,616; 7,241,732,096; 494,032,768)" {
            let dir = tempDir "llama-shapes"
            for name, count, json in publishedShapes do
                let file = Path.Combine(dir, name + ".json")
                File.WriteAllText(file, json)
                let c = LlamaConfig.Read file
                Expect.equal c.ParameterCount count (sprintf "%s: %O" name c)
            let qwen = LlamaConfig.Read(Path.Combine(dir, "Qwen2-0.5B.json"))
            Expect.equal (qwen.QkvBias, qwen.OutputBias, qwen.TieWordEmbeddings, qwen.SlidingWindow) (true, false, true, 0L) "Qwen2: biases on q/k/v, tied, window off"
            let mistral = LlamaConfig.Read(Path.Combine(dir, "Mistral-7B-v0.1.json"))
            Expect.equal (mistral.KvHeads, mistral.SlidingWindow) (8L, 4096L) "Mistral: 8 key/value heads, window 4096"
        }
    ]

let private llamaConfig (dir: string) =
    let path = Path.Combine(dir, "llama.toml")
    File.WriteAllText(path, (File.ReadAllText(fortunesGptConfig dir "")).Replace("kind = \"gpt\"\nwidth = 64\nlayers = 2\nheads = 2", "kind = \"llama\"\nwidth = 64\nlayers = 2\nheads = 4\nkv_heads = 2\nintermediate = 160").Replace("name = \"gpt\"", "name = \"llama\""))
    path

let private runTests =
    testList "run" [
        test "[model] kind = \"llama\" trains on English fortunes (the loss falls by 0.5 nats in 30 steps), generate is greedy-deterministic, export writes Hugging Face's layout that evaluates as the checkpoint, memory --config counts its parameters" {
            let dir = tempDir "llama-run"
            let config = llamaConfig dir
            Expect.stringContains (File.ReadAllText config) "kind = \"llama\"" "the config names the kind"
            let r = research dir [ "train"; config ]
            Expect.equal r.ExitCode 0 r.Err
            let runDir = onlyRunDir dir
            let losses = Research.Tests.TrainingTests.storeRows runDir "SELECT value FROM metrics WHERE key = 'train_loss' ORDER BY step" |> List.map (fun row -> Convert.ToDouble row[0])
            Expect.isLessThan (List.last losses) (List.head losses - 0.5) "the loss falls by more than 0.5 nats per token"
            let greedy () = research dir [ "generate"; runDir; "--prompt"; "Life is"; "--max-tokens"; "30"; "--greedy" ]
            let g1, g2 = greedy (), greedy ()
            Expect.equal g1.ExitCode 0 g1.Err
            Expect.isTrue (g1.Out.StartsWith "Life is") g1.Out
            Expect.equal g1.Out g2.Out "greedy decoding is deterministic"
            Expect.stringContains g1.Err "llama d 64, 2 layers, 4 heads (2 key/value)" "the model generating"
            let exported = Path.Combine(dir, "hf", "model.safetensors")
            let e = research dir [ "export"; runDir; "-o"; exported ]
            Expect.equal e.ExitCode 0 e.Err
            Expect.contains (Research.Core.Checkpoints.SafetensorsCheck.Names exported) "model.layers.1.self_attn.k_proj.weight" "Hugging Face's names"
            let hf = LlamaConfig.Read(Path.Combine(dir, "hf", "config.json"))
            Expect.equal (hf.Hidden, hf.Layers, hf.Heads, hf.KvHeads, hf.Intermediate, hf.Vocab) (64L, 2L, 4L, 2L, 160L, 257L) "config.json beside it"
            let final = Path.Combine(runDir, "checkpoints", "final")
            let evalOurs = research dir [ "eval"; final ]
            let evalExported = research dir [ "eval"; final; "--set"; sprintf "model.init_from=\"%s\"" (Path.Combine(dir, "hf")) ]
            Expect.equal evalOurs.ExitCode 0 evalOurs.Err
            Expect.equal evalExported.ExitCode 0 evalExported.Err
            Expect.equal evalExported.Out.[evalExported.Out.IndexOf("  val")..] evalOurs.Out.[evalOurs.Out.IndexOf("  val")..] "the exported folder evaluates as the checkpoint"
            let m = research dir [ "memory"; "--config"; config ]
            Expect.equal m.ExitCode 0 m.Err
            Expect.stringContains m.Out (sprintf "llama with %s parameters" (hf.ParameterCount.ToString("N0", Globalization.CultureInfo.InvariantCulture))) "the parameters of the model the config builds"
            Expect.stringContains m.Out "estimated for 2 layers of width 64" "its activation shape"
        }
    ]

let tests = testList "llama" [ referenceTests; layoutTests; mechanismTests; publishedTests; runTests ]
