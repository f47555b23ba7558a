/// The GPT-2-layout decoder: shape and names, causality, tied embedding, fused attention against the written-out
/// formula, logits against an independent Python GPT-2 (tests/Fixtures/gpt2-reference), Hugging Face's layout both ways,
/// and generation. Every model is built from an explicit generator.
module Research.Tests.GptTests

open System
open System.IO
open Expecto
open TorchSharp
open Research.Abstractions
open Research.Core.Checkpoints
open Research.Core.Models
open Research.Tests.TestSupport

type private Tensor = torch.Tensor

/// A GPT small enough for a test to build and run in milliseconds.
let private small = GptShape(Vocab = 40L, MaxLen = 12L, Width = 16L, Heads = 4L, Layers = 2L)

let private build (shape: GptShape) (seed: int) = Gpt.Create(shape, new torch.Generator(uint64 seed))

let private build64 (shape: GptShape) (seed: int) =
    let m = build shape seed
    m.``to``(torch.float64) |> ignore
    m

let private named (m: torch.nn.Module) = [ for struct (n, p) in m.named_parameters() -> n, (p :> Tensor) ]

let private param (m: torch.nn.Module) (name: string) = named m |> List.find (fun (n, _) -> n = name) |> snd

let private child (m: torch.nn.Module) (name: string) = m.named_modules() |> Seq.pick (fun struct (n, c) -> if n = name then Some c else None)

let private bitwiseEqual (a: Tensor) (b: Tensor) = a.shape = b.shape && a.dtype = b.dtype && torch.eq(a, b).all().item<bool>()

let private maxAbs (t: Tensor) = t.abs().max().to_type(torch.float64).item<float>()

let private tokens (vocab: int64) (n: int64) (length: int64) (seed: int) =
    torch.randint(0L, vocab, [| n; length |], dtype = torch.int64, generator = new torch.Generator(uint64 seed))

let private referenceDir = Path.Combine(repoRoot, "tests", "Fixtures", "gpt2-reference")

/// The Python reference's shape (make.py: V=300, T_max=32, d=64, H=4, L=2).
let private referenceShape = GptShape(Vocab = 300L, MaxLen = 32L, Width = 64L, Heads = 4L, Layers = 2L)

/// Writes named tensors as a safetensors file in a fresh folder; returns its path.
let private writeFile (tensors: (string * Tensor) list) =
    let path = Path.Combine(tempDir "gpt", "model.safetensors")
    WeightFile.Save(tensors |> Seq.map (fun (n, t) -> struct (n, t)), path)
    path

/// The tensors of a safetensors file by name.
let private readFile (path: string) = TorchSharp.PyBridge.Safetensors.LoadStateDict(path)

let private refusal (model: Gpt) (path: string) =
    try Gpt2Layout.Load(model, path); failtest "the file was loaded"
    with :? InvalidDataException as e -> e.Message

let private shapeTests =
    testList "shape" [
        test "GptShape's tensor and parameter counts equal the built models'; GPT-2 small has 124,439,808 parameters" {
            for shape in [ small; referenceShape; GptShape(Vocab = 7L, MaxLen = 3L, Width = 12L, Heads = 3L, Layers = 5L) ] do
                use model = build shape 1
                let ps = named model
                Expect.equal (int64 ps.Length) shape.TensorCount (sprintf "tensor count of %A" shape)
                Expect.equal (ps |> List.sumBy (fun (_, p) -> p.numel())) shape.ParameterCount (sprintf "parameter count of %A" shape)
            Expect.equal GptShape.Gpt2Small.ParameterCount 124_439_808L "GPT-2 small (Hugging Face's gpt2: 124,439,808)"
        }

        test "parameter names and shapes are GPT-2's without 'transformer.', weights [out, in]; no separate lm_head" {
            use model = build small 1
            let v, t, d = small.Vocab, small.MaxLen, small.Width
            let block i =
                [ "ln_1.weight", [ d ]; "ln_1.bias", [ d ]
                  "attn.c_attn.weight", [ 3L * d; d ]; "attn.c_attn.bias", [ 3L * d ]
                  "attn.c_proj.weight", [ d; d ]; "attn.c_proj.bias", [ d ]
                  "ln_2.weight", [ d ]; "ln_2.bias", [ d ]
                  "mlp.c_fc.weight", [ 4L * d; d ]; "mlp.c_fc.bias", [ 4L * d ]
                  "mlp.c_proj.weight", [ d; 4L * d ]; "mlp.c_proj.bias", [ d ] ]
                |> List.map (fun (n, s) -> sprintf "h.%d.%s" i n, s)
            let expected = [ "wte.weight", [ v; d ]; "wpe.weight", [ t; d ] ] @ block 0 @ block 1 @ [ "ln_f.weight", [ d ]; "ln_f.bias", [ d ] ]
            Expect.sequenceEqual [ for n, p in named model -> n, List.ofArray p.shape ] expected "names and shapes in registration order"
            Expect.sequenceEqual (model.state_dict().Keys |> List.ofSeq) (List.map fst expected) "the state dict holds the parameters only"
        }

        test "a width not divisible by the heads, and a sequence longer than T_max, are refused" {
            Expect.throwsT<ArgumentException> (fun () -> new Gpt(GptShape(10L, 4L, 10L, 4L, 1L)) |> ignore) "width 10, 4 heads"
            use model = build small 1
            for length in [ 1L; 5L; small.MaxLen ] do
                use _ = torch.NewDisposeScope()
                Expect.sequenceEqual (model.forward(tokens small.Vocab 3L length 2).shape) [| 3L; length; small.Vocab |] (sprintf "logits for T = %d" length)
            Expect.throwsT<ArgumentException> (fun () -> model.forward(tokens small.Vocab 1L (small.MaxLen + 1L) 2) |> ignore) "T_max + 1 tokens"
        }

        test "the same generator seed gives bitwise-equal models, whatever the process-global RNG draws in between" {
            use a = build small 7
            torch.rand([| 1000L |]).Dispose()
            use b = build small 7
            use c = build small 8
            for (n, pa), (_, pb) in List.zip (named a) (named b) do
                Expect.isTrue (bitwiseEqual pa pb) (sprintf "%s equal under the same seed" n)
            Expect.isFalse (List.forall2 (fun (_, x) (_, y) -> bitwiseEqual x y) (named a) (named c)) "another seed gives another model"
        }

        test "initialisation is GPT-2's: weights N(0, 0.02²), residual projections N(0, (0.02/√(2L))²), biases 0, LayerNorm 1 and 0" {
            let shape = GptShape(Vocab = 512L, MaxLen = 128L, Width = 128L, Heads = 4L, Layers = 4L)
            use model = build shape 3
            let residual = 0.02 / sqrt (2.0 * float shape.Layers)
            for n, p in named model do
                use _ = torch.NewDisposeScope()
                if n.Contains "ln_" then
                    let value = if n.EndsWith ".weight" then 1.0f else 0.0f
                    Expect.isTrue (torch.eq(p, torch.tensor value).all().item<bool>()) (sprintf "%s is %g" n value)
                elif n.EndsWith ".bias" then
                    Expect.equal (maxAbs p) 0.0 (sprintf "%s is zero" n)
                else
                    let std = p.std().item<float32>() |> float
                    let mean = p.mean().item<float32>() |> float
                    let target = if n.EndsWith "c_proj.weight" then residual else 0.02
                    // ≥ 16,384 draws: the sample standard deviation is within 2% of σ with overwhelming probability.
                    Expect.floatClose { absolute = 0.0; relative = 0.02 } std target (sprintf "%s: standard deviation" n)
                    Expect.isLessThan (abs mean) (0.05 * target) (sprintf "%s: mean near 0" n)
        }
    ]

let private forwardTests =
    testList "forward" [
        testPropertyWithConfig { propConfig with maxTest = 40 } "causality: changing the tokens after position t never changes the logits at positions ≤ t (bitwise, float32 and float64)"
        <| fun (seed: int) (cut: int) ->
            let t = int64 (abs (cut % int small.MaxLen))
            for model in [ build small 5; build64 small 5 ] do
                use model = model
                use _ = torch.NewDisposeScope()
                let a = tokens small.Vocab 2L small.MaxLen seed
                let b = a.clone()
                if t + 1L < small.MaxLen then
                    b.narrow(1L, t + 1L, small.MaxLen - t - 1L).copy_(tokens small.Vocab 2L (small.MaxLen - t - 1L) (seed + 1)) |> ignore
                let la, lb = model.forward a, model.forward b
                Expect.isTrue (bitwiseEqual (la.narrow(1L, 0L, t + 1L)) (lb.narrow(1L, 0L, t + 1L))) (sprintf "logits at positions ≤ %d (%A)" t la.dtype)
                if t + 1L < small.MaxLen && not (bitwiseEqual a b) then
                    Expect.isFalse (bitwiseEqual la lb) "the changed tokens do change later logits"

        test "the output projection is wte itself: logits = LN_f(h)·wteᵀ, and wte's gradient is the lookup's plus the projection's (float64, 1e-12)" {
            use model = build64 small 4
            use _ = torch.NewDisposeScope()
            let wte = param model "wte.weight"
            let vd = [| small.Vocab; small.Width |]
            Expect.sequenceEqual [ for n, p in named model do if p.shape = vd then n ] [ "wte.weight" ] "one [V, d] tensor"
            let mutable lookup : Tensor = null
            let mutable features : Tensor = null
            let onLookup = (child model "wte" :?> Modules.Embedding).register_forward_hook(fun _ _ z -> lookup <- z; null)
            let onFeatures = (child model "ln_f" :?> Modules.LayerNorm).register_forward_hook(fun _ _ z -> features <- z; null)
            // Only a few of the 40 ids occur, so rows of unseen ids get the projection's gradient alone.
            let ids = tokens 6L 3L small.MaxLen 9
            let targets = tokens small.Vocab 3L small.MaxLen 10
            let logits = model.forward ids
            onLookup.remove()
            onFeatures.remove()
            Expect.isTrue (bitwiseEqual logits (torch.nn.functional.linear(features, wte))) "logits = LN_f(h)·wteᵀ"
            let loss = torch.nn.functional.cross_entropy(logits.reshape(-1L, small.Vocab), targets.reshape(-1L))
            let g = torch.autograd.grad([| loss |], [| wte; logits; lookup |]) |> Seq.toArray
            let head = g[1].reshape(-1L, small.Vocab).t().matmul(features.reshape(-1L, small.Width))
            let input = torch.zeros(vd, dtype = torch.float64).index_add_(0L, ids.reshape(-1L), g[2].reshape(-1L, small.Width), (1.0).ToScalar())
            let scale = maxAbs g[0]
            Expect.isLessThanOrEqual (maxAbs (g[0] - head - input)) (1e-12 * scale) "∂L/∂wte = Σ over the lookup + Σ over the projection"
            Expect.isGreaterThan (maxAbs head) (0.01 * scale) "the projection's share is not negligible"
            Expect.isGreaterThan (maxAbs input) (0.01 * scale) "the lookup's share is not negligible"
            Expect.equal (maxAbs (input.narrow(0L, 6L, small.Vocab - 6L))) 0.0 "unseen ids get nothing from the lookup"
        }

        test "fused causal attention equals softmax(Q·Kᵀ/√(d/H) + M)·V written out, M = −∞ above the diagonal (float64, 1e-10)" {
            let d, heads, b, t = 32L, 4L, 3L, 9L
            use attn = new CausalSelfAttention(d, heads)
            attn.``to``(torch.float64) |> ignore
            use _ = torch.NewDisposeScope()
            let gen = new torch.Generator(5UL)
            let x = torch.randn([| b; t; d |], dtype = torch.float64, generator = gen)
            // Larger weights than the default initialisation, so the softmax is far from uniform.
            use _ = torch.no_grad()
            for _, p in named attn do p.copy_(torch.randn(p.shape, dtype = torch.float64, generator = gen).mul((0.5).ToScalar())) |> ignore
            let p = dict (named attn)
            let qkv = torch.nn.functional.linear(x, p["c_attn.weight"], p["c_attn.bias"])
            let head (i: int64) = qkv.narrow(2L, i * d, d).view(b, t, heads, d / heads).transpose(1L, 2L)
            let q, k, v = head 0L, head 1L, head 2L
            let mask = torch.ones([| t; t |], dtype = torch.ScalarType.Bool).triu(1L)
            let scores = torch.matmul(q, k.transpose(-2L, -1L)).div((sqrt (float (d / heads))).ToScalar()).masked_fill(mask, Double.NegativeInfinity)
            let mixed = torch.matmul(scores.softmax(-1L), v).transpose(1L, 2L).reshape(b, t, d)
            let expected = torch.nn.functional.linear(mixed, p["c_proj.weight"], p["c_proj.bias"])
            let actual = attn.forward x
            Expect.isLessThanOrEqual (maxAbs (actual - expected)) (1e-10 * maxAbs expected) "largest difference relative to the largest output"
        }

        test "dropout acts in training mode only: in eval mode a p = 0.3 model equals the p = 0 model with the same weights" {
            use plain = build small 6
            use dropped = Gpt.Create(small, new torch.Generator(6UL), dropout = 0.3)
            use _ = torch.NewDisposeScope()
            let ids = tokens small.Vocab 2L small.MaxLen 3
            dropped.eval()
            Expect.isTrue (bitwiseEqual (dropped.forward ids) (plain.forward ids)) "eval mode: no dropout"
            dropped.train()
            Expect.isFalse (bitwiseEqual (dropped.forward ids) (plain.forward ids)) "training mode: dropout"
        }

        test "the GPT learns: 80 AdamW steps (lr 1e-2) on CausalLmTask memorise 4 random sequences (loss from ≈ ln V to < 0.1)" {
            use model = build small 11
            use optimizer = torch.optim.AdamW(model.parameters(), lr = 1e-2)
            let task = Research.Core.Tasks.CausalLmTask()
            let ids = tokens small.Vocab 4L small.MaxLen 12
            let batch = Batch([ Collections.Generic.KeyValuePair(Batch.InputIds, ids); Collections.Generic.KeyValuePair(Batch.Targets, ids) ])
            let loss () =
                let struct (logits, targets) = task.Rows(ModelInput.Logits(model, batch), batch)
                torch.nn.functional.cross_entropy(logits, targets)
            let lossValue () =
                use _ = torch.NewDisposeScope()
                loss().item<float32>()
            let first = lossValue ()
            for _ in 1 .. 80 do
                use _ = torch.NewDisposeScope()
                optimizer.zero_grad()
                loss().backward()
                optimizer.step() |> ignore
            let last = lossValue ()
            Expect.floatClose { absolute = 0.3; relative = 0.0 } (float first) (log (float small.Vocab)) "initial loss ≈ ln V"
            Expect.isLessThan last 0.1f "final loss"
        }
    ]

let private referenceTests =
    testList "reference" [
        test "logits equal the independent Python GPT-2's (float64 within 1e-9·max|ref|; float32 within 1e-4·max|ref|)" {
            let expected = readFile (Path.Combine(referenceDir, "expected.safetensors"))
            let ids, reference = expected["input_ids"], expected["logits"]
            Expect.sequenceEqual reference.shape [| ids.shape[0]; referenceShape.MaxLen; referenceShape.Vocab |] "reference logits [B, T, V]"
            let scale = maxAbs reference
            Expect.isGreaterThan scale 1.0 "the reference logits are not near zero"
            for dtype, tolerance in [ torch.float64, 1e-9; torch.float32, 1e-4 ] do
                use model = new Gpt(referenceShape)
                model.``to``(dtype) |> ignore
                Gpt2Layout.Load(model, Path.Combine(referenceDir, "model.safetensors"))
                use _ = torch.NewDisposeScope()
                use _ = torch.no_grad()
                let error = maxAbs (model.forward(ids).to_type(torch.float64) - reference)
                Expect.isLessThanOrEqual error (tolerance * scale) (sprintf "%A: max |ours − reference| = %.3g, max |reference| = %.3g" dtype error scale)
            for t in expected.Values do t.Dispose()
        }

        test "exporting the loaded reference rewrites its file's tensors bitwise (transformer.*, Conv1D [in, out]), without lm_head and mask buffers" {
            use model = new Gpt(referenceShape)
            let source = Path.Combine(referenceDir, "model.safetensors")
            Gpt2Layout.Load(model, source)
            let exported = Path.Combine(tempDir "gpt", "model.safetensors")
            Gpt2Layout.Save(model, exported)
            let original, written = readFile source, readFile exported
            let kept = original.Keys |> Seq.filter (fun k -> k <> "lm_head.weight" && not (k.EndsWith ".attn.bias" || k.EndsWith ".attn.masked_bias")) |> Set.ofSeq
            Expect.equal (Set.ofSeq written.Keys) kept "the same keys, less the tied head and the buffers"
            for k in kept do Expect.isTrue (bitwiseEqual written[k] original[k]) (sprintf "%s bitwise" k)
        }
    ]

let private layoutTests =
    testList "layout" [
        test "export → load round-trips every parameter bitwise (float32 and float64)" {
            for dtype in [ torch.float32; torch.float64 ] do
                use a = build small 21
                a.``to``(dtype) |> ignore
                let path = Path.Combine(tempDir "gpt", "model.safetensors")
                Gpt2Layout.Save(a, path)
                use b = build small 22
                b.``to``(dtype) |> ignore
                Gpt2Layout.Load(b, path)
                for (n, pa), (_, pb) in List.zip (named a) (named b) do
                    Expect.isTrue (bitwiseEqual pa pb) (sprintf "%s (%A)" n dtype)
        }

        test "GPT2Model's layout (keys without 'transformer.') loads the same tensors; a directory resolves to its model.safetensors" {
            use a = build small 23
            let path = Path.Combine(tempDir "gpt", "model.safetensors")
            Gpt2Layout.Save(a, path)
            let bare = readFile path |> Seq.map (fun kv -> kv.Key.Substring Gpt2Layout.Prefix.Length, kv.Value) |> List.ofSeq
            let barePath = writeFile bare
            use b = build small 24
            Gpt2Layout.Load(b, Path.GetDirectoryName barePath)
            for (n, pa), (_, pb) in List.zip (named a) (named b) do
                Expect.isTrue (bitwiseEqual pa pb) n
        }

        test "loading refuses a missing tensor, a wrong shape, an untied lm_head, an unexpected tensor and integer weights, one line each naming the file and key; nothing changes" {
            use a = build small 25
            let path = Path.Combine(tempDir "gpt", "model.safetensors")
            Gpt2Layout.Save(a, path)
            let good = readFile path |> Seq.map (fun kv -> kv.Key, kv.Value) |> List.ofSeq
            let without key = good |> List.filter (fun (k, _) -> k <> key)
            let replace key (t: Tensor) = good |> List.map (fun (k, v) -> k, (if k = key then t else v))
            let fc = "transformer.h.1.mlp.c_fc.weight"
            let cases =
                [ "missing", without fc, [ sprintf "no tensor '%s' (expected [16, 64])" fc ]
                  // The Linear layout [out, in] where Conv1D's [in, out] is expected.
                  "transposed", replace fc (param a "h.1.mlp.c_fc.weight"), [ sprintf "tensor '%s' is [64, 16], expected [16, 64] (Conv1D weights are stored [in, out])" fc ]
                  "wrong vocabulary", replace "transformer.wte.weight" (torch.zeros(41L, 16L)), [ "tensor 'transformer.wte.weight' is [41, 16], expected [40, 16]" ]
                  "untied head", good @ [ "lm_head.weight", torch.zeros(40L, 16L) ], [ "tensor 'lm_head.weight' differs from 'transformer.wte.weight'" ]
                  "unexpected", good @ [ "transformer.h.2.ln_1.weight", torch.ones(16L) ], [ "unexpected tensor 'transformer.h.2.ln_1.weight'" ]
                  "integers", replace "transformer.ln_f.bias" (torch.zeros([| 16L |], dtype = torch.int64)), [ "tensor 'transformer.ln_f.bias' is stored as I64, where the model's tensor is F32" ]
                  "two problems", without fc @ [ "extra", torch.ones(1L) ], [ sprintf "no tensor '%s'" fc; "unexpected tensor 'extra'" ] ]
            for name, tensors, expected in cases do
                let file = writeFile tensors
                use b = build small 26
                let before = named b |> List.map (fun (_, p) -> p.clone())
                let message = refusal b file
                let lines = message.Split '\n'
                Expect.equal lines.Length expected.Length (sprintf "%s: one line per problem in\n%s" name message)
                for line, part in Array.zip lines (Array.ofList expected) do
                    Expect.stringStarts line (file + ": ") (sprintf "%s: the line names the file" name)
                    Expect.stringContains line part (sprintf "%s: the line names the key" name)
                for (n, p), q in List.zip (named b) before do Expect.isTrue (bitwiseEqual p q) (sprintf "%s: %s unchanged" name n)
            let tied = writeFile (good @ [ "lm_head.weight", param a "wte.weight" ])
            use c = build small 27
            Gpt2Layout.Load(c, tied)
            Expect.isTrue (bitwiseEqual (param c "wte.weight") (param a "wte.weight")) "an lm_head equal to wte is accepted"
        }

        test "a damaged file is refused by the safetensors check before anything is read, naming the file" {
            let path = Path.Combine(tempDir "gpt", "model.safetensors")
            File.WriteAllBytes(path, Array.append (BitConverter.GetBytes 1000L) "{}"B)
            use model = build small 1
            Expect.stringContains (refusal model path) path "names the file"
        }
    ]

/// init_from through the gpt kind: a file is read in the layout its tensors show, whatever their prefix.
let private initFromTests =
    let kind = ModelKinds.Find "gpt"
    /// The gpt kind's load of `path` into a fresh model of the reference's shape (strict unless told), and its logits.
    let loadThroughKind (strict: bool) (path: string) =
        let model = new Gpt(referenceShape)
        let section = Research.Core.Config.ModelSection(Kind = "gpt", Strict = strict)
        let shape = Research.Abstractions.DataShape("test", Research.Abstractions.InputKind.Tokens, referenceShape.MaxLen, int referenceShape.Vocab, NextToken = true, Vocabulary = int referenceShape.Vocab)
        let context = ModelContext(section.Keys, shape, ModelTarget(referenceShape.MaxLen, int referenceShape.Vocab), path, Weights = Research.Core.Models.WeightFiles.Instance)
        let summary = kind.Load(model, section.Options, context)
        model, summary
    let logitsOf (model: Gpt) (ids: Tensor) =
        use _ = torch.no_grad()
        model.forward(ids)
    /// The reference file's tensors renamed by `rename` (None drops a tensor), written as a new file.
    let variant (rename: string -> string option) =
        writeFile [ for KeyValue(k, t) in readFile (Path.Combine(referenceDir, "model.safetensors")) do
                        match rename k with
                        | Some name -> yield name, t
                        | None -> () ]
    let bare (k: string) = if k.StartsWith Gpt2Layout.Prefix then k.Substring Gpt2Layout.Prefix.Length else k
    let isBuffer (k: string) = k.EndsWith ".attn.bias" || k.EndsWith ".attn.masked_bias"
    testList "init_from" [
        test "a GPT-2 file without 'transformer.' loads strictly through the gpt kind, its logits bitwise the prefixed file's: with lm_head and buffers, without lm_head, and with neither" {
            let ids = (readFile (Path.Combine(referenceDir, "expected.safetensors")))["input_ids"]
            let prefixed, summary = loadThroughKind true (Path.Combine(referenceDir, "model.safetensors"))
            use prefixed = prefixed
            Expect.stringContains summary "GPT-2 layout" "the published file is read as GPT-2's"
            let expected = logitsOf prefixed ids
            for label, rename in
                [ "bare, tied lm_head and mask buffers kept", (fun k -> Some (bare k))
                  "bare, no lm_head", (fun k -> if k = Gpt2Layout.LmHead then None else Some (bare k))
                  "bare, neither lm_head nor buffers (told apart by c_attn's [d, 3d] alone)", (fun k -> if k = Gpt2Layout.LmHead || isBuffer k then None else Some (bare k)) ] do
                let path = variant rename
                Expect.equal (Gpt2Layout.Recognise path) Gpt2Layout.Layout.Gpt2 (sprintf "%s: recognised as GPT-2's" label)
                let model, summary = loadThroughKind true path
                use model = model
                Expect.stringContains summary "GPT-2 layout" label
                Expect.isTrue (bitwiseEqual (logitsOf model ids) expected) (sprintf "%s: logits bitwise the prefixed file's" label)
        }

        test "an lm_head.weight equal to wte loads; strict = false reads a bare GPT-2 file in its own layout too (attn.c_proj transposed: logits bitwise); our checkpoint is read by name" {
            let ids = (readFile (Path.Combine(referenceDir, "expected.safetensors")))["input_ids"]
            let prefixed, _ = loadThroughKind true (Path.Combine(referenceDir, "model.safetensors"))
            use prefixed = prefixed
            let expected = logitsOf prefixed ids
            let tensors = readFile (Path.Combine(referenceDir, "model.safetensors"))
            let wte = tensors["transformer.wte.weight"]
            Expect.isTrue (bitwiseEqual tensors[Gpt2Layout.LmHead] wte) "the reference's lm_head is wte's copy"
            let withHead = writeFile [ for KeyValue(k, t) in tensors do if k <> Gpt2Layout.LmHead && not (isBuffer k) then yield bare k, t
                                       yield Gpt2Layout.LmHead, wte.clone() ]
            let model, _ = loadThroughKind true withHead
            use model = model
            Expect.isTrue (bitwiseEqual (logitsOf model ids) expected) "an extra lm_head.weight equal to wte"
            let loose, summary = loadThroughKind false (variant (fun k -> if isBuffer k then None else Some (bare k)))
            use loose = loose
            Expect.stringContains summary "GPT-2 layout" "strict = false: still GPT-2's layout"
            Expect.isTrue (bitwiseEqual (logitsOf loose ids) expected) "strict = false: the square attn.c_proj is transposed as well"
            let ours = Path.Combine(tempDir "gpt", "model.safetensors")
            WeightFile.Save(prefixed, ours)
            Expect.equal (Gpt2Layout.Recognise ours) Gpt2Layout.Layout.Ours "a checkpoint's names and Linear shapes"
            let fromOurs, summary = loadThroughKind true ours
            use fromOurs = fromOurs
            Expect.stringContains summary "loaded 28 tensors" "read by name"
            Expect.isTrue (bitwiseEqual (logitsOf fromOurs ids) expected) "our checkpoint's logits"
        }

        test "a file in neither layout is refused strictly, saying which names and shapes a GPT-2 file and our checkpoint hold, and what the file holds" {
            use mlp = new Mlp(8L, [| 4 |], 2L)
            let path = Path.Combine(tempDir "gpt", "model.safetensors")
            WeightFile.Save(mlp, path)
            Expect.equal (Gpt2Layout.Recognise path) Gpt2Layout.Layout.None "no wte.weight"
            let message =
                try loadThroughKind true path |> ignore; failtest "loaded"
                with :? InvalidDataException as e -> e.Message
            for part in [ path; "not a GPT's weights"; "wte.weight [300, 64]"; "wpe.weight [32, 64]"; "h.{i}.attn.c_attn.weight [64, 192] (Conv1D weights [in, out])"
                          "with or without 'transformer.'"; "'lm_head.weight' optional"; "Linear weights [out, in]: h.{i}.attn.c_attn.weight [192, 64]"
                          "the file holds layers.0.weight [4, 8]" ] do
                Expect.stringContains message part "the expected layout, and the file's tensors"
            Expect.isFalse (message.Contains "\n") "one line"
        }

        test "init_from in a config reads a bare GPT-2 file strictly: the run's model has the source model's weights, the logits bitwise" {
            let dir = tempDir "gpt-init"
            let shape = GptShape(Vocab = 257L, MaxLen = 16L, Width = 16L, Heads = 2L, Layers = 2L)
            use source = build shape 31
            let prefixed = Path.Combine(dir, "prefixed", "model.safetensors")
            Gpt2Layout.Save(source, prefixed)
            let barePath = Path.Combine(dir, "bare.safetensors")
            WeightFile.Save(readFile prefixed |> Seq.map (fun kv -> struct (kv.Key.Substring Gpt2Layout.Prefix.Length, kv.Value)), barePath)
            let config (file: string) =
                Research.Core.Config.ConfigLoader.Parse(
                    "[data]\ndataset = \"fortunes\"\ntask = \"causal-lm\"\ncontext = 16\n[model]\nkind = \"gpt\"\nwidth = 16\nlayers = 2\nheads = 2\n",
                    Path.Combine(dir, "c.toml"), [ sprintf "model.init_from=\"%s\"" file ])
            let ids = tokens 257L 3L 16L 5
            let expected = logitsOf source ids
            for file in [ prefixed; barePath ] do
                let c = config file
                let struct (model, summary) = Research.Core.Training.RunBuilder.Model(c, Research.Core.Training.RunBuilder.Shape c)
                use model = model
                Expect.stringContains summary "GPT-2 layout" file
                Expect.isTrue (bitwiseEqual (logitsOf (model :?> Gpt) ids) expected) (sprintf "%s: logits bitwise the source's" file)
        }
    ]

let private generationTests =
    let tiny = GptShape(Vocab = 30L, MaxLen = 8L, Width = 16L, Heads = 2L, Layers = 2L)
    /// Larger weights than GPT-2's initialisation, so that the model's distribution is far from uniform.
    let peaked seed =
        let m = build tiny seed
        use _ = torch.no_grad()
        for n, p in named m do if not (n.Contains "ln_") then p.mul_(torch.tensor 25.0f) |> ignore
        m
    let lastLogits (model: Gpt) (sequence: int64 list) =
        use _ = torch.no_grad()
        let window = sequence |> List.skip (max 0 (sequence.Length - int tiny.MaxLen)) |> Array.ofList
        model.forward(torch.tensor(window, dtype = torch.int64).unsqueeze(0L)).select(0L, 0L).select(0L, -1L)
    let sample seed (decoding: Decoding) (model: Gpt) =
        model.Generate([| 1L; 2L; 3L |], GenerationOptions(20, decoding), new torch.Generator(uint64 seed)) |> List.ofArray
    testList "generation" [
        test "greedy picks the argmax of the last position's logits at every step, the window cropped to the last T_max tokens" {
            use model = peaked 31
            let prompt = [ 4L; 5L; 6L ]
            let out = model.Generate(Array.ofList prompt, GenerationOptions(20, Decoding.Greedy())) |> List.ofArray
            Expect.equal out.Length 20 "20 new tokens (no end token), well past T_max = 8"
            for i in 0 .. out.Length - 1 do
                use _ = torch.NewDisposeScope()
                let expected = (lastLogits model (prompt @ List.take i out)).argmax().item<int64>()
                Expect.equal out[i] expected (sprintf "step %d" i)
        }

        test "sampling is deterministic for a seed whatever the process-global RNG draws in between, differs across seeds, and restores the model's mode" {
            use model = peaked 32
            model.train()
            let a = sample 5 (Decoding.Sample(1.5) :> Decoding) model
            torch.rand([| 10L |]).Dispose()
            let b = sample 5 (Decoding.Sample(1.5) :> Decoding) model
            let c = sample 6 (Decoding.Sample(1.5) :> Decoding) model
            Expect.equal a b "same seed, same tokens"
            Expect.notEqual a c "another seed, other tokens"
            Expect.isTrue model.training "training mode restored"
            Expect.throwsT<ArgumentException> (fun () -> model.Generate([| 1L |], GenerationOptions(3, Decoding.Sample()), null) |> ignore) "sampling without a generator"
        }

        test "top-k = 1 sampling equals greedy at any temperature and seed; top-k = 3 draws only among the 3 highest logits" {
            use model = peaked 33
            let greedy = model.Generate([| 1L; 2L; 3L |], GenerationOptions(20, Decoding.Greedy())) |> List.ofArray
            for seed, temperature in [ 1, 0.5; 2, 1.0; 3, 5.0 ] do
                Expect.equal (sample seed (Decoding.Sample(temperature, TopK = 1) :> Decoding) model) greedy (sprintf "seed %d, τ = %g" seed temperature)
            let drawn = sample 4 (Decoding.Sample(3.0, TopK = 3) :> Decoding) model
            let all = sample 4 (Decoding.Sample(3.0) :> Decoding) model
            Expect.notEqual all greedy "without top-k the hot sampler leaves the greedy path (so the check below can fail)"
            for i in 0 .. drawn.Length - 1 do
                use _ = torch.NewDisposeScope()
                let struct (_, top) = (lastLogits model ([ 1L; 2L; 3L ] @ List.take i drawn)).topk(3)
                Expect.contains (top.data<int64>().ToArray()) drawn[i] (sprintf "step %d among the top 3" i)
        }

        test "generation stops after the end token, which is the last token returned" {
            use model = peaked 34
            let free = model.Generate([| 7L |], GenerationOptions(15, Decoding.Greedy())) |> List.ofArray
            let stop = free[4]
            let first = List.findIndex ((=) stop) free
            let stopped = model.Generate([| 7L |], GenerationOptions(15, Decoding.Greedy(), EndToken = Nullable stop)) |> List.ofArray
            Expect.equal stopped (List.take (first + 1) free) "the greedy path up to the first end token"
            Expect.isEmpty (model.Generate([| 7L |], GenerationOptions(0, Decoding.Greedy()))) "no new tokens asked, none given"
            Expect.throwsT<ArgumentException> (fun () -> model.Generate([| 30L |], GenerationOptions(1, Decoding.Greedy())) |> ignore) "a token outside the vocabulary"
            Expect.throwsT<ArgumentException> (fun () -> model.Generate([||], GenerationOptions(1, Decoding.Greedy())) |> ignore) "an empty prompt"
        }
    ]

let tests = testList "gpt" [ shapeTests; forwardTests; referenceTests; layoutTests; initFromTests; generationTests ]
