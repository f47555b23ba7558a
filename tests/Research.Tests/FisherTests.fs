/// The four diagonal Fishers (van de Ven 2025, arXiv 2502.11756): the batched per-sample identity (G²)ᵀ(X²) equals
/// the naive per-sample loop, Batched is the square of mini-batch mean gradients, Exact is the expectation of
/// Sampled, and where the identity does not hold the fallback is stated. Every comparison states its tolerance as
/// max |a − b| / max |b| per parameter tensor.
module Research.Tests.FisherTests

open Expecto
open TorchSharp
open Research.Abstractions
open Research.Core.Forgetting
open Research.Core.Models

type private Tensor = torch.Tensor

/// An MLP that invokes its layers through Module.call, which runs forward hooks (Module.forward does not).
type private CallingMlp(inputs: int64, hidden: int64, outputs: int64) as this =
    inherit torch.nn.Module<Tensor, Tensor>("calling_mlp")
    let fc1 = torch.nn.Linear(inputs, hidden)
    let fc2 = torch.nn.Linear(hidden, hidden)
    let head = torch.nn.Linear(hidden, outputs)
    do this.RegisterComponents()
    override _.forward x = head.call (torch.nn.functional.relu (fc2.call (torch.nn.functional.tanh (fc1.call x))))

/// x → head(relu(fc(x))), with a Linear `unused` the forward pass never touches.
type private WithUnusedLayer(inputs: int64, hidden: int64, outputs: int64) as this =
    inherit torch.nn.Module<Tensor, Tensor>("with_unused_layer")
    let fc = torch.nn.Linear(inputs, hidden)
    let unused = torch.nn.Linear(inputs, outputs)
    let head = torch.nn.Linear(hidden, outputs)
    do this.RegisterComponents()
    override _.forward x = head.call (torch.nn.functional.relu (fc.call x))
    /// Referenced here so that the layer is a field, which RegisterComponents registers.
    member _.Unused = unused

/// Token ids [B, T] → embedding → `mix`, a Linear on [B, T, d] (one weight shared by every position) → mean over T →
/// `head`, a Linear on [B, d].
type private SequenceModel(vocab: int64, width: int64, classes: int64) as this =
    inherit torch.nn.Module<Tensor, Tensor>("sequence_model")
    let embed = torch.nn.Embedding(vocab, width)
    let mix = torch.nn.Linear(width, width)
    let head = torch.nn.Linear(width, classes)
    do this.RegisterComponents()
    override _.forward tokens = head.call ((torch.nn.functional.gelu (mix.call (embed.call tokens))).mean([| 1L |]))

/// TorchSharp's nn.Sequential fc1 → ReLU → fc2 → Tanh → head, 8 → 16 → 16 → 3. Its forward calls each layer through
/// Module.call (hooks run) and disposes every intermediate tensor once the next layer has consumed it: fc1's output,
/// fc2's input and output, head's input.
let private sequentialMlp () : torch.nn.Module<Tensor, Tensor> =
    let layer (name: string) (m: torch.nn.Module<Tensor, Tensor>) = struct (name, m)
    torch.nn.Sequential(
        layer "fc1" (torch.nn.Linear(8L, 16L)),
        layer "act1" (torch.nn.ReLU()),
        layer "fc2" (torch.nn.Linear(16L, 16L)),
        layer "act2" (torch.nn.Tanh()),
        layer "head" (torch.nn.Linear(16L, 3L)))

let private initialised (seed: uint64) (model: #torch.nn.Module<Tensor, Tensor>) =
    Init.LinearDefault(model, new torch.Generator(seed))
    model

/// n samples with features ~ N(0, 1) and labels uniform in [0, classes), cut into batches of `batch` (the last shorter).
let private gaussianBatches (n: int64) (batch: int64) (features: int64) (classes: int64) (seed: uint64) =
    let g = new torch.Generator(seed)
    let x = torch.randn([| n; features |], generator = g)
    let y = torch.randint(0L, classes, [| n |], dtype = torch.int64, generator = g)
    [ for start in 0L .. batch .. n - 1L ->
        let rows = min batch (n - start)
        Batch(x.narrow(0L, start, rows), y.narrow(0L, start, rows)) ]

let private tokenBatches (n: int64) (batch: int64) (length: int64) (vocab: int64) (classes: int64) (seed: uint64) =
    let g = new torch.Generator(seed)
    let x = torch.randint(0L, vocab, [| n; length |], dtype = torch.int64, generator = g)
    let y = torch.randint(0L, classes, [| n |], dtype = torch.int64, generator = g)
    [ for start in 0L .. batch .. n - 1L ->
        let rows = min batch (n - start)
        Batch(x.narrow(0L, start, rows), y.narrow(0L, start, rows)) ]

/// max |a − b| / max |b| (the absolute difference when b is all zeros).
let private relDiff (a: Tensor) (b: Tensor) =
    use _ = torch.NewDisposeScope()
    let scale = b.abs().max().item<float32>() |> float
    let diff = (a - b).abs().max().item<float32>() |> float
    if scale = 0.0 then diff else diff / scale

let private expectClose (tolerance: float) (actual: FisherResult) (expected: FisherResult) (what: string) =
    Expect.sequenceEqual (Seq.sort actual.Diagonal.Keys) (Seq.sort expected.Diagonal.Keys) (what + ": parameter names")
    for KeyValue(name, e) in expected.Diagonal do
        let r = relDiff actual.Diagonal[name] e
        Expect.isLessThanOrEqual r tolerance (sprintf "%s, %s: max|a − b| / max|b| = %.3g" what name r)

let private perSampleKinds = [ FisherKind.Exact; FisherKind.Sampled; FisherKind.Empirical ]

let tests =
    testList "fisher" [
        test "each variant (exact, sampled, empirical) equals the naive per-sample loop within 1e-5 relative on an MLP" {
            let models : (string * torch.nn.Module<Tensor, Tensor>) list =
                [ "an MLP calling its layers through Module.call", initialised 1UL (new CallingMlp(6L, 8L, 3L))
                  "Research.Core's Mlp 6-8-8-3", initialised 1UL (new Mlp(6L, [| 8; 8 |], 3L)) ]
            let data = gaussianBatches 13L 5L 6L 3L 2UL
            for name, model in models do
                for kind in perSampleKinds do
                    // Same seed on both sides: the draws of Sampled happen in the same order, so the labels agree.
                    use fast = Fisher.Compute(model, data, kind, new torch.Generator(11UL))
                    use naive = Fisher.NaiveLoop(model, data, kind, new torch.Generator(11UL))
                    Expect.equal fast.Samples 13L "N"
                    expectClose 1e-5 fast naive (sprintf "%s, %A" name kind)
                    if name.StartsWith "an MLP calling" then
                        Expect.isEmpty fast.Fallback (sprintf "%A: the identity covers every Linear seen by hooks: %s" kind (fast.Describe()))
        }

        test "Fisher of an nn.Sequential model (whose forward disposes intermediates) equals the per-sample reference loop for every kind (1e-5 relative), by the identity, leaving no tensor alive" {
            use model = initialised 3UL (sequentialMlp ())
            let data = gaussianBatches 13L 5L 8L 3L 4UL
            let live () = DisposeScopeManager.Statistics.ThreadTotalLiveCount
            let before = live ()
            for kind in [ FisherKind.Exact; FisherKind.Sampled; FisherKind.Empirical; FisherKind.Batched ] do
                // Same seed on both sides: the draws of Sampled happen in the same order, so the labels agree.
                let fast = Fisher.Compute(model, data, kind, new torch.Generator(11UL))
                Expect.equal (live ()) (before + int64 fast.Diagonal.Count) (sprintf "%A: live tensors = before + one per parameter" kind)
                use naive = Fisher.NaiveLoop(model, data, kind, new torch.Generator(11UL))
                Expect.equal fast.Samples 13L "N"
                Expect.isEmpty fast.Fallback (sprintf "%A: Sequential calls its Linears through Module.call, so the identity covers them: %s" kind (fast.Describe()))
                expectClose 1e-5 fast naive (sprintf "nn.Sequential, %A" kind)
                fast.Dispose()
        }

        test "the demo Mlp's Linear layers take the batched identity (G²)ᵀ(X²): no parameter falls back" {
            use model = initialised 1UL (new Mlp(6L, [| 8; 8 |], 3L))
            use result = Fisher.Compute(model, gaussianBatches 4L 4L 6L 3L 2UL, FisherKind.Empirical)
            Expect.isEmpty result.Fallback (result.Describe())
        }

        test "batched equals the square of mini-batch mean gradients computed by hand, averaged over batches (1e-5 relative)" {
            use model = initialised 1UL (new Mlp(6L, [| 8; 8 |], 3L))
            let data = gaussianBatches 13L 5L 6L 3L 3UL
            use result = Fisher.Compute(model, data, FisherKind.Batched)
            // By hand: backward of each sample's −log p(yᵢ|xᵢ) accumulates Σᵢ ∇ℓᵢ in .grad; ÷ B, square, sum, ÷ M.
            let parameters = model.named_parameters() |> Seq.map (fun struct (n, p) -> n, p) |> List.ofSeq
            let expected = parameters |> List.map (fun (n, p) -> n, torch.zeros(p.shape))
            for b in data do
                model.zero_grad()
                let rows = b.[Batch.Input].shape[0]
                for i in 0L .. rows - 1L do
                    torch.nn.functional.cross_entropy(model.forward(b.[Batch.Input].narrow(0L, i, 1L)), b.TargetsTensor.narrow(0L, i, 1L)).backward()
                for (_, p), (_, e) in List.zip parameters expected do
                    e.add_(p.grad.div((float rows).ToScalar()).square()) |> ignore
            Expect.equal result.Batches 3L "M = ⌈13 / 5⌉"
            for name, e in expected do
                let r = relDiff result.Diagonal[name] (e.div((3.0).ToScalar()))
                Expect.isLessThanOrEqual r 1e-5 (sprintf "%s: max|a − b| / max|b| = %.3g" name r)
        }

        test "the exact Fisher equals Σ_c p_θ(c|xᵢ) × the empirical Fisher of (xᵢ, c), averaged over samples (1e-5 relative)" {
            use model = initialised 4UL (new CallingMlp(6L, 8L, 3L))
            let data = gaussianBatches 4L 4L 6L 3L 5UL
            let x = data.Head.[Batch.Input]
            use exact = Fisher.Compute(model, data, FisherKind.Exact)
            let probs = using (torch.no_grad ()) (fun _ -> torch.nn.functional.softmax(model.forward x, 1L))
            let expected = exact.Diagonal |> Seq.map (fun (KeyValue(n, t)) -> n, torch.zeros_like t) |> dict
            for i in 0L .. 3L do
                for c in 0L .. 2L do
                    let one = Batch(x.narrow(0L, i, 1L), torch.tensor([| c |]))
                    use empirical = Fisher.Compute(model, [ one ], FisherKind.Empirical)
                    for KeyValue(n, t) in empirical.Diagonal do
                        expected[n].add_(t.mul(probs[i, c]).div((4.0).ToScalar())) |> ignore
            for KeyValue(n, e) in expected do
                let r = relDiff exact.Diagonal[n] e
                Expect.isLessThanOrEqual r 1e-5 (sprintf "%s: max|a − b| / max|b| = %.3g" n r)
        }

        test "the sampled Fisher over 4,000 draws per sample equals the exact Fisher (Monte Carlo: ‖S − E‖ / ‖E‖ < 0.05 over all parameters)" {
            use model = initialised 4UL (new CallingMlp(6L, 8L, 3L))
            let x = torch.randn([| 3L; 6L |], generator = new torch.Generator(6UL))
            let y = torch.zeros([| 3L |], dtype = torch.int64)
            use exact = Fisher.Compute(model, [ Batch(x, y) ], FisherKind.Exact)
            // Each sample repeated 4,000 times: Sampled then averages 4,000 independent draws ŷ ~ p_θ(·|xᵢ) per sample.
            let repeated = List.replicate 4 (Batch(x.repeat(1000L, 1L), y.repeat(1000L)))
            use sampled = Fisher.Compute(model, repeated, FisherKind.Sampled, new torch.Generator(7UL))
            let flat (r: FisherResult) = torch.cat([| for n in Seq.sort r.Diagonal.Keys -> r.Diagonal[n].flatten() |], 0L)
            let e, s = flat exact, flat sampled
            let error = ((s - e).norm().item<float32>() / e.norm().item<float32>()) |> float
            Expect.isLessThan error 0.05 (sprintf "relative L2 error %.4f" error)
        }

        test "the Fisher is ≥ 0 and zero for a parameter the loss does not depend on (an unused layer, the weights of an input fixed at 0)" {
            use model = initialised 8UL (new WithUnusedLayer(5L, 7L, 3L))
            let data = gaussianBatches 9L 4L 5L 3L 9UL
            for b in data do b.[Batch.Input].select(1L, 2L).zero_() |> ignore
            for kind in [ FisherKind.Exact; FisherKind.Sampled; FisherKind.Empirical; FisherKind.Batched ] do
                use r = Fisher.Compute(model, data, kind, new torch.Generator(1UL))
                for KeyValue(n, t) in r.Diagonal do
                    Expect.isGreaterThanOrEqual (t.min().item<float32>()) 0.0f (sprintf "%A, %s: min" kind n)
                for n in [ "unused.weight"; "unused.bias" ] do
                    Expect.equal (r.Diagonal[n].abs().max().item<float32>()) 0.0f (sprintf "%A, %s" kind n)
                Expect.equal (r.Diagonal["fc.weight"].select(1L, 2L).abs().max().item<float32>()) 0.0f (sprintf "%A, fc.weight[:, 2]" kind)
                Expect.isGreaterThan (r.Diagonal["fc.weight"].select(1L, 0L).max().item<float32>()) 0.0f (sprintf "%A, fc.weight[:, 0] is not zero" kind)
        }

        test "a transformer's shared-position layers use the stated fallback and still equal the naive loop (1e-5 relative)" {
            let shape = GptShape(Vocab = 20L, MaxLen = 6L, Width = 8L, Heads = 2L, Layers = 1L)
            use model = Gpt.Create(shape, new torch.Generator(2UL), classes = 3L)
            // A GPT reads its tokens as input_ids.
            let data =
                tokenBatches 5L 3L 6L 20L 3L 4UL
                |> List.map (fun b -> Batch([ System.Collections.Generic.KeyValuePair(Batch.InputIds, b.[Batch.Input]); System.Collections.Generic.KeyValuePair(Batch.Targets, b.TargetsTensor) ]))
            for kind in perSampleKinds do
                use fast = Fisher.Compute(model, data, kind, new torch.Generator(3UL))
                use naive = Fisher.NaiveLoop(model, data, kind, new torch.Generator(3UL))
                for KeyValue(n, _) in fast.Diagonal do
                    if not (n.StartsWith "head.") then
                        Expect.isTrue (fast.Fallback.ContainsKey n) (sprintf "%A: %s uses the per-sample fallback" kind n)
                        Expect.isNotEmpty fast.Fallback[n] (sprintf "%s: the reason is stated" n)
                expectClose 1e-5 fast naive (sprintf "transformer, %A" kind)
        }

        test "a Linear on [B, T, d] falls back as shared across positions, an embedding as having no identity, the 2-D head takes the identity: all equal the naive loop (1e-5 relative)" {
            use model = initialised 5UL (new SequenceModel(11L, 6L, 3L))
            let data = tokenBatches 7L 4L 5L 11L 3L 6UL
            for kind in perSampleKinds do
                use fast = Fisher.Compute(model, data, kind, new torch.Generator(3UL))
                use naive = Fisher.NaiveLoop(model, data, kind, new torch.Generator(3UL))
                Expect.stringContains fast.Fallback["mix.weight"] "shared across positions" "mix.weight"
                Expect.stringContains fast.Fallback["mix.bias"] "shared across positions" "mix.bias"
                Expect.stringContains fast.Fallback["embed.weight"] "Embedding" "embed.weight"
                Expect.isFalse (fast.Fallback.ContainsKey "head.weight" || fast.Fallback.ContainsKey "head.bias") "the head sees [B, d]"
                Expect.stringContains (fast.Describe()) "3 of 5 parameters by the per-sample fallback loop" "the description"
                expectClose 1e-5 fast naive (sprintf "sequence model, %A" kind)
        }

        test "maxSamples = 7 gives N = 7 and the Fisher of the first 7 samples (1e-6 relative)" {
            use model = initialised 1UL (new CallingMlp(6L, 8L, 3L))
            let data = gaussianBatches 13L 5L 6L 3L 2UL
            let cut = [ data[0]; Batch(data[1].[Batch.Input].narrow(0L, 0L, 2L), data[1].TargetsTensor.narrow(0L, 0L, 2L)) ]
            use limited = Fisher.Compute(model, data, FisherKind.Exact, maxSamples = 7L)
            use reference = Fisher.Compute(model, cut, FisherKind.Exact)
            Expect.equal limited.Samples 7L "N"
            Expect.equal limited.Batches 2L "M"
            expectClose 1e-6 limited reference "maxSamples"
        }

        test "the sampled Fisher without a generator is refused" {
            use model = initialised 1UL (new CallingMlp(6L, 8L, 3L))
            Expect.throwsT<System.ArgumentNullException> (fun () -> Fisher.Compute(model, gaussianBatches 4L 4L 6L 3L 2UL, FisherKind.Sampled) |> ignore) "no generator"
        }

        test "computing the Fisher leaves no tensor alive but its result" {
            use model = initialised 5UL (new SequenceModel(11L, 6L, 3L))
            let data = tokenBatches 7L 4L 5L 11L 3L 6UL
            let live () = DisposeScopeManager.Statistics.ThreadTotalLiveCount
            (Fisher.Compute(model, data, FisherKind.Exact)).Dispose()
            let before = live ()
            for kind in [ FisherKind.Exact; FisherKind.Sampled; FisherKind.Empirical; FisherKind.Batched ] do
                let fast = Fisher.Compute(model, data, kind, new torch.Generator(1UL))
                Expect.equal (live ()) (before + int64 fast.Diagonal.Count) (sprintf "%A: live tensors = before + one per parameter" kind)
                fast.Dispose()
                (Fisher.NaiveLoop(model, data, kind, new torch.Generator(1UL))).Dispose()
                Expect.equal (live ()) before (sprintf "%A: live tensors after disposing the results" kind)
        }
    ]
