/// The diagonal Fisher of a causal language model, teacher-forced and normalised over tokens (Fisher.cs's remarks):
/// F̂ = Σ_b g_b² / Σ_b n_b with g_b = ∇θ Σₜ mₜ log p_θ(y_bt | x_b,<t). Every reference here is written out in the test
/// (the shift by one position included), not taken from the task. Comparisons state max |a − b| / max |b| per tensor.
module Research.Tests.SequenceFisherTests

open System
open System.Collections.Generic
open Expecto
open TorchSharp
open Research.Abstractions
open Research.Core.Forgetting
open Research.Core.Models
open Research.Core.Tasks

type private Tensor = torch.Tensor

/// V = 7, T_max = 4, d = 8, 2 heads, 1 block: every position's V classes can be enumerated.
let private tiny = GptShape(Vocab = 7L, MaxLen = 4L, Width = 8L, Heads = 2L, Layers = 1L)

/// A tiny GPT whose token embedding is scaled ×30 (tied, so the logits too): GPT-2's N(0, 0.02²) start predicts
/// almost uniformly, and a peaked p_θ makes the classes' terms differ.
let private sharpGpt (seed: uint64) =
    let model = Gpt.Create(tiny, new torch.Generator(seed))
    use _ = torch.no_grad ()
    for struct (name, p) in model.named_parameters() do
        if name = "wte.weight" then p.mul_(30.0.ToScalar()) |> ignore
    model

/// The model with only its Linear layers (c_attn, c_proj, c_fc) trainable: embeddings and LayerNorms frozen.
let private linearsOnly (model: Gpt) =
    for struct (name, p) in model.named_parameters() do
        if not (name.Contains "c_attn" || name.Contains "c_proj" || name.Contains "c_fc") then p.requires_grad <- false
    model

/// A causal-LM batch as the text pipeline makes it: input_ids, attention_mask, and targets = the ids with −100 on the
/// right padding after each row's length, and at the extra `hidden` (row, position) targets (context-only tokens).
let private lmBatch (ids: Tensor) (lengths: int64 list) (hidden: (int64 * int64) list) =
    let t = ids.shape[1]
    let mask = torch.zeros([| ids.shape[0]; t |], dtype = torch.int64)
    let targets = ids.clone()
    for i, n in List.indexed lengths do
        mask[int64 i].narrow(0L, 0L, n).fill_(1L.ToScalar()) |> ignore
        if n < t then targets[int64 i].narrow(0L, n, t - n).fill_(Batch.IgnoreIndex.ToScalar()) |> ignore
    for row, position in hidden do targets[row, position] <- torch.tensor Batch.IgnoreIndex
    Batch([ KeyValuePair(Batch.InputIds, ids); KeyValuePair(Batch.AttentionMask, mask); KeyValuePair(Batch.Targets, targets) ])

let private randomIds (n: int64) (length: int64) (seed: uint64) =
    torch.randint(0L, tiny.Vocab, [| n; length |], dtype = torch.int64, generator = new torch.Generator(seed))

let private parameters (model: torch.nn.Module) = [ for struct (n, p) in model.named_parameters() do if p.requires_grad then yield n, (p :> Tensor) ]

/// (position t, target y) for every counted prediction of row `row`: position t scores token t + 1.
let private predictions (batch: Batch) (row: int64) =
    let targets = batch.TargetsTensor[row]
    [ for t in 0L .. targets.shape[0] - 2L do
        let y = targets[t + 1L].item<int64>()
        if y <> Batch.IgnoreIndex then yield t, y ]

/// Row `row` of the batch alone: its log-probabilities [T, V] (eval mode, gradients on).
let private logProbabilities (model: Gpt) (batch: Batch) (row: int64) =
    torch.nn.functional.log_softmax(model.forward(batch[Batch.InputIds].narrow(0L, row, 1L))[0L], 1L)

let private addSquare (sums: (string * Tensor) list) (grads: IList<Tensor>) (weight: float) =
    for (_, s), g in List.zip sums (List.ofSeq grads) do
        if not g.IsInvalid then s.add_(g.square().mul(weight.ToScalar())) |> ignore

let private relDiff (a: Tensor) (b: Tensor) =
    use _ = torch.NewDisposeScope()
    let scale = b.abs().max().item<float32>() |> float
    let diff = (a - b).abs().max().item<float32>() |> float
    if scale = 0.0 then diff else diff / scale

let private expectClose (tolerance: float) (actual: IReadOnlyDictionary<string, Tensor>) (expected: (string * Tensor) list) (what: string) =
    Expect.sequenceEqual (Seq.sort actual.Keys) (expected |> List.map fst |> List.sort) (what + ": parameter names")
    for name, e in expected do
        let r = relDiff actual[name] e
        Expect.isLessThanOrEqual r tolerance (sprintf "%s, %s: max|a − b| / max|b| = %.3g" what name r)

/// Σ_b (∇θ Σₜ log p_θ(x_b,t+1 | x_b,≤t))² / Σ_b n_b, one backward per sequence, the shift written out here.
let private bruteForceEmpirical (model: Gpt) (batches: Batch list) =
    let ps = parameters model
    let sums = ps |> List.map (fun (n, p) -> n, torch.zeros_like p)
    let mutable tokens = 0L
    model.eval()
    for batch in batches do
        for row in 0L .. batch.Size - 1L do
            use _ = torch.NewDisposeScope()
            let counted = predictions batch row
            if not counted.IsEmpty then
                let logp = logProbabilities model batch row
                let ll = counted |> List.map (fun (t, y) -> logp[t, y]) |> List.reduce (+)
                addSquare sums (torch.autograd.grad([| ll |], ps |> List.map snd |> Array.ofList, allow_unused = true)) 1.0
                tokens <- tokens + int64 counted.Length
    sums |> List.map (fun (n, s) -> n, s.div((float tokens).ToScalar())), tokens

/// The exact mean per-token Fisher, enumerating the V classes of every counted position independently:
/// Σ_b Σₜ Σ_c p_θ(c|x_b,≤t) (∇θ log p_θ(c|x_b,≤t))² / Σ_b n_b — the teacher-forced prefix is the real text.
let private exactPerToken (model: Gpt) (batch: Batch) =
    let ps = parameters model
    let sums = ps |> List.map (fun (n, p) -> n, torch.zeros_like p)
    let mutable tokens = 0L
    model.eval()
    for row in 0L .. batch.Size - 1L do
        for t, _ in predictions batch row do
            for c in 0L .. tiny.Vocab - 1L do
                use _ = torch.NewDisposeScope()
                let logp = logProbabilities model batch row
                let p = logp[t, c].exp().item<float32>() |> float
                addSquare sums (torch.autograd.grad([| logp[t, c] |], ps |> List.map snd |> Array.ofList, allow_unused = true)) p
            tokens <- tokens + 1L
    sums |> List.map (fun (n, s) -> n, s.div((float tokens).ToScalar()))

/// All tensors of a result (or of a reference), in name order, as one vector.
let private flat (named: seq<string * Tensor>) =
    torch.cat([| for _, t in Seq.sortBy fst named -> t.flatten() |], 0L)

let private named (d: IReadOnlyDictionary<string, Tensor>) = [ for KeyValue(n, t) in d -> n, t ]

let private bitwiseEqual (a: IReadOnlyDictionary<string, Tensor>) (b: IReadOnlyDictionary<string, Tensor>) =
    a.Keys |> Seq.forall (fun n -> a[n].eq(b[n]).all().item<bool>())

let tests =
    testList "sequence fisher" [
        test "empirical sequence Fisher = Σ_b (∇ Σₜ log p(x_b,t+1|x_b,≤t))² / Σ_b n_b of a brute-force per-sequence loop (Compute and NaiveLoop, 1e-5 relative), with padding and a context-only target" {
            use model = sharpGpt 1UL
            let data =
                [ lmBatch (randomIds 3L 4L 2UL) [ 4L; 2L; 3L ] [ (0L, 1L) ]
                  lmBatch (randomIds 2L 4L 3UL) [ 4L; 4L ] [] ]
            let expected, tokens = bruteForceEmpirical model data
            Expect.equal tokens (data |> List.sumBy (fun b -> CausalLmTask().Items b)) "the written-out shift counts what CausalLmTask counts"
            Expect.equal tokens 11L "2 + 1 + 2 + 3 + 3 predicted tokens"
            use fast = Fisher.Compute(model, data, FisherKind.Empirical, task = CausalLmTask())
            use naive = Fisher.NaiveLoop(model, data, FisherKind.Empirical, task = CausalLmTask())
            for what, r in [ "Compute", fast; "NaiveLoop", naive ] do
                Expect.equal r.Samples 5L (what + ": N sequences")
                Expect.equal r.Tokens (Nullable 11L) (what + ": Σ n_b")
                expectClose 1e-5 r.Diagonal expected what
            Expect.stringContains (fast.Describe()) "over 5 sequences / 11 tokens" "the description names sequences and tokens"
            Expect.stringContains fast.Fallback["wte.weight"] "Embedding" "the tied embedding falls back, with its reason"
            Expect.stringContains fast.Fallback["h.0.attn.c_attn.weight"] "shared across positions" "with the loop running anyway, so do the Linears"
        }

        test "with embeddings and LayerNorms frozen, every Linear of a GPT takes the identity Σ_b (δ_bᵀ X_b)² and equals the brute-force per-sequence loop (Sampled and Empirical, 1e-5 relative)" {
            use model = linearsOnly (sharpGpt 2UL)
            let data = [ lmBatch (randomIds 3L 4L 4UL) [ 4L; 3L; 4L ] [ (2L, 1L) ] ]
            let expected, _ = bruteForceEmpirical model data
            use fast = Fisher.Compute(model, data, FisherKind.Empirical, task = CausalLmTask())
            Expect.isEmpty fast.Fallback (fast.Describe())
            expectClose 1e-5 fast.Diagonal expected "Empirical by the identity"
            use sampled = Fisher.Compute(model, data, FisherKind.Sampled, new torch.Generator(5UL), task = CausalLmTask())
            use naive = Fisher.NaiveLoop(model, data, FisherKind.Sampled, new torch.Generator(5UL), task = CausalLmTask())
            Expect.isEmpty sampled.Fallback (sampled.Describe())
            expectClose 1e-5 sampled.Diagonal (named naive.Diagonal) "Sampled, same draws as the reference loop"
        }

        test "sampled sequence Fisher: the mean of K draws per position converges to the exact per-token Fisher Σ_b Σₜ Σ_c p_c (∇ log p_c)² / Σn (the cross terms vanish): RMS error × √K constant within 1.5× for K = 4, 16, 64, and the mean of all draws within 3 standard errors" {
            // Only the Linears train, so each estimate is one batched pass (the identity) and thousands of draws are cheap.
            use model = linearsOnly (sharpGpt 4UL)
            let batch = lmBatch (randomIds 2L 4L 5UL) [ 4L; 3L ] []
            let exact = flat (exactPerToken model batch)
            let scale = exact.norm().item<float32>() |> float
            let generator = new torch.Generator(6UL)
            let replicates = 24
            /// One estimate from K copies of the batch: Sampled then averages K independent draws at every position.
            let estimate (k: int64) =
                let copies = Batch([ for KeyValue(n, t) in batch -> KeyValuePair(n, t.repeat(k, 1L)) ])
                use r = Fisher.Compute(model, [ copies ], FisherKind.Sampled, generator, task = CausalLmTask())
                Expect.isEmpty r.Fallback "the identity covers every trainable parameter"
                flat (named r.Diagonal)
            let sizes = [ 4L; 16L; 64L ]
            let runs = [ for k in sizes -> k, [ for _ in 1 .. replicates -> estimate k ] ]
            let norm2 (t: Tensor) = t.norm().item<float32>() |> float |> fun e -> e * e
            // √(mean_r ‖S_r − E‖²) / ‖E‖: for an unbiased mean of K independent draws, √(tr Var₁ / K) / ‖E‖.
            let rms (estimates: Tensor list) = sqrt (estimates |> List.averageBy (fun s -> norm2 (s - exact))) / scale
            let scaled = [ for k, estimates in runs -> rms estimates * sqrt (float k) ]
            let ratio = List.max scaled / List.min scaled
            // Observed (these seeds): 2.16, 1.77, 1.97, ratio 1.22. Each RMS over 24 replicates is itself an estimate with
            // a relative spread of roughly 1/√(2·24) ≈ 0.14 or more (the squared errors are heavy-tailed), hence 1.5;
            // a biased estimator's ratio would grow like √(64/4) = 4.
            Expect.isLessThan ratio 1.5 (sprintf "RMS relative error × √K for K = %A: %A (ratio %.3f)" sizes scaled ratio)
            // All draws pooled (weights K); the standard error from the spread of the K = 64 replicates, scaled to the total.
            let total = sizes |> List.sumBy (fun k -> k * int64 replicates) |> float
            let pooled = (runs |> List.collect (fun (k, es) -> es |> List.map (fun s -> s.mul((float k).ToScalar()))) |> List.reduce (+)).div(total.ToScalar())
            let largest = snd (List.last runs)
            let mean = (List.reduce (+) largest).div((float replicates).ToScalar())
            let spread = sqrt ((largest |> List.sumBy (fun s -> norm2 (s - mean))) / float (replicates - 1))
            let standardError = spread * sqrt (64.0 / total)
            let error = (pooled - exact).norm().item<float32>() |> float
            // Observed: 0.86 standard errors (a relative error of 3.8% over 2,016 draws per position).
            Expect.isLessThan error (3.0 * standardError) (sprintf "‖pooled − exact‖ = %.3g, standard error %.3g (relative error %.4f)" error standardError (error / scale))
        }

        test "padding contributes nothing: other tokens at padded positions give a bitwise-equal Fisher (Sampled, Empirical, Batched), and the padded batch's Fisher = Σ_b n_b F_b / Σ_b n_b of its unpadded sequences (1e-5 relative)" {
            use model = sharpGpt 7UL
            let ids = randomIds 2L 4L 8UL
            let padded = lmBatch ids [ 4L; 2L ] []
            let otherIds = ids.clone()
            otherIds[1L].narrow(0L, 2L, 2L).copy_(ids[1L].narrow(0L, 2L, 2L).add(1L.ToScalar()).remainder(tiny.Vocab.ToScalar())) |> ignore
            let other = lmBatch otherIds [ 4L; 2L ] []
            Expect.isFalse (ids.eq(otherIds).all().item<bool>()) "the padded tokens differ"
            for kind in [ FisherKind.Sampled; FisherKind.Empirical; FisherKind.Batched ] do
                use a = Fisher.Compute(model, [ padded ], kind, new torch.Generator(9UL), task = CausalLmTask())
                use b = Fisher.Compute(model, [ other ], kind, new torch.Generator(9UL), task = CausalLmTask())
                Expect.isTrue (bitwiseEqual a.Diagonal b.Diagonal) (sprintf "%A: bitwise equal" kind)
                if kind <> FisherKind.Batched then Expect.equal a.Tokens (Nullable 4L) (sprintf "%A: 3 + 1 counted tokens, padding not counted" kind)
            use whole = Fisher.Compute(model, [ padded ], FisherKind.Empirical, task = CausalLmTask())
            let alone (row: int64) (length: int64) =
                let b = lmBatch (ids.narrow(0L, row, 1L).narrow(1L, 0L, length)) [ length ] []
                Fisher.Compute(model, [ b ], FisherKind.Empirical, task = CausalLmTask())
            use first = alone 0L 4L
            use second = alone 1L 2L
            Expect.equal (first.Tokens, second.Tokens) (Nullable 3L, Nullable 1L) "n_b"
            let combined = [ for KeyValue(n, f) in first.Diagonal -> n, f.mul(3.0.ToScalar()).add(second.Diagonal[n]).div(4.0.ToScalar()) ]
            expectClose 1e-5 whole.Diagonal combined "padded batch against its sequences"
        }

        test "the Exact Fisher of sequence logits is refused, naming Sampled; sequence logits without a task are refused" {
            use model = sharpGpt 1UL
            let data = [ lmBatch (randomIds 2L 4L 2UL) [ 4L; 4L ] [] ]
            Expect.throwsT<NotSupportedException> (fun () -> Fisher.NaiveLoop(model, data, FisherKind.Exact, task = CausalLmTask()) |> ignore) "NaiveLoop refuses too"
            let message =
                try Fisher.Compute(model, data, FisherKind.Exact, task = CausalLmTask()) |> ignore; ""
                with :? NotSupportedException as e -> e.Message
            Expect.stringContains message "FisherKind.Sampled" "the alternative is named"
            Expect.stringContains message "V^T = 7^4" "the size of the sum is stated"
            let noTask =
                try Fisher.Compute(model, data, FisherKind.Empirical) |> ignore; ""
                with :? NotSupportedException as e -> e.Message
            Expect.stringContains noTask "CausalLmTask" "without a task, the message says which to pass"
        }

        test "EWC's route: Fisher.Compute(model, batches, kind, generator, task = the run's CausalLmTask), as Trainer.TaskFisher calls it, gives a finite, non-negative Fisher for every GPT parameter and leaves no other tensor alive" {
            use model = Gpt.Create(GptShape(Vocab = 11L, MaxLen = 6L, Width = 8L, Heads = 2L, Layers = 2L), new torch.Generator(3UL))
            let ids = torch.randint(0L, 11L, [| 5L; 6L |], dtype = torch.int64, generator = new torch.Generator(4UL))
            let batches = [ lmBatch (ids.narrow(0L, 0L, 3L)) [ 6L; 5L; 2L ] []; lmBatch (ids.narrow(0L, 3L, 2L)) [ 6L; 6L ] [] ]
            let task : OutputTask = CausalLmTask()
            let live () = DisposeScopeManager.Statistics.ThreadTotalLiveCount
            (Fisher.Compute(model, batches, FisherKind.Empirical, task = task)).Dispose()
            let before = live ()
            for kind in [ FisherKind.Sampled; FisherKind.Empirical; FisherKind.Batched ] do
                use generator = new torch.Generator(5UL)
                use r = Fisher.Compute(model, batches, kind, generator, task = task)
                Expect.equal (live ()) (before + int64 r.Diagonal.Count) (sprintf "%A: live tensors = before + one per parameter" kind)
                use _ = torch.NewDisposeScope()
                Expect.equal r.Diagonal.Count (model.parameters() |> Seq.length) (sprintf "%A: every parameter" kind)
                for KeyValue(n, f) in r.Diagonal do
                    Expect.isTrue (torch.isfinite(f).all().item<bool>()) (sprintf "%A, %s: finite" kind n)
                    Expect.isGreaterThanOrEqual (f.min().item<float32>()) 0.0f (sprintf "%A, %s: ≥ 0" kind n)
                Expect.isGreaterThan (r.Diagonal["wte.weight"].max().item<float32>()) 0.0f (sprintf "%A: the tied embedding gets a Fisher" kind)
                Expect.equal r.Samples 5L "N"
                Expect.stringContains (r.Describe()) "over 5 sequences / 20 tokens" "the description"
        }
    ]
