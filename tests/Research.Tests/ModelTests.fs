/// The small transformer, its synthetic task and the step-benchmark harness. Model tests build from explicit
/// generators only; timing tests use sleeping steps, whose cost is known, so a ratio can be checked.
module Research.Tests.ModelTests

open System
open System.Threading
open Expecto
open TorchSharp
open Research.Abstractions
open Research.Cli.Bench
open Research.Core.Models

type private Tensor = torch.Tensor

/// A transformer small enough for a test to build in milliseconds.
let private small = TinyTransformerShape(Vocab = 50L, MaxLen = 12L, Width = 16L, Heads = 2L, Layers = 2L, Classes = 3L)

let private build (shape: TinyTransformerShape) (seed: int) = TinyTransformer.Create(shape, new torch.Generator(uint64 seed))

let private names (m: torch.nn.Module) = m.named_parameters() |> Seq.map (fun struct (n, _) -> n) |> List.ofSeq

let private tensors (m: torch.nn.Module) = m.named_parameters() |> Seq.map (fun struct (_, p) -> p :> Tensor) |> List.ofSeq

let private bitwiseEqual (a: Tensor) (b: Tensor) = torch.eq(a, b).all().item<bool>()

let private tokens (shape: TinyTransformerShape) (n: int64) (length: int64) (seed: int) =
    torch.randint(0L, shape.Vocab, [| n; length |], dtype = torch.int64, generator = new torch.Generator(uint64 seed))

/// Mean cross-entropy of the model over the batches, without gradients.
let private meanLoss (model: torch.nn.Module<Tensor, Tensor>) (batches: Batch list) =
    use _ = torch.no_grad()
    batches |> List.averageBy (fun b ->
        use _ = torch.NewDisposeScope()
        torch.nn.functional.cross_entropy(model.forward b.[Batch.Input], b.TargetsTensor).item<float32>() |> float)

let private transformerTests =
    testList "transformer" [
        test "the transformer maps tokens [B, T] to logits [B, classes] for every T up to maxLen" {
            use model = build small 1
            for length in [ 1L; 5L; small.MaxLen ] do
                use _ = torch.NewDisposeScope()
                let logits = model.forward(tokens small 4L length 2)
                Expect.sequenceEqual logits.shape [| 4L; small.Classes |] (sprintf "logit shape for T = %d" length)
            Expect.throws (fun () -> model.forward(tokens small 1L (small.MaxLen + 1L) 2) |> ignore) "a sequence longer than maxLen is refused"
        }

        test "parameter names are stable: embed, pos, blocks.{i}.{ln1, attn.qkv, attn.proj, ln2, mlp.fc, mlp.out}, ln_f, head" {
            use model = build small 1
            let block i =
                [ "ln1"; "attn.qkv"; "attn.proj"; "ln2"; "mlp.fc"; "mlp.out" ]
                |> List.collect (fun m -> [ sprintf "blocks.%d.%s.weight" i m; sprintf "blocks.%d.%s.bias" i m ])
            let expected =
                // A module's own parameters come before its children's, so "pos" precedes "embed.weight".
                [ "pos"; "embed.weight" ] @ block 0 @ block 1 @ [ "ln_f.weight"; "ln_f.bias"; "head.weight"; "head.bias" ]
            Expect.sequenceEqual (names model) expected "parameter names in registration order"
        }

        test "TinyTransformerShape's tensor and parameter counts equal the built models'" {
            for shape in [ small; TinyTransformerShape.ManyTensors; TinyTransformerShape.Benchmark ] do
                use model = build shape 1
                let ps = tensors model
                Expect.equal (int64 ps.Length) shape.TensorCount (sprintf "tensor count of %A" shape)
                Expect.equal (ps |> List.sumBy (fun p -> p.numel())) shape.ParameterCount (sprintf "parameter count of %A" shape)
        }

        test "the many-tensor configuration has at least 100 parameter tensors" {
            use model = TinyTransformer.ManyTensors(new torch.Generator(1UL))
            Expect.isGreaterThanOrEqual (tensors model).Length 100 "parameter tensors"
        }

        test "the same generator seed gives bitwise-equal models, whatever the process-global RNG draws in between" {
            use a = build small 7
            torch.rand([| 1000L |]).Dispose()
            use b = build small 7
            use c = build small 8
            for (n, pa), pb in List.zip (List.zip (names a) (tensors a)) (tensors b) do
                Expect.isTrue (bitwiseEqual pa pb) (sprintf "%s equal under the same seed" n)
            Expect.isFalse (List.forall2 bitwiseEqual (tensors a) (tensors c)) "another seed gives another model"
        }

        test "initialisation: embeddings N(0, 0.02²), LayerNorm gain 1 and shift 0, Linear weights within ±1/√fan_in" {
            use model = build TinyTransformerShape.ManyTensors 3
            for struct (n, p) in model.named_parameters() do
                use _ = torch.NewDisposeScope()
                let std = p.std().item<float32>() |> float
                let absMax = p.abs().max().item<float32>() |> float
                if n = "embed.weight" || n = "pos" then
                    Expect.floatClose { absolute = 0.001; relative = 0.0 } std 0.02 (sprintf "%s: standard deviation" n)
                elif n.Contains "ln" then
                    let value = if n.EndsWith ".weight" then 1.0f else 0.0f
                    Expect.isTrue (torch.eq(p, torch.tensor value).all().item<bool>()) (sprintf "%s is %g" n value)
                elif n.EndsWith ".weight" then
                    let bound = 1.0 / sqrt (float p.shape[1])
                    Expect.isLessThanOrEqual absMax bound (sprintf "%s within ±1/√fan_in" n)
                    // U(−b, b) has standard deviation b/√3; a weight left at zero or drawn N(0, 0.02²) would not.
                    Expect.floatClose { absolute = 0.0; relative = 0.05 } std (bound / sqrt 3.0) (sprintf "%s: uniform spread" n)
        }

        test "self-attention equals softmax(Q·Kᵀ/√(d/H))·V per head, written out with matmul" {
            let d, heads, b, t = 16L, 4L, 3L, 5L
            use attn = new SelfAttention(d, heads)
            use _ = torch.NewDisposeScope()
            let x = torch.randn([| b; t; d |], generator = new torch.Generator(5UL))
            let p = dict [ for struct (n, v) in attn.named_parameters() -> n, (v :> Tensor) ]
            let qkv = torch.nn.functional.linear(x, p["qkv.weight"], p["qkv.bias"])
            let head (i: int64) = qkv.narrow(2L, i * d, d).view(b, t, heads, d / heads).transpose(1L, 2L)
            let q, k, v = head 0L, head 1L, head 2L
            let weights = torch.matmul(q, k.transpose(-2L, -1L)).div((sqrt (float (d / heads))).ToScalar()).softmax(-1L)
            let mixed = torch.matmul(weights, v).transpose(1L, 2L).reshape(b, t, d)
            let expected = torch.nn.functional.linear(mixed, p["proj.weight"], p["proj.bias"])
            let actual = attn.forward x
            let err = (actual - expected).abs().max().item<float32>()
            Expect.isLessThan err 1e-5f "largest absolute difference"
        }

        test "the transformer learns the synthetic task: after 60 AdamW steps training loss < 0.3 and held-out loss < 0.6 (chance ≈ 1.1)" {
            let shape = TinyTransformerShape(Vocab = 24L, MaxLen = 15L, Width = 32L, Heads = 2L, Layers = 1L, Classes = 3L)
            use model = build shape 11
            use data = SyntheticTokens.Make(256, 15, 24, 3, new torch.Generator(12UL))
            use heldOut = SyntheticTokens.Make(512, 15, 24, 3, new torch.Generator(13UL))
            let batches =
                [ for i in 0L .. 3L -> Batch(data.Inputs.narrow(0L, i * 64L, 64L), data.Targets.narrow(0L, i * 64L, 64L)) ]
            let before = meanLoss model batches
            use loop = new HandWrittenLoop(model, batches, lr = 3e-3, weightDecay = 0.0)
            for _ in 1 .. 60 do loop.Step()
            let after = meanLoss model batches
            let held = meanLoss model [ Batch(heldOut.Inputs, heldOut.Targets) ]
            Expect.isGreaterThan before 0.9 "initial loss, near chance (ln 3 ≈ 1.10)"
            Expect.isLessThan after 0.3 (sprintf "training loss (from %.3f to %.3f)" before after)
            // Below chance on unseen sequences: the model has learnt the rule, not only memorised 256 sequences.
            Expect.isLessThan held 0.6 (sprintf "held-out loss %.3f" held)
        }

        test "synthetic labels are the most frequent residue mod C, the smallest residue on ties" {
            use toks = torch.tensor([| 0L; 1L; 2L; 3L; 4L; 5L;     // residues 0 1 2 0 1 2: a three-way tie → 0
                                       1L; 4L; 2L; 7L; 8L; 5L;     // 1 1 2 1 2 2: tie between 1 and 2 → 1
                                       5L; 2L; 8L; 0L; 3L; 11L |]  // 2 2 2 0 0 2 → 2
                        ).view(3L, 6L)
            use labels = SyntheticTokens.Labels(toks, 3)
            Expect.sequenceEqual (labels.data<int64>().ToArray()) [| 0L; 1L; 2L |] "labels"
        }

        test "synthetic data: tokens in [0, vocab), labels from the tokens, the same seed gives the same data" {
            use a = SyntheticTokens.Make(64, 10, 30, 4, new torch.Generator(4UL))
            use b = SyntheticTokens.Make(64, 10, 30, 4, new torch.Generator(4UL))
            Expect.sequenceEqual a.Inputs.shape [| 64L; 10L |] "token shape"
            Expect.isTrue (a.Inputs.min().item<int64>() >= 0L && a.Inputs.max().item<int64>() < 30L) "token range"
            use relabelled = SyntheticTokens.Labels(a.Inputs, 4)
            Expect.isTrue (bitwiseEqual a.Targets relabelled) "labels are a function of the tokens"
            Expect.isTrue (bitwiseEqual a.Inputs b.Inputs && bitwiseEqual a.Targets b.Targets) "same seed, same data"
        }
    ]

let private loopTests =
    testList "training steps" [
        test "the hand-written loop keeps the number of live tensors flat" {
            use model = build small 1
            use data = SyntheticTokens.Make(32, 12, 50, 3, new torch.Generator(2UL))
            use loop = new HandWrittenLoop(model, [ Batch(data.Inputs, data.Targets) ])
            for _ in 1 .. 3 do loop.Step()
            let live () = DisposeScopeManager.Statistics.ThreadTotalLiveCount
            let before = live ()
            for _ in 1 .. 20 do loop.Step()
            Expect.equal (live ()) before "live tensors after 20 more steps"
        }

        test "the built-in AdamW step decays only tensors of rank ≥ 2: with zero gradients θ ← (1 − ηλ)·θ there, unchanged elsewhere" {
            use model = TinyTransformer.ManyTensors(new torch.Generator(1UL))
            use data = SyntheticTokens.Make(4, 32, 512, 10, new torch.Generator(2UL))
            BuiltInAdamWStep.FillGradients(model, Batch(data.Inputs, data.Targets))
            let lr, wd = 0.01, 0.1
            use step = new BuiltInAdamWStep(model, lr = lr, weightDecay = wd)
            let ps = tensors model
            let rank2 = ps |> List.filter (fun p -> p.dim() >= 2L) |> List.length
            Expect.equal step.TensorCounts (struct (rank2, ps.Length - rank2)) "decay and no-decay group sizes"
            for p in ps do p.grad.zero_() |> ignore
            let before = ps |> List.map (fun p -> p.detach().clone())
            step.Step()
            for p, b in List.zip ps before do
                use _ = torch.NewDisposeScope()
                // Zero gradients leave m = v = 0, so the Adam term is 0 / (0 + ε) = 0 and only the decay acts.
                let expected = if p.dim() >= 2L then b.mul((1.0 - lr * wd).ToScalar()) else b
                Expect.isLessThan ((p - expected).abs().max().item<float32>()) 1e-7f (sprintf "tensor of shape %A" p.shape)
        }

        test "the built-in AdamW step refuses a model whose gradients were never filled" {
            use model = build small 1
            Expect.throwsT<InvalidOperationException> (fun () -> new BuiltInAdamWStep(model) |> ignore) "no gradients"
        }
    ]

let private benchTests =
    testList "step bench" [
        test "repetitions interleave, alternating which side goes first, after warm-up steps of both" {
            let log = Text.StringBuilder()
            let r = StepBench.Compare("order", (fun () -> log.Append 'b' |> ignore), (fun () -> log.Append 'c' |> ignore), 1, 4, 2)
            Expect.equal (string log) ("bc" + "bbcc" + "ccbb" + "bbcc" + "ccbb") "order of steps"
            Expect.equal (r.BaselineSeconds.Count, r.CandidateSeconds.Count) (4, 4) "one time per repetition and side"
        }

        test "the ratio is candidate/baseline: a candidate that sleeps twice as long gives 2 within 20%" {
            let sleep (ms: int) = fun () -> Thread.Sleep ms
            // Sleeps long against the scheduler's wake-up latency (a few ms on a busy 2-core machine), so the ratio is 2.
            let r = StepBench.Compare("sleep", sleep 25, sleep 50, 1, 5, 4)
            Expect.floatClose { absolute = 0.0; relative = 0.2 } r.Ratio 2.0 "ratio"
            Expect.floatClose { absolute = 0.0; relative = 0.2 } r.BaselineMedian 0.025 "baseline seconds per step"
            let struct (lo, hi) = r.CandidateSpread
            Expect.isTrue (lo <= r.CandidateMedian && r.CandidateMedian <= hi) "median within the spread"
        }

        test "the median is the middle value, or the mean of the two middle values" {
            Expect.equal (StepBench.Median [| 3.0; 1.0; 2.0 |]) 2.0 "odd count"
            Expect.equal (StepBench.Median [| 4.0; 1.0; 3.0; 2.0 |]) 2.5 "even count"
        }

        test "the table shows each label, both medians in ms/step, the spreads and the ratio" {
            let r = StepComparison("mlp step", [| 0.002; 0.004; 0.003 |], [| 0.001; 0.0015; 0.002 |], 2, 10)
            let table = StepBench.Format [| r |]
            for part in [ "mlp step"; "3.000"; "1.500"; "2.000–4.000"; "1.000–2.000"; "0.500"; "3 interleaved repetitions × 10 steps" ] do
                Expect.stringContains table part "table cell"
        }
    ]

let tests = testList "models" [ transformerTests; loopTests; benchTests ]
