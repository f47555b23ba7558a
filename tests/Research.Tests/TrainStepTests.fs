/// The training step as math: accumulation equals the full batch, clipping, flat-buffer views, precision.
module Research.Tests.TrainStepTests

open System
open Expecto
open TorchSharp
open Research.Abstractions
open Research.Core
open Research.Core.Models
open Research.Core.Optim
open Research.Core.Precision
open Research.Core.Training
open Research.Tests.TestSupport
open FsCheck

let mlp (seed: int64) =
    let m = new Mlp(8L, [| 16 |], 3L)
    use g = Seeds.Generator(seed, "init")
    Init.LinearDefault(m, g)
    m

let named (m: torch.nn.Module) = m.named_parameters() |> Seq.map (fun struct (n, p) -> struct (n, p :> torch.Tensor)) |> Array.ofSeq

/// Plain SGD with lr 1: the step's update is exactly −g, so θ_before − θ_after is the gradient used.
let sgd (m: torch.nn.Module) =
    Optimizer.Sgd(ParameterGroups.Assign(named m, GroupRule.DecayByRank 0.0))

let private flatValues (o: Optimizer) = o.Master.detach().clone()

let relative (a: torch.Tensor) (b: torch.Tensor) =
    use d = (a - b).norm()
    use n = b.norm()
    d.item<float32>() / n.item<float32>() |> float

/// N random items with labels in {0,1,2}, about a fifth of them ignored (-100, as padding is).
let private data (gen: torch.Generator) (n: int64) =
    let x = torch.randn([| n; 8L |], generator = gen)
    let y = torch.randint(0L, 3L, [| n |], generator = gen)
    let ignored = torch.rand([| n |], generator = gen).lt(torch.tensor 0.2f)
    y.masked_fill_(ignored, Batch.IgnoreIndex) |> ignore
    y[0] <- torch.tensor 0L // at least one counted item
    x, y

/// Cuts [0, n) into k parts of random, uneven sizes ≥ 1.
let private cuts (rng: Random) (n: int) (k: int) =
    let points = Seq.initInfinite (fun _ -> rng.Next(1, n)) |> Seq.distinct |> Seq.take (k - 1) |> Seq.sort |> List.ofSeq
    let bounds = 0 :: points @ [ n ]
    List.pairwise bounds |> List.map (fun (a, b) -> int64 a, int64 (b - a))

let private window (x: torch.Tensor) (y: torch.Tensor) parts =
    [| for (start, len) in parts -> Batch(x.narrow(0L, start, len), y.narrow(0L, start, len)) |]

/// The gradient one TrainStep applies to a fresh copy of the model over the given window (lr 1, SGD).
let private stepGradient (seed: int64) (batches: Batch[]) =
    use m = mlp seed
    use o = sgd m
    let before = flatValues o
    let outcome = TrainStep(m, o, PrecisionPolicy.Fp32, MethodSet.None, 0.0).Run(batches, 1.0)
    before.sub_(o.Master) |> ignore
    before, outcome

let accumulationTests =
    testList "accumulation" [
        testPropertyWithConfig propConfig "accumulating uneven micro-batches with padding equals one full batch: ‖Δ‖/‖g‖ ≤ 1e-5 (float32)"
          <| fun (seed: int) (sizeSeed: PositiveInt) (kSeed: PositiveInt) ->
            use _ = torch.NewDisposeScope()
            let rng = Random(seed)
            let n = 8 + sizeSeed.Get % 57
            let k = 2 + kSeed.Get % (min 6 (n - 1))
            use gen = new torch.Generator(uint64 (uint32 seed))
            let x, y = data gen (int64 n)
            let full, outFull = stepGradient 11L [| Batch(x, y) |]
            let accumulated, outAcc = stepGradient 11L (window x y (cuts rng n k))
            Expect.equal outAcc.Items outFull.Items "N counts every target item of the window, ignored ones excluded"
            let error = relative accumulated full
            if not (error <= 1e-5) then failtestf "‖Δ‖/‖g‖ = %g with %d micro-batches of %d items" error k n

        test "dividing each micro-batch mean by k does not equal the full batch when micro-batches are uneven" {
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(5UL)
            let x, y = data gen 40L
            let parts = [ 0L, 4L; 4L, 30L; 34L, 6L ]
            let full, _ = stepGradient 11L [| Batch(x, y) |]
            // The seed chapter's rule: loss_i = mean over micro-batch i, divided by k, summed by backward.
            use m = mlp 11L
            for (start, len) in parts do
                let logits = m.forward(x.narrow(0L, start, len))
                let mean = torch.nn.functional.cross_entropy(logits, y.narrow(0L, start, len), ignore_index = Batch.IgnoreIndex)
                mean.div(torch.tensor (float32 parts.Length)).backward()
            // Flat buffers order parameters by group (decay first); order the naive gradient the same way.
            use o = sgd (mlp 11L)
            let order = o.Buffer.Slots |> Seq.map (fun s -> s.Name) |> List.ofSeq
            let byName = dict [ for struct (n, p) in m.named_parameters() -> n, p.grad.flatten() ]
            let naiveOrdered = torch.cat([| for n in order -> byName[n] |], 0L)
            let error = relative naiveOrdered full
            Expect.isGreaterThan error 1e-2 (sprintf "dividing by k is off by %g relative" error)
        }

        test "the short last window of an epoch is normalised by its own item count" {
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(9UL)
            let x, y = data gen 10L
            y.fill_(1L) |> ignore
            use ds = new Research.Core.Data.TensorDataset(x, y, 3)
            use order = new torch.Generator(1UL)
            let windows = ds.ShuffledWindows(3, 2, order) |> Seq.map (fun w -> w |> Seq.map (fun b -> b.TargetsTensor.shape[0]) |> List.ofSeq) |> List.ofSeq
            Expect.equal windows [ [ 3L; 3L ]; [ 3L; 1L ] ] "10 items, batch 3, k = 2: the last window is kept, with 4 items"
            Expect.equal (ds.WindowsPerEpoch(3, 2)) 2L "two optimizer steps per epoch"
            // A window's tensors live until the next window is asked for: copy the last one while it lives.
            let kept =
                ds.ShuffledWindows(3, 2, new torch.Generator(1UL))
                |> Seq.map (fun w -> w |> Array.ofSeq |> Array.map (fun b -> Batch(b.[Batch.Input].clone(), b.TargetsTensor.clone())))
                |> Seq.last
            let g, outcome = stepGradient 3L kept
            Expect.equal outcome.Items 4L "N = 4, not k·batch = 6"
            let joined = Batch(torch.cat([| for b in kept -> b.[Batch.Input] |], 0L), torch.cat([| for b in kept -> b.TargetsTensor |], 0L))
            let full, _ = stepGradient 3L [| joined |]
            Expect.isLessThanOrEqual (relative g full) 1e-5 "equals the gradient of those 4 items as one batch"
        }
    ]

/// R(θ) = c/2·‖θ‖² over every parameter: its gradient is c·θ.
type private HalfSquaredNorm(c: float32) =
    interface IPenalty with
        member _.Penalty(context) =
            context.Parameters |> Seq.map (fun p -> p.Value.pow(torch.tensor 2.0f).sum()) |> Seq.reduce (+) |> fun s -> s.mul(torch.tensor (c / 2.0f))

let penaltyTests =
    testList "penalty" [
        test "a regularizer's penalty is added once per window, in fp32, not divided by the item count: its gradient c·θ appears exactly once" {
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(12UL)
            let x, y = data gen 30L
            let parts = [ 0L, 7L; 7L, 13L; 20L, 10L ]
            let gradient (methods: obj[]) =
                use m = mlp 4L
                use o = sgd m
                let before = flatValues o
                TrainStep(m, o, PrecisionPolicy.Fp32, MethodSet.Of methods, 0.0).Run(window x y parts, 1.0) |> ignore
                before.sub_(o.Master)
            let plain = gradient [||]
            let withPenalty = gradient [| box (HalfSquaredNorm(0.5f)) |]
            use o = sgd (mlp 4L)          // θ before the step, laid out as the buffers are
            let expected = plain.add(o.Master.mul(torch.tensor 0.5f))
            Expect.isLessThanOrEqual (relative withPenalty expected) 1e-6 "g + c·θ, once (not k times, not divided by N)"
        }
    ]

let clippingTests =
    testList "clipping" [
        test "clipping by global norm scales the gradient to norm c, and the step reports the norm before clipping" {
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(4UL)
            let x, y = data gen 32L
            let g, unclipped = stepGradient 2L [| Batch(x, y) |]
            use m = mlp 2L
            use o = sgd m
            let before = flatValues o
            let c = unclipped.GradNorm / 4.0
            let clipped = TrainStep(m, o, PrecisionPolicy.Fp32, MethodSet.None, c).Run([| Batch(x, y) |], 1.0)
            before.sub_(o.Master) |> ignore
            Expect.floatClose Accuracy.medium clipped.GradNorm unclipped.GradNorm "pre-clip norm reported"
            Expect.floatClose Accuracy.medium (before.norm().item<float32>() |> float) c "‖g‖ after clipping = c (1e-6 slack)"
            Expect.isLessThanOrEqual (relative (before.mul(torch.tensor 4.0f)) g) 1e-5 "same direction"
        }
    ]

let flatBufferTests =
    testList "flat buffers" [
        test "parameters and gradients are views into one buffer per dtype; the optimizer's zero_grad keeps them" {
            use m = mlp 1L
            use o = sgd m
            o.Buffer.CheckViews()
            Expect.equal o.Buffer.Count (m.parameters() |> Seq.sumBy (fun p -> p.numel())) "one buffer holds every parameter"
            use gen = new torch.Generator(3UL)
            let x, y = data gen 16L
            TrainStep(m, o, PrecisionPolicy.Fp32, MethodSet.None, 0.0).Run([| Batch(x, y) |], 0.1) |> ignore
            o.Buffer.CheckViews()
            Expect.equal (o.Buffer.Grads.abs().sum().item<float32>()) 0.0f "zeroed in place"
        }
        test "Module.zero_grad() (set to none) is detected, naming the parameter" {
            use m = mlp 1L
            use o = sgd m
            m.zero_grad()
            try o.Buffer.CheckViews(); failtest "not detected"
            with :? InvalidOperationException as e -> Expect.stringContains e.Message "gradient of 'layers.0.weight'" "named"
        }
        test "replacing a parameter's storage (.to(dtype) round trip) is detected, naming the parameter" {
            use m = mlp 1L
            use o = sgd m
            m.``to``(torch.float64).``to``(torch.float32) |> ignore
            try o.Buffer.CheckViews(); failtest "not detected"
            with :? InvalidOperationException as e -> Expect.stringContains e.Message "no longer lies in its flat buffer" "named"
        }
        test "optimizer state is addressable by parameter name and is a view of the flat moments" {
            use m = mlp 1L
            use o = Optimizer.AdamW(ParameterGroups.Assign(named m, GroupRule.DecayByRank 0.01))
            use gen = new torch.Generator(3UL)
            let x, y = data gen 16L
            TrainStep(m, o, PrecisionPolicy.Fp32, MethodSet.None, 0.0).Run([| Batch(x, y) |], 1e-3) |> ignore
            let v = o.StateOf("head.bias", "exp_avg_sq")
            Expect.equal v.shape [| 3L |] "shape of head.bias"
            Expect.isGreaterThan (v.sum().item<float32>()) 0.0f "second moment after one step"
            v.zero_() |> ignore
            let flat = o.State() |> Seq.find (fun struct (slot, _) -> slot = "exp_avg_sq") |> fun struct (_, t) -> t
            let slot = o.Buffer.Slots |> Seq.find (fun s -> s.Name = "head.bias")
            Expect.equal (flat.narrow(0L, slot.Offset, slot.Count).abs().sum().item<float32>()) 0.0f "writes reach the flat state"
        }
    ]

let fusedTests =
    testList "fused AdamW" [
        test "the fused in-place AdamW step equals the composed chain (Adam → decoupled decay → −η) within 1e-6 over 20 steps, two groups" {
            use _ = torch.NewDisposeScope()
            use a = mlp 5L
            use b = mlp 5L
            use composed = Optimizer.AdamW(ParameterGroups.Assign(named a, GroupRule.DecayByRank 0.1))
            use fused = Optimizer.AdamW(ParameterGroups.Assign(named b, GroupRule.DecayByRank 0.1))
            use gen = new torch.Generator(8UL)
            for i in 1 .. 20 do
                let x, y = data gen 24L
                for (m, o, fusedPath) in [ a, composed, false; b, fused, true ] do
                    o.ZeroGrad()
                    torch.nn.functional.cross_entropy(m.forward(x), y, ignore_index = Batch.IgnoreIndex).backward()
                    o.Step(1e-2 / float i, returnDelta = not fusedPath) |> ignore
            Expect.isLessThanOrEqual (relative fused.Master composed.Master) 1e-6 "‖Δθ‖/‖θ‖"
            Expect.isGreaterThan (relative composed.Master (flatValues (sgd (mlp 5L)))) 1e-3 "the parameters moved"
        }
    ]

let sgdTests =
    testList "sgd" [
        for momentum, nesterov in [ 0.0, false; 0.9, false; 0.9, true ] ->
            test (sprintf "SGD (momentum %g, nesterov %b, L2 1e-2) equals TorchSharp's SGD within 1e-6 over 50 recorded gradients" momentum nesterov) {
                use _ = torch.NewDisposeScope()
                use gen = new torch.Generator(21UL)
                let shapes = [ [| 6L; 4L |]; [| 4L |] ]
                let init = [ for s in shapes -> torch.randn(s, generator = gen) ]
                let ours = [ for t in init -> t.clone().requires_grad_(true) ]
                let theirs = [ for t in init -> torch.nn.Parameter(t.clone()) ]
                let rule = [| GroupRule(ParameterGroup("all", 1.0, 1e-2), Func<string, torch.Tensor, bool>(fun _ _ -> true)) |]
                use o = Optimizer.Sgd(ParameterGroups.Assign([| struct ("w", ours[0]); struct ("b", ours[1]) |], rule), momentum, nesterov)
                let reference = torch.optim.SGD(theirs, 0.05, momentum, 0.0, 1e-2, nesterov)
                for _ in 1 .. 50 do
                    let gs = [ for s in shapes -> torch.randn(s, generator = gen) ]
                    o.ZeroGrad()
                    for p, g in List.zip ours gs do (p * g).sum().backward()
                    o.Step(0.05) |> ignore
                    reference.zero_grad()
                    for p, g in List.zip theirs gs do (p * g).sum().backward()
                    reference.step() |> ignore
                let a = torch.cat([| for p in ours -> p.detach().flatten() |], 0L)
                let b = torch.cat([| for p in theirs -> p.detach().flatten() |], 0L)
                Expect.isLessThanOrEqual (relative a b) 1e-6 "‖Δθ‖/‖θ‖"
            }
    ]

let precisionTests =
    testList "precision" [
        test "an injected inf skips the step: weights, moments and the step count stay, the loss scale halves" {
            use _ = torch.NewDisposeScope()
            use m = mlp 1L
            let policy = PrecisionPolicy(PrecisionMode.Fp16, DynamicLossScaler(1024.0, growthInterval = 100))
            policy.Prepare(m)
            use o = Optimizer.AdamW(ParameterGroups.Assign(named m, GroupRule.DecayByRank 0.01))
            use gen = new torch.Generator(3UL)
            let x, y = data gen 16L
            let step = TrainStep(m, o, policy, MethodSet.None, 0.0)
            Expect.isTrue (step.Run([| Batch(x, y) |], 1e-3).Applied) "a finite step is applied"
            let weights, master = o.Buffer.Values.clone(), o.Master.detach().clone()
            let moments = [ for struct (_, t) in o.State() -> t.clone() ]
            let count = o.StepCount
            x[0, 0] <- torch.tensor Single.PositiveInfinity
            let outcome = step.Run([| Batch(x, y) |], 1e-3)
            Expect.isFalse outcome.Applied "skipped"
            Expect.isTrue (torch.eq(o.Buffer.Values, weights).all().item<bool>()) "fp16 weights untouched"
            Expect.isTrue (torch.eq(o.Master, master).all().item<bool>()) "master weights untouched"
            for (before, struct (_, after)) in List.zip moments (List.ofSeq (o.State())) do
                Expect.isTrue (torch.eq(before, after).all().item<bool>()) "moments untouched"
            Expect.equal o.StepCount count "the step count (hence the schedule) does not advance"
            Expect.equal policy.Scaler.Scale 512.0 "scale halved"
            Expect.equal policy.Scaler.SkippedSteps 1L "one skipped step"
        }
        test "the loss scale doubles after growth_interval finite steps" {
            let s = DynamicLossScaler(8.0, growthInterval = 3)
            let applied = [ for _ in 1 .. 3 -> s.Update true ]
            Expect.equal applied [ true; true; true ] "applied"
            Expect.equal s.Scale 16.0 "doubled"
            s.Update false |> ignore
            Expect.equal (s.Scale, s.GoodSteps) (8.0, 0) "backoff resets the run of good steps"
        }
        test "in bf16 mode the module's parameters and activations are bf16; master weights, gradients and moments are fp32" {
            use _ = torch.NewDisposeScope()
            use m = mlp 1L
            let policy = PrecisionPolicy(PrecisionMode.Bf16)
            policy.Prepare(m)
            use o = Optimizer.AdamW(ParameterGroups.Assign(named m, GroupRule.DecayByRank 0.01))
            use gen = new torch.Generator(3UL)
            let x, y = data gen 16L
            for struct (n, p) in m.named_parameters() do Expect.equal p.dtype torch.bfloat16 (sprintf "%s is bf16" n)
            let hidden = m.forward(policy.Input x)
            Expect.equal hidden.dtype torch.bfloat16 "activations are bf16"
            Expect.equal (PrecisionPolicy.Output hidden).dtype torch.float32 "the loss sees fp32 logits"
            TrainStep(m, o, policy, MethodSet.None, 0.0).Run([| Batch(x, y) |], 1e-3) |> ignore
            Expect.equal o.Master.dtype torch.float32 "master weights"
            Expect.equal o.MasterGrad.dtype torch.float32 "master gradient"
            for struct (slot, t) in o.State() do Expect.equal t.dtype torch.float32 (sprintf "%s is fp32" slot)
            Expect.isTrue o.HasMasterCopy "a master copy exists"
            let back = o.Master.``to``(torch.bfloat16)
            Expect.isTrue (torch.eq(back, o.Buffer.Values).all().item<bool>()) "the module holds the master weights rounded to bf16"
        }
        test "normalisation stays in fp32 under bf16: libtorch's layer norm of a bf16 input and bf16 parameters equals the fp32 layer norm rounded once to bf16" {
            // libtorch's CPU kernel accumulates bf16 statistics in fp32 (its "opmath" type), so nn.LayerNorm needs no
            // wrapper for the policy's "normalisation in fp32"; this test would catch a kernel that did not.
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(6UL)
            let ln = torch.nn.LayerNorm([| 64L |])
            PrecisionPolicy(PrecisionMode.Bf16).Prepare(ln)
            let x = torch.randn([| 8L; 64L |], generator = gen).mul(torch.tensor 30.0f).add(torch.tensor 1000.0f).``to``(torch.bfloat16)
            let y = ln.forward(x)
            Expect.equal y.dtype torch.bfloat16 "the output keeps the compute dtype"
            let reference = torch.nn.functional.layer_norm(x.``to``(torch.float32), [| 64L |]).``to``(torch.bfloat16)
            Expect.isTrue (torch.eq(y, reference).all().item<bool>()) "statistics in fp32, one rounding at the end"
            // Computed in bf16 throughout, the mean of values near 1000 (spacing 4 in bf16) would be visibly off:
            let naiveMean = x.sum(1L, true, torch.bfloat16).div(torch.tensor(64.0f).``to``(torch.bfloat16))
            let exactMean = x.``to``(torch.float32).mean([| 1L |], true)
            Expect.isGreaterThan ((naiveMean.``to``(torch.float32) - exactMean).abs().max().item<float32>()) 0.1f "bf16 accumulation would lose digits"
        }
        test "a bf16 step of the small transformer keeps master weights and moments in fp32" {
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(2UL)
            use m = Gpt.Create(GptShape(Vocab = 32L, MaxLen = 8L, Width = 16L, Heads = 2L, Layers = 2L), gen, classes = 3L)
            let policy = PrecisionPolicy(PrecisionMode.Bf16)
            policy.Prepare(m)
            use o = Optimizer.AdamW(ParameterGroups.Assign(named m, GroupRule.DecayByRank 0.01))
            let x = torch.randint(0L, 32L, [| 4L; 8L |], generator = gen)
            let y = torch.randint(0L, 3L, [| 4L |], generator = gen)
            let batch = Batch([ Collections.Generic.KeyValuePair(Batch.InputIds, x); Collections.Generic.KeyValuePair(Batch.Targets, y) ])
            let outcome = TrainStep(m, o, policy, MethodSet.None, 0.0).Run([| batch |], 1e-3)
            Expect.isTrue outcome.Applied "applied"
            Expect.isTrue (Double.IsFinite outcome.Loss) "finite loss"
            Expect.equal o.Master.dtype torch.float32 "master"
            for struct (slot, t) in o.State() do Expect.equal t.dtype torch.float32 (sprintf "%s is fp32" slot)
        }
        test "a tiny update that pure-bf16 weights lose is kept by the fp32 master copy" {
            use _ = torch.NewDisposeScope()
            // bf16 has 8 bits of mantissa: next to 1.0 its spacing is 2⁻⁷ ≈ 0.0078, so 1 − 1e-4 rounds back to 1.
            let pureBf16 = torch.ones([| 4L |], dtype = torch.bfloat16)
            for _ in 1 .. 100 do pureBf16.sub_(torch.tensor(1e-4f).``to``(torch.bfloat16)) |> ignore
            Expect.equal (pureBf16[0].``to``(torch.float32).item<float32>()) 1.0f "pure bf16 loses all 100 updates"
            let p = torch.ones([| 4L |], dtype = torch.bfloat16).requires_grad_(true)
            let rule = [| GroupRule(ParameterGroup("all", 1.0, 0.0), Func<string, torch.Tensor, bool>(fun _ _ -> true)) |]
            use o = Optimizer.Sgd(ParameterGroups.Assign([| struct ("p", p) |], rule))
            for _ in 1 .. 100 do
                o.ZeroGrad()
                p.sum().backward()            // g = 1
                o.AccumulateMicroBatch()
                o.Step(1e-4) |> ignore         // θ ← θ − 1e-4
            Expect.floatClose Accuracy.medium (o.Master[0].item<float32>() |> float) 0.99 "the master copy moved by 100 × 1e-4"
            // Below 1.0 bf16's spacing is 2⁻⁸: 0.99 lies between 0.98828125 and 0.9921875, nearer the first.
            Expect.equal (p[0].detach().``to``(torch.float32).item<float32>()) 0.98828125f "the bf16 copy follows it (0.99 rounded to bf16)"
        }
    ]

let tests = testList "training step" [ accumulationTests; penaltyTests; clippingTests; flatBufferTests; fusedTests; sgdTests; precisionTests ]
