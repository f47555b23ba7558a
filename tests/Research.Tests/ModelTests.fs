/// The GPT classifier the bench trains, its synthetic task and the step-benchmark harness. Model tests build from explicit
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

/// A GPT classifier small enough for a test to build in milliseconds: the transformer the bench and these tests use.
let private small = GptShape(Vocab = 50L, MaxLen = 12L, Width = 16L, Heads = 2L, Layers = 2L)

let private classes = 3L

let private build (shape: GptShape) (seed: int) = Gpt.Create(shape, new torch.Generator(uint64 seed), classes = classes)

let private names (m: torch.nn.Module) = m.named_parameters() |> Seq.map (fun struct (n, _) -> n) |> List.ofSeq

let private tensors (m: torch.nn.Module) = m.named_parameters() |> Seq.map (fun struct (_, p) -> p :> Tensor) |> List.ofSeq

let private bitwiseEqual (a: Tensor) (b: Tensor) = torch.eq(a, b).all().item<bool>()

let private tokens (shape: GptShape) (n: int64) (length: int64) (seed: int) =
    torch.randint(0L, shape.Vocab, [| n; length |], dtype = torch.int64, generator = new torch.Generator(uint64 seed))

/// Mean cross-entropy of the model over the batches, without gradients.
let private meanLoss (model: torch.nn.Module<Tensor, Tensor>) (batches: Batch list) =
    use _ = torch.no_grad()
    batches |> List.averageBy (fun b ->
        use _ = torch.NewDisposeScope()
        torch.nn.functional.cross_entropy(model.forward b.[Batch.Input], b.TargetsTensor).item<float32>() |> float)

let private transformerTests =
    testList "transformer" [
        test "the GPT classifier maps tokens [B, T] to logits [B, classes] for every T up to maxLen" {
            use model = build small 1
            for length in [ 1L; 5L; small.MaxLen ] do
                use _ = torch.NewDisposeScope()
                let logits = model.forward(tokens small 4L length 2)
                Expect.sequenceEqual logits.shape [| 4L; classes |] (sprintf "logit shape for T = %d" length)
            Expect.throws (fun () -> model.forward(tokens small 1L (small.MaxLen + 1L) 2) |> ignore) "a sequence longer than maxLen is refused"
        }

        test "the bench's transformers have GptShape's tensors and parameters plus a head of d·C + C: 54 tensors and 4,227,082 parameters; 150 and many small" {
            for shape in [ small; StepWorkload.ManyTensorsShape; StepWorkload.TransformerShape ] do
                use model = build shape 1
                let ps = tensors model
                Expect.equal (int64 ps.Length) (shape.TensorCount + 2L) (sprintf "tensor count of %A" shape)
                Expect.equal (ps |> List.sumBy (fun p -> p.numel())) (shape.ParameterCount + shape.Width * classes + classes) (sprintf "parameter count of %A" shape)
            use bench = StepWorkload.Transformer(1L, 1)
            Expect.equal (bench.TensorCount, bench.ParameterCount) (54, 4_227_082L) "the step bench's transformer classifier"
            use many = StepWorkload.ManyTensors(1L)
            Expect.equal many.TensorCount 150 "the many-tensor workload"
            Expect.isLessThan many.ParameterCount 1_000_000L "of small tensors"
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

        test "the GPT classifier learns the synthetic task: after 60 AdamW steps training loss < 0.3 and held-out loss < 0.6 (chance ≈ 1.1)" {
            let shape = GptShape(Vocab = 24L, MaxLen = 15L, Width = 32L, Heads = 2L, Layers = 1L)
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
            use workload = StepWorkload.ManyTensors(1L)
            let model = workload.Model
            // The bench's own batch: token ids under input_ids, as the trainer's step reads them.
            BuiltInAdamWStep.FillGradients(model, workload.Batches[0])
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
