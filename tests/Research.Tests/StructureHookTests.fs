/// Structure hooks (contract 3.0): parameters a method adds at a task's start are trained by the run's optimizer from
/// zero moments, clipped and checkpointed with the model's, and handed back by name; OptimizerState reads the optimizer's
/// own moments; a gradient hook masks an update in place.
module Research.Tests.StructureHookTests

open System
open System.Collections.Generic
open System.IO
open Expecto
open TorchSharp
open Research.Abstractions
open Research.Core.Checkpoints
open Research.Core.Optim
open Research.Core.Precision
open Research.Core.Training
open Research.Tests.TestSupport
open Research.Tests.TrainStepTests

let private nothing = Unchecked.defaultof<torch.Tensor>

/// Bitwise equal values (Tensor.equal returns a tensor in TorchSharp).
let private same (a: torch.Tensor) (b: torch.Tensor) = torch.eq(a, b).all().item<bool>()

/// At its task's start, adds aux.weight [3, 3] and aux.bias [3] (values from a fixed generator) and trains them with a
/// loss term Σᵢ CE(W·zᵢ + b, yᵢ) over the model's logits z.
type private Head() =
    interface ITaskHooks with
        member _.TaskStart(c) =
            use g = new torch.Generator(7UL)
            let w = torch.randn([| 3L; 3L |], generator = g).mul(torch.tensor 0.3f)
            let b = torch.randn([| 3L |], generator = g).mul(torch.tensor 0.1f)
            c.AddParameters.Invoke([| NamedParameter("aux.weight", w); NamedParameter("aux.bias", b) |]) |> ignore
        member _.TaskEnd(_) = ()
    interface ILossTerm with
        member _.Loss(c) =
            match c.AddedParameters.TryGetValue "aux.weight" with
            | true, w ->
                let aux = c.Logits.matmul(w.t()).add(c.AddedParameters["aux.bias"])
                torch.nn.functional.cross_entropy(aux, c.Batch.TargetsTensor, reduction = torch.nn.Reduction.Sum)
            | _ -> nothing

/// Keeps clones (returned from StateDict, so they outlive the call): the added gradients a hook sees, and after each step
/// the optimizer state of the parameters and slots asked for, read through OptimizerState.
type private StateReader(reads: (string * string) list) =
    let mutable state = Map.empty<string, torch.Tensor>
    member _.State = state
    interface IGradientHook with
        member _.BeforeUpdate(c) =
            for KeyValue(name, g) in c.AddedGradients do state <- state.Add("grad/" + name, g.clone())
    interface IStepObserver with
        member _.AfterStep(c) =
            // An added name is read once it is added (task 0 trains before the head exists).
            for name, slot in reads |> List.filter (fun (n, _) -> not (n.StartsWith "aux.") || c.AddedParameters.ContainsKey n) do
                let t = c.OptimizerState.Invoke(name, slot)
                if isNull (box t) then state <- state.Remove(slot + "/" + name)
                else state <- state.Add(slot + "/" + name, t)
    interface IStateful with
        member _.StateDict() = state |> Map.toSeq |> dict |> Dictionary :> _
        member _.LoadStateDict(s) = state <- s |> Seq.map (fun kv -> kv.Key, kv.Value) |> Map.ofSeq

/// Zeroes parameter `index`'s task gradient, and its penalty gradient too when `penalty` (a full mask).
type private Mask(index: int, penalty: bool) =
    interface IGradientHook with
        member _.BeforeUpdate(c) =
            c.TaskGradient[index].zero_() |> ignore
            if penalty then c.PenaltyGradient[index].zero_() |> ignore

/// R(θ) = ½‖θ‖²: a pull on every parameter that a task-gradient mask alone does not stop.
type private HalfSquaredNorm() =
    interface IPenalty with
        member _.Penalty(c) = c.Parameters |> Seq.map (fun p -> p.Value.square().sum()) |> Seq.reduce (+) |> fun s -> s.mul(torch.tensor 0.5f)

let private beta1, beta2, eps, lr, lambda = 0.9, 0.999, 1e-8, 1e-2, 0.1

/// An added-parameter set as a run makes it (RunBuilder.Added): weight decay `decay` for rank ≥ 2 and 0 otherwise.
let private addedSetWith (decay: float) (names: HashSet<string>) (make: IReadOnlyList<OptimParameter> -> Optimizer) =
    new AddedParameterSet(
        (fun ps -> make ps),
        (fun _ (t: torch.Tensor) -> if t.dim() >= 2L then ParameterGroup("added.decay", 1.0, decay) else ParameterGroup("added.no_decay", 1.0, 0.0)),
        (fun n -> names.Contains n), torch.CPU)

let private addedSet = addedSetWith lambda

/// Calls the methods' task start for task 1 as the loop does, AddParameters bound to `added`.
let private taskStart (methods: MethodSet) (o: Optimizer) (added: AddedParameterSet) =
    for m in methods.TaskHooks do
        m.TaskStart(TaskStartContext(1, "task-1", o.PenaltyParameters(), AddParameters = Func<_, _>(fun ps -> added.Add(m.Name, ps)), AddedParameters = added.Parameters))

let private values (t: torch.Tensor) = t.detach().reshape(-1L).to_type(torch.ScalarType.Float64).data<float>().ToArray()

let private data seed =
    use gen = new torch.Generator(uint64 seed)
    torch.randn([| 16L; 8L |], generator = gen), torch.randint(0L, 3L, [| 16L |], generator = gen)

let tests =
    testList "structure" [
        test "a head added at task 1's start, after task 0's steps, is after one AdamW step θ₀(1−ηλ) − η·g/(|g|+ε), the closed form from zero moments (|Δ| ≤ 1e-6), and OptimizerState reads m = (1−β₁)g, v = (1−β₂)g² (relative 1e-6)" {
            use _ = torch.NewDisposeScope()
            let x, y = data 21
            // With a reader the step splits the gradient (hooks see AddedGradients) and AdamW runs as the chain; without, it
            // is one backward and the fused update: both give the head the same update.
            let run (withReader: bool) =
                use m = mlp 5L
                use o = Optimizer.AdamW(ParameterGroups.Assign(named m, GroupRule.DecayByRank lambda), beta1, beta2, eps)
                let names = HashSet(o.Buffer.Slots |> Seq.map (fun s -> s.Name))
                use added = addedSet names (fun ps -> Optimizer.AdamW(ps, beta1, beta2, eps))
                let reader = StateReader([ for n in [ "aux.weight"; "aux.bias" ] do for s in [ OptimizerSlots.ExpAvg; OptimizerSlots.ExpAvgSq ] -> n, s ])
                let methods = if withReader then MethodSet.Of(Head(), reader) else MethodSet.Of(Head())
                // Task 0 trains 3 steps first, so the model's optimizer is at t = 3 when the head arrives: its bias correction
                // must count from its own first step (counted from the model's t = 4, its first update would be 0.58 times the closed form).
                let task0 = TrainStep(m, o, PrecisionPolicy.Fp32, methods, 0.0, taskIndex = 0, added = added)
                for _ in 1 .. 3 do task0.Run([| Batch(x, y) |], lr) |> ignore
                taskStart methods o added
                Expect.sequenceEqual (added.Parameters.Keys |> List.ofSeq) [ "aux.weight"; "aux.bias" ] "the head is added under its names"
                let before = added.Parameters |> Seq.map (fun kv -> kv.Key, values kv.Value) |> Map.ofSeq
                let outcome = TrainStep(m, o, PrecisionPolicy.Fp32, methods, 0.0, taskIndex = 1, added = added).Run([| Batch(x, y) |], lr)
                Expect.isTrue outcome.Applied "the step was applied"
                let after = added.Parameters |> Seq.map (fun kv -> kv.Key, values kv.Value) |> Map.ofSeq
                before, after, reader.State |> Map.map (fun _ t -> values t)
            let before, after, seen = run true
            for name, decay in [ "aux.weight", lambda; "aux.bias", 0.0 ] do
                let g = seen["grad/" + name]
                Expect.isTrue (g |> Array.exists (fun v -> v <> 0.0)) $"{name} receives a gradient through the loss term"
                let expected = Array.map2 (fun (t: float) (gi: float) -> t * (1.0 - lr * decay) - lr * gi / (abs gi + eps)) before[name] g
                Array.iteri2 (fun i (e: float) (a: float) ->
                    if abs (e - a) > 1e-6 then failtestf "%s[%d]: %.9g, closed form %.9g" name i a e) expected after[name]
                let close what (e: float[]) (a: float[]) =
                    Array.iteri2 (fun i (ei: float) (ai: float) ->
                        if abs (ei - ai) > 1e-6 * abs ei + 1e-12 then failtestf "%s %s[%d]: %.9g, expected %.9g" what name i ai ei) e a
                close "m" (g |> Array.map (fun gi -> (1.0 - beta1) * gi)) seen[OptimizerSlots.ExpAvg + "/" + name]
                close "v" (g |> Array.map (fun gi -> (1.0 - beta2) * gi * gi)) seen[OptimizerSlots.ExpAvgSq + "/" + name]
            let _, fused, _ = run false
            for name in [ "aux.weight"; "aux.bias" ] do
                Array.iteri2 (fun i (a: float) (b: float) ->
                    if abs (a - b) > 1e-6 then failtestf "%s[%d]: fused %.9g, chain %.9g" name i b a) after[name] fused[name]
        }

        test "OptimizerState of a model parameter after 3 steps is bitwise the optimizer's own state (AdamW's m and v, SGD's momentum; null for a slot SGD without momentum keeps none)" {
            use _ = torch.NewDisposeScope()
            let x, y = data 22
            let check (make: IReadOnlyList<OptimParameter> -> Optimizer) (slots: string list) (absent: string list) =
                use m = mlp 6L
                use o = make (ParameterGroups.Assign(named m, GroupRule.DecayByRank 0.01))
                let names = o.Buffer.Slots |> Seq.map (fun s -> s.Name) |> List.ofSeq
                let reader = StateReader([ for n in names do for s in slots @ absent -> n, s ])
                let step = TrainStep(m, o, PrecisionPolicy.Fp32, MethodSet.Of(reader), 0.0)
                for _ in 1 .. 3 do step.Run([| Batch(x, y) |], 1e-2) |> ignore
                for n in names do
                    for s in slots do
                        use own = o.StateOf(n, s)
                        Expect.isTrue (same reader.State[s + "/" + n] own) $"{s} of {n} bitwise the optimizer's"
                    for s in absent do Expect.isFalse (reader.State.ContainsKey(s + "/" + n)) $"no {s} for {n}"
            check (fun ps -> Optimizer.AdamW(ps)) [ OptimizerSlots.ExpAvg; OptimizerSlots.ExpAvgSq ] [ OptimizerSlots.Momentum ]
            check (fun ps -> Optimizer.Sgd(ps, 0.9)) [ OptimizerSlots.Momentum ] [ OptimizerSlots.ExpAvg ]
            check (fun ps -> Optimizer.Sgd(ps)) [] [ OptimizerSlots.Momentum ]
        }

        test "a gradient hook that zeroes a parameter's TaskGradient under SGD without weight decay leaves it bitwise unchanged while the others move; with a penalty, masking PenaltyGradient too is what keeps it" {
            use _ = torch.NewDisposeScope()
            let x, y = data 23
            let moved (methods: MethodSet) =
                use m = mlp 7L
                use o = sgd m
                let before = o.Buffer.Slots |> Seq.map (fun s -> s.Name, s.Parameter.detach().clone()) |> List.ofSeq
                let step = TrainStep(m, o, PrecisionPolicy.Fp32, methods, 0.0)
                for _ in 1 .. 3 do step.Run([| Batch(x, y) |], 0.1) |> ignore
                List.map2 (fun (n, (b: torch.Tensor)) (s: Slot) -> n, not (same b s.Parameter)) before (List.ofSeq o.Buffer.Slots)
            let expectOnlyFirstStill what (r: (string * bool) list) =
                Expect.isFalse (snd r.Head) $"{what}: {fst r.Head} bitwise unchanged"
                for n, changed in r.Tail do Expect.isTrue changed $"{what}: {n} moves"
            expectOnlyFirstStill "task mask" (moved (MethodSet.Of(Mask(0, false))))
            expectOnlyFirstStill "task and penalty mask, with a penalty" (moved (MethodSet.Of(HalfSquaredNorm(), Mask(0, true))))
            Expect.isTrue (snd (moved (MethodSet.Of(HalfSquaredNorm(), Mask(0, false)))).Head) "the task mask alone leaves the penalty's pull"
        }

        test "an added head's gradient is in the clipped global norm: ‖g‖ = √(‖g_model‖² + ‖g_head‖²) and a clip scales both by c/‖g‖ (SGD at lr 1, relative 1e-5)" {
            use _ = torch.NewDisposeScope()
            let x, y = data 24
            // SGD at lr 1 without decay or momentum: Δθ = −g, for the model and the head alike.
            let step (clip: float) =
                use m = mlp 9L
                use o = sgd m
                let names = HashSet(o.Buffer.Slots |> Seq.map (fun s -> s.Name))
                use added = addedSetWith 0.0 names (fun ps -> Optimizer.Sgd(ps))
                let methods = MethodSet.Of(Head())
                taskStart methods o added
                let model0 = o.Master.detach().clone()
                let head0 = added.Parameters |> Seq.map (fun kv -> kv.Value.detach().clone()) |> Array.ofSeq
                let outcome = TrainStep(m, o, PrecisionPolicy.Fp32, methods, clip, taskIndex = 1, added = added).Run([| Batch(x, y) |], 1.0)
                let norm2 (t: torch.Tensor) = let n = t.norm().item<float32>() |> float in n * n
                let dModel = model0 - o.Master
                let dHead = Array.map2 (fun (b: torch.Tensor) (a: torch.Tensor) -> b - a) head0 (Array.ofSeq added.Parameters.Values)
                outcome.GradNorm, norm2 dModel, dHead |> Array.sumBy norm2
            let norm, model2, head2 = step 0.0
            Expect.isGreaterThan head2 0.0 "the head has a gradient"
            Expect.floatClose { absolute = 0.0; relative = 1e-5 } norm (sqrt (model2 + head2)) "the reported norm covers both"
            let c = 0.25 * norm
            let clippedNorm, clippedModel2, clippedHead2 = step c
            Expect.floatClose { absolute = 0.0; relative = 1e-5 } clippedNorm norm "the norm is measured before clipping"
            let factor = c / (norm + 1e-6)
            Expect.floatClose { absolute = 0.0; relative = 1e-5 } (sqrt clippedModel2) (factor * sqrt model2) "the model's update is scaled by c/‖g‖"
            Expect.floatClose { absolute = 0.0; relative = 1e-5 } (sqrt clippedHead2) (factor * sqrt head2) "the head's by the same factor"
        }

        test "AddParameters refuses a name the model or an earlier call has, a non-floating value and an empty list, naming the name" {
            use _ = torch.NewDisposeScope()
            use m = mlp 8L
            use o = sgd m
            let names = HashSet(o.Buffer.Slots |> Seq.map (fun s -> s.Name))
            use added = addedSet names (fun ps -> Optimizer.Sgd(ps))
            let first = o.Buffer.Slots[0].Name
            let refused (ps: NamedParameter list) (fragment: string) =
                let e = Expect.throwsC (fun () -> added.Add("m", List.toArray ps) |> ignore) id
                Expect.stringContains e.Message fragment "the message names it"
            refused [ NamedParameter(first, torch.zeros(3L)) ] $"'{first}' is taken"
            added.Add("m", [| NamedParameter("aux.a", torch.zeros(3L)) |]) |> ignore
            refused [ NamedParameter("aux.a", torch.zeros(3L)) ] "'aux.a' is taken"
            refused [ NamedParameter("aux.i", torch.zeros(3L, dtype = torch.int64)) ] "'aux.i' is Int64"
            refused [] "no parameters"
            Expect.equal added.Parameters.Count 1 "what was refused was not added"
        }
    ]

/// A 3-task permuted study whose method adds a head at the start of tasks 1 and 2 (Plugin.Structure's aux-head) with
/// AdamW and weight decay: 540 items per task in micro-batches of 32 → 17 micro-batches, windows of 2 → 9 steps per epoch,
/// 2 epochs: 34 micro-batches per task; a checkpoint every 4 steps. The optimizer (and with it the heads' moments) is
/// reset at each task's start.
let private studyConfig (dir: string) =
    let path = Path.Combine(dir, "study.toml")
    File.WriteAllText(path, sprintf """
[run]
name = "structure-resume"
seed = 13
threads = 1
output_dir = "%s"
[data]
dataset = "synthetic"
synthetic_samples = 600
synthetic_features = 8
synthetic_classes = 3
batch_size = 32
eval_batch_size = 50
[model]
hidden = [16]
[optimizer]
weight_decay = 0.05
[checkpoint]
every = 4
at_epoch_end = false
[train]
epochs = 2
grad_accum = 2
log_every = 1
[study]
benchmark = "permuted"
tasks = 3
[[methods]]
name = "aux-head"
weight = 0.5
""" (Path.Combine(dir, "runs").Replace("\\", "/")))
    path

let private fixture = fixtureDir "Plugin.Structure"

let private runDirOf (dir: string) = Directory.GetDirectories(Path.Combine(dir, "runs")) |> Array.exactlyOne

/// What must not depend on a kill: the final checkpoint's model, added parameters and moments (every tensor, every bit),
/// the heads' logged norms and the study matrix.
let private result (runDir: string) =
    let tensors file =
        let d = TorchSharp.PyBridge.Safetensors.LoadStateDict(Path.Combine(runDir, "checkpoints", "final", file))
        d |> Seq.sortBy (fun kv -> kv.Key) |> Seq.map (fun kv -> kv.Key, kv.Value.data<float32>().ToArray()) |> List.ofSeq
    use store = new Research.Core.Tracking.RunStore(Path.Combine(runDir, Research.Core.Tracking.RunStore.FileName))
    let rows sql = store.Query(sql) |> Seq.map (fun r -> r |> Array.map string |> String.concat " ") |> List.ofSeq
    tensors Checkpoint.Model, tensors Checkpoint.Methods, tensors Checkpoint.Optimizer,
    rows "SELECT step, value FROM metrics WHERE key = 'plugin/aux-head/head_norm' ORDER BY step",
    rows "SELECT after_task, on_task, split, loss, accuracy FROM study_matrix ORDER BY after_task, on_task, split"

let private reference = lazy (
    let dir = tempDir "structure-ref"
    let r = research dir [ "study"; studyConfig dir; "--plugins"; fixture ]
    if r.ExitCode <> 0 then failtestf "reference study failed: %s" r.Err
    result (runDirOf dir))

let resumeTests =
    testList "structure resume" [
        test "a study whose method adds a head at tasks 1 and 2, killed with SIGKILL mid-task 1 and mid-task 2, resumes to the model, the heads, their moments, their logged norms and the matrix bitwise equal to an uninterrupted study" {
            let model, methods, moments, norms, matrix = reference.Value
            Expect.sequenceEqual (methods |> List.map fst) [ "added/aux.task1.bias"; "added/aux.task1.weight"; "added/aux.task2.bias"; "added/aux.task2.weight" ]
                "the final checkpoint holds both heads beside the methods' state"
            Expect.isTrue (moments |> List.exists (fun (k, _) -> k = "added/exp_avg/aux.task2.weight")) "and their moments beside the model's"
            Expect.isFalse (model |> List.exists (fun (k, _) -> k.StartsWith "aux.")) "the model's weights do not hold them"
            Expect.equal norms.Length 36 "the head's norm logged at every step of tasks 1 and 2"
            // Mid-task 1 (micro-batches 35–68) after its first checkpoint, and mid-task 2 (69–102), drawn with a fixed seed.
            let rng = Random(20261207)
            for n in [ rng.Next(45, 68); rng.Next(79, 102) ] do
                let dir = tempDir "structure-resume"
                let path = studyConfig dir
                let killed = researchKilledAfter n dir [ "study"; path; "--plugins"; fixture ]
                Expect.equal killed.ExitCode 137 (sprintf "killed by SIGKILL after micro-batch %d" n)
                let runDir = runDirOf dir
                let r = research dir [ "study"; path; "--plugins"; fixture; "--resume"; runDir ]
                Expect.equal r.ExitCode 0 (sprintf "resume after micro-batch %d: %s" n r.Err)
                let model', methods', moments', norms', matrix' = result runDir
                Expect.equal model' model (sprintf "the model bitwise after micro-batch %d" n)
                Expect.equal methods' methods (sprintf "the added heads bitwise after micro-batch %d" n)
                Expect.equal moments' moments (sprintf "every moment bitwise after micro-batch %d" n)
                Expect.equal norms' norms (sprintf "the heads' logged norms after micro-batch %d" n)
                Expect.equal matrix' matrix (sprintf "the matrix after micro-batch %d" n)
        }
    ]
