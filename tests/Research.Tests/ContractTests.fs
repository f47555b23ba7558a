/// Contract 2.0 in the core: batches of named tensors, tasks that own their loss over the last axis, and the step's
/// method roles (loss terms, split gradients, gradient hooks, step observers) with the ownership rule.
module Research.Tests.ContractTests

open System
open System.Collections.Generic
open Expecto
open TorchSharp
open Research.Abstractions
open Research.Core
open Research.Core.Models
open Research.Core.Optim
open Research.Core.Precision
open Research.Core.Tasks
open Research.Core.Training
open Research.Plugins.Methods
open Research.Tests.TestSupport
// The step's fixtures: an MLP 8-16-3 from a seed, plain SGD (θ_before − θ_after is the gradient at lr 1), relative error.
open Research.Tests.TrainStepTests

let private kv (name: string) (t: torch.Tensor) = KeyValuePair(name, t)

let batchTests =
    testList "batch" [
        test "Concat right-pads token tensors to the longest (targets with −100, the rest with 0), keeps row order, and N counts only real targets" {
            use _ = torch.NewDisposeScope()
            let tokens (rows: int64[][]) = torch.tensor(Array.concat rows).reshape(int64 rows.Length, int64 rows[0].Length)
            let a = Batch([ kv Batch.InputIds (tokens [| [| 1L; 2L; 3L |] |]); kv Batch.Targets (tokens [| [| 1L; 2L; 3L |] |]) ])
            let b = Batch([ kv Batch.InputIds (tokens [| [| 4L; 5L |] |]); kv Batch.Targets (tokens [| [| 4L; 5L |] |]) ])
            let c = Batch.Concat([| a; b |])
            Expect.equal (c[Batch.InputIds].shape) [| 2L; 3L |] "padded to 3"
            Expect.equal (c[Batch.InputIds].data<int64>().ToArray()) [| 1L; 2L; 3L; 4L; 5L; 0L |] "inputs padded with 0"
            Expect.equal (c.TargetsTensor.data<int64>().ToArray()) [| 1L; 2L; 3L; 4L; 5L; -100L |] "targets padded with −100"
            Expect.equal c.Items 5L "N = 5 real targets"
            Expect.equal c.Size 2L "B = 2"
        }
        test "a batch whose tensors disagree on the batch dimension is refused naming both; a missing name lists the names there are" {
            use _ = torch.NewDisposeScope()
            try
                Batch(torch.zeros(3L, 2L), torch.zeros([| 4L |], dtype = torch.int64)) |> ignore
                failtest "accepted"
            with :? ArgumentException as e -> Expect.stringContains e.Message "'input' has 3, 'targets' has 4" "names both"
            let b = Batch(torch.zeros(3L, 2L), torch.zeros([| 3L |], dtype = torch.int64))
            try b[Batch.Image] |> ignore; failtest "no image"
            with :? KeyNotFoundException as e -> Expect.stringContains e.Message "it has: input, targets" "names the tensors there are"
            Expect.equal (b.Select(torch.tensor([| 2L; 0L |])).Size) 2L "Select takes rows"
        }
    ]

let taskTests =
    testList "tasks" [
        test "causal LM: the loss is the cross-entropy of logits[:, :−1] against targets[:, 1:], −100 ignored, and N counts the predicted tokens (1e-6)" {
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(5UL)
            let logits = torch.randn([| 2L; 4L; 7L |], generator = gen)
            let targets = torch.randint(0L, 7L, [| 2L; 4L |], generator = gen)
            targets[1L, 3L] <- torch.tensor -100L
            let batch = Batch([ kv Batch.InputIds (targets.clamp_min(0L)); kv Batch.Targets targets ])
            let task = CausalLmTask()
            let mutable expected = 0.0
            for b in 0L .. 1L do
                for t in 0L .. 2L do
                    let y = targets[b, t + 1L].item<int64>()
                    if y <> -100L then
                        let logp = torch.nn.functional.log_softmax(logits[b, t], 0L)
                        expected <- expected - (logp[y].item<float32>() |> float)
            Expect.floatClose { absolute = 1e-5; relative = 1e-6 } (task.LossSum(logits, batch).item<float32>() |> float) expected "Σ −log p(y_{t+1})"
            Expect.equal (task.Items batch) 5L "6 predicted positions, one ignored"
        }
        test "classification reads the class axis last: [B, T, C] logits against [B, T] targets equal the flattened rows (1e-6)" {
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(6UL)
            let logits = torch.randn([| 3L; 4L; 5L |], generator = gen)
            let targets = torch.randint(0L, 5L, [| 3L; 4L |], generator = gen)
            let batch = Batch([ kv Batch.InputIds targets; kv Batch.Targets targets ])
            let flat = torch.nn.functional.cross_entropy(logits.reshape(-1L, 5L), targets.reshape(-1L), reduction = torch.nn.Reduction.Sum)
            Expect.floatClose Accuracy.high (ClassificationTask().LossSum(logits, batch).item<float32>() |> float) (flat.item<float32>() |> float) "rows"
            let perItem = ClassificationTask().PerItemLoss(logits, batch)
            Expect.equal perItem.shape [| 12L |] "one loss per position"
        }
    ]

/// R(θ) = c/2·‖θ‖²: its gradient is c·θ.
type private HalfSquaredNorm(c: float32) =
    interface IPenalty with
        member _.Penalty(context) =
            context.Parameters |> Seq.map (fun p -> p.Value.square().sum()) |> Seq.reduce (+) |> fun s -> s.mul(torch.tensor (c / 2.0f))

/// Keeps clones of the last step's task and total gradients — in plain fields, kept by returning them from StateDict.
type private Recorder() =
    let mutable state = Map.empty<string, torch.Tensor>
    member _.State = state
    interface IStepObserver with
        member _.AfterStep(context) =
            let flat (ts: IReadOnlyList<torch.Tensor>) = torch.cat([| for t in ts -> t.reshape(-1L) |], 0L)
            state <- Map [ "task", flat context.TaskGradient; "total", flat context.TotalGradient; "delta", flat context.Deltas ]
    interface IStateful with
        member _.StateDict() = state |> Map.toSeq |> dict |> Dictionary :> _
        member _.LoadStateDict(s) = state <- s |> Seq.map (fun kv -> kv.Key, kv.Value) |> Map.ofSeq

/// Sets the task gradient to zero before the update (a projection that removes all of it).
type private ZeroTask() =
    interface IGradientHook with
        member _.BeforeUpdate(context) = for g in context.TaskGradient do g.zero_() |> ignore

let stepTests =
    testList "method roles in the step" [
        test "a step observer sees ∇ of the task loss alone as TaskGradient, and TotalGradient = TaskGradient + the penalty's c·θ = −Δθ at lr 1 (1e-6)" {
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(2UL)
            let x, y = torch.randn([| 24L; 8L |], generator = gen), torch.randint(0L, 3L, [| 24L |], generator = gen)
            let window = [| Batch(x.narrow(0L, 0L, 10L), y.narrow(0L, 0L, 10L)); Batch(x.narrow(0L, 10L, 14L), y.narrow(0L, 10L, 14L)) |]
            let plainGradient =
                use m = mlp 1L
                use o = sgd m
                let before = o.Master.detach().clone()
                TrainStep(m, o, PrecisionPolicy.Fp32, MethodSet.None, 0.0).Run(window, 1.0) |> ignore
                before.sub_(o.Master)
            use m = mlp 1L
            use o = sgd m
            let theta = o.Master.detach().clone()
            let recorder = Recorder()
            TrainStep(m, o, PrecisionPolicy.Fp32, MethodSet.Of(HalfSquaredNorm(0.5f), recorder), 0.0).Run(window, 1.0) |> ignore
            let s = recorder.State
            Expect.isLessThanOrEqual (relative s["task"] plainGradient) 1e-6 "the task gradient is the plain step's gradient"
            Expect.isLessThanOrEqual (relative s["total"] (plainGradient + theta.mul(torch.tensor 0.5f))) 1e-6 "total = task + c·θ"
            Expect.isLessThanOrEqual (relative (s["delta"].neg()) s["total"]) 1e-6 "SGD at lr 1: Δθ = −g"
        }
        test "a gradient hook changes the task gradient in place before the update: zeroing it leaves the penalty's c·θ alone (1e-6)" {
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(3UL)
            let x, y = torch.randn([| 16L; 8L |], generator = gen), torch.randint(0L, 3L, [| 16L |], generator = gen)
            use m = mlp 2L
            use o = sgd m
            let before = o.Master.detach().clone()
            TrainStep(m, o, PrecisionPolicy.Fp32, MethodSet.Of(HalfSquaredNorm(0.25f), ZeroTask()), 0.0).Run([| Batch(x, y) |], 1.0) |> ignore
            Expect.isLessThanOrEqual (relative (before - o.Master) (before.mul(torch.tensor 0.25f))) 1e-6 "θ moved by −c·θ only"
        }
        test "penalty-only methods keep the plain step: with a zero penalty the update is bitwise the plain AdamW update (fused path)" {
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(4UL)
            let x, y = torch.randn([| 16L; 8L |], generator = gen), torch.randint(0L, 3L, [| 16L |], generator = gen)
            let after (methods: MethodSet) =
                use m = mlp 3L
                use o = Optimizer.AdamW(ParameterGroups.Assign(m.named_parameters() |> Seq.map (fun struct (n, p) -> struct (n, p :> torch.Tensor)), GroupRule.DecayByRank 0.01))
                let step = TrainStep(m, o, PrecisionPolicy.Fp32, methods, 0.0)
                for _ in 1 .. 3 do step.Run([| Batch(x, y) |], 1e-2) |> ignore
                o.Master.detach().clone()
            let plain, withZeroPenalty = after MethodSet.None, after (MethodSet.Of(HalfSquaredNorm(0.0f)))
            Expect.isTrue (plain.eq(withZeroPenalty).all().item<bool>()) "bitwise equal"
        }
    ]

/// The loss (Σᵢℓᵢ/N) of a model on a batch, without gradients.
let private lossOn (m: Mlp) (b: Batch) =
    use _ = torch.no_grad()
    use scope = torch.NewDisposeScope()
    let task = ClassificationTask()
    (task.LossSum(ModelInput.Logits(m, b), b).item<float32>() |> float) / float (task.Items b)

let builtInMethodTests =
    testList "built-in methods through the step" [
        test "lwf: with grad_accum = k the distillation term and the task loss give the gradient of one batch of the same items (1e-5)" {
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(8UL)
            let x, y = torch.randn([| 30L; 8L |], generator = gen), torch.randint(0L, 3L, [| 30L |], generator = gen)
            y[4L] <- torch.tensor Batch.IgnoreIndex
            let update (window: Batch[]) =
                use m = mlp 5L
                use o = sgd m
                let lwf = Lwf(LwfOptions(Alpha = 2.0, Temperature = 2.0))
                let methods = MethodSet.Of(lwf)
                // The teacher: the starting weights moved by noise, handed over as a checkpoint would hand them.
                use tg = new torch.Generator(9UL)
                let teacher = Dictionary<string, torch.Tensor>()
                for struct (name, p) in m.named_parameters() do
                    teacher["teacher/" + name] <- p.detach().add(torch.randn(p.shape, generator = tg).mul(torch.tensor 0.3f))
                methods.All[0].LoadStateDict(teacher)
                use shadow = new ShadowModel(fun () -> mlp 0L :> torch.nn.Module<torch.Tensor, torch.Tensor>)
                let before = o.Master.detach().clone()
                let outcome = TrainStep(m, o, PrecisionPolicy.Fp32, methods, 0.0, shadow = shadow).Run(window, 1.0)
                before.sub_(o.Master), outcome.Loss
            let parts = [| 0L, 7L; 7L, 15L; 22L, 8L |]
            let split, splitLoss = update [| for (a, n) in parts -> Batch(x.narrow(0L, a, n), y.narrow(0L, a, n)) |]
            let whole, wholeLoss = update [| Batch(x, y) |]
            Expect.isLessThanOrEqual (relative split whole) 1e-5 "k micro-batches = one batch"
            Expect.floatClose { absolute = 1e-5; relative = 1e-5 } splitLoss wholeLoss "the same loss, distillation included"
            let plain, _ =
                use m = mlp 5L
                use o = sgd m
                let before = o.Master.detach().clone()
                TrainStep(m, o, PrecisionPolicy.Fp32, MethodSet.None, 0.0).Run([| Batch(x, y) |], 1.0) |> ignore
                before.sub_(o.Master), 0.0
            Expect.isGreaterThan (relative whole plain) 1e-2 "and the term changed the gradient"
        }
        test "si: over full-batch gradient descent at a small step, its path integral Σₖωₖ equals the loss decrease L(θ₀) − L(θ_T) (2%)" {
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(10UL)
            let b = Batch(torch.randn([| 64L; 8L |], generator = gen), torch.randint(0L, 3L, [| 64L |], generator = gen))
            use m = mlp 6L
            use o = sgd m
            let si = Si(SiOptions(C = 0.0))
            let methods = MethodSet.Of(si)
            let start = lossOn m b
            methods.All[0].TaskStart(TaskStartContext(0, "t", o.PenaltyParameters()))
            let step = TrainStep(m, o, PrecisionPolicy.Fp32, methods, 0.0)
            for _ in 1 .. 300 do step.Run([| b |], 0.02) |> ignore
            let decrease = start - lossOn m b
            let omega = methods.All[0].StateDict() |> Seq.filter (fun kv -> kv.Key.StartsWith "omega/") |> Seq.sumBy (fun kv -> kv.Value.sum().item<float32>() |> float)
            Expect.isGreaterThan decrease 0.1 "the loss fell"
            Expect.floatClose { absolute = 0.0; relative = 0.02 } omega decrease (sprintf "Σω = %.4f, ΔL = %.4f" omega decrease)
        }
    ]

/// A small 3-task study on synthetic clusters (permuted inputs, 10 classes, batches of 20, one epoch) with the given
/// [[methods]] tables, the F# fixture plugins loaded.
let private methodStudy (prefix: string) (methods: string) =
    let host = Research.Core.Plugins.PluginHost.Load([ fixtureDir "Plugin.FSharp" ])
    StudyTests.studyWith host [ "train.epochs=1"; "run.seed=3" ] (tempDir prefix) ("[study]\ntasks = 3\n" + methods)

let studyTests =
    testList "methods in studies" [
        test "replay appends round(r·B) memory items to each micro-batch from task 1 on and never in task 0; every task ends once, the last flagged as last" {
            let o = methodStudy "replay-mix" "[[methods]]\nname = \"replay\"\nbudget = 100\nmix_ratio = 0.25\n[[methods]]\nname = \"fs-batch-probe\"\n"
            let rows = o.Record.Probes["fs_batches"]
            // 900 training items per task, batches of 20: 45 micro-batches of 20 (+ round(0.25 · 20) = 5 from memory).
            Expect.equal rows[0] [| 20.0; 20.0; 45.0; 0.0 |] "task 0: plain batches"
            Expect.equal rows[1] [| 25.0; 25.0; 45.0; 0.0 |] "task 1: 20 + 5 memory items"
            Expect.equal rows[2] [| 25.0; 25.0; 45.0; 1.0 |] "task 2: mixed, and its end is the last"
            Expect.equal (o.Record.Probes["replay_memory_items"] |> Array.map (fun r -> r[0])) [| 100.0; 100.0; 100.0 |] "the budget is filled and never exceeded"
        }
        test "a-gem draws its reference gradient from replay's memory when both run, projects some steps after task 0 and none during it" {
            let o = methodStudy "agem" "[[methods]]\nname = \"replay\"\nbudget = 100\nmix_ratio = 0.25\n[[methods]]\nname = \"a-gem\"\nreference_items = 64\n"
            let fractions = o.Record.Probes["a_gem_projected_fraction"] |> Array.map (fun r -> r[0])
            Expect.equal fractions[0] 0.0 "no memory during task 0: nothing to project against"
            Expect.isTrue (fractions |> Array.forall (fun f -> f >= 0.0 && f <= 1.0)) (sprintf "fractions in [0, 1]: %A" fractions)
            Expect.isGreaterThan (fractions[1] + fractions[2]) 0.0 (sprintf "some steps were projected: %A" fractions)
        }
    ]

let tests = testList "contract" [ batchTests; taskTests; stepTests; builtInMethodTests; studyTests ]
