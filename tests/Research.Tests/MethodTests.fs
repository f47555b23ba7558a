/// Continual-learning methods as math: SI's path integral and importance, MAS's per-item importance, LwF's distillation
/// term, A-GEM's projection and the episodic memory of replay. Every plugin call goes through `hostCall`, which applies
/// the contract's ownership rule as the host does, so a plugin that keeps a tensor outside its state fails here.
/// Comparisons state their tolerance as max|a − b| ≤ tol · (1 + max|b|).
module Research.Tests.MethodTests

open System
open System.Collections.Generic
open Expecto
open TorchSharp
open Research.Abstractions
open Research.Plugins.Methods

type private Tensor = torch.Tensor

let private config = { FsCheckConfig.defaultConfig with maxTest = 20 }

/// One plugin call as the host makes it: in a dispose scope of its own; afterwards the tensors of StateDict() survive,
/// those the plugin held before and no longer returns are freed, and every other tensor made during the call is freed.
/// `call` must return plain values (assert inside it on the tensors it makes).
let private hostCall (plugin: IStateful) (call: unit -> 'a) : 'a =
    let before = plugin.StateDict().Values |> Seq.toArray
    let result =
        use _ = torch.NewDisposeScope()
        let r = call ()
        for t in plugin.StateDict().Values do t.DetachFromDisposeScope() |> ignore
        r
    let kept = HashSet<Tensor>(plugin.StateDict().Values, HashIdentity.Reference)
    for t in before do
        if not (kept.Contains t) then t.Dispose()
    result

/// max|a − b| ≤ tol · (1 + max|b|): float32 rounding grows with the magnitude of the values compared.
let private closeTo (tol: float) (a: Tensor) (b: Tensor) =
    let d = (a.double() - b.double()).abs().max().item<float>()
    d <= tol * (1.0 + b.double().abs().max().item<float>())

let private scalar (x: float) = torch.tensor (float32 x)

let private randnLike (gen: torch.Generator) (t: Tensor) = torch.randn(t.shape, generator = gen)

/// Σ over the tensors of a·b, in float64.
let private dot (a: Tensor[]) (b: Tensor[]) =
    Array.map2 (fun (x: Tensor) (y: Tensor) -> (x.double() * y.double()).sum().item<float>()) a b |> Array.sum

/// A Linear layer with weights drawn from the generator (its default initialisation uses the global RNG).
let private linear (gen: torch.Generator) (inputs: int64) (outputs: int64) =
    let model = torch.nn.Linear(inputs, outputs)
    use _ = torch.no_grad()
    model.weight.copy_(torch.randn([| outputs; inputs |], generator = gen)) |> ignore
    model.bias.copy_(torch.randn([| outputs |], generator = gen)) |> ignore
    model

let private namedParameters (model: Modules.Linear) =
    [| NamedParameter("weight", model.weight); NamedParameter("bias", model.bias) |]

/// Adds Gaussian noise of the given scale to every parameter (θ moves, as in training).
let private move (gen: torch.Generator) (scale: float) (ps: NamedParameter[]) =
    use _ = torch.no_grad()
    for p in ps do p.Value.add_(randnLike gen p.Value * scalar scale) |> ignore

/// ∇θ of a scalar function of the model's logits on a batch, as the core's task-end GradientOf: new tensors, θ's order.
let private gradientOf (model: Modules.Linear) (ps: NamedParameter[]) (batch: Batch) (f: Tensor -> Tensor) =
    let value = f (model.forward batch[Batch.Input])
    torch.autograd.grad([| value |], ps |> Array.map (fun p -> p.Value)) |> Seq.toArray

/// A task end with a real model behind Logits and GradientOf; probes land in `probes`.
let private taskEnd index isLast (model: Modules.Linear) (ps: NamedParameter[]) (data: Batch list)
                    (probes: Dictionary<string, float[]>) (gen: torch.Generator) =
    TaskEndContext(
        index, sprintf "t%d" index, isLast, ps,
        Func<Batch, Tensor>(fun b ->
            use _ = torch.no_grad()
            model.forward b[Batch.Input]),
        Func<Batch, Func<Tensor, Tensor>, IReadOnlyList<Tensor>>(fun b f -> gradientOf model ps b f.Invoke :> IReadOnlyList<Tensor>),
        data, Func<Tensor, Batch, Tensor>(fun logits _ -> logits),
        Func<FisherKind, IReadOnlyDictionary<string, Tensor>>(fun _ -> failwith "these methods need no Fisher"),
        Action<string, float[]>(fun name row -> probes[name] <- row), gen)

/// Classification batches: inputs [n, features] from the generator, targets `classOf i` for item i, in batches of `size`.
let private classBatches (gen: torch.Generator) (features: int64) (classOf: int -> int64) (items: int) (size: int) =
    [ for start in 0 .. size .. items - 1 ->
        let n = min size (items - start)
        Batch(torch.randn([| int64 n; features |], generator = gen), torch.tensor [| for i in start .. start + n - 1 -> classOf i |]) ]

// ---- replay's streams: item i carries its id in input[:, 0], so a memory row names the item it came from ----

/// Task t of a 5 × 2 stream: classes 2t and 2t + 1 alternating, `perTask` items, batches of `size`.
let private streamTask (t: int) (perTask: int) (size: int) =
    [ for start in 0 .. size .. perTask - 1 ->
        let ids = [| for i in start .. start + size - 1 -> float32 (t * perTask + i) |]
        let input = torch.stack([| torch.tensor ids; torch.ones([| int64 size |]) |], 1L)
        Batch(input, torch.tensor [| for i in start .. start + size - 1 -> int64 (2 * t + i % 2) |]) ]

let private idsOf (batch: Batch) = batch[Batch.Input].select(1L, 0L).data<float32>().ToArray() |> Array.map int

let private memoryIds (state: IReadOnlyDictionary<string, Tensor>) =
    if state.ContainsKey "memory/input" then state["memory/input"].select(1L, 0L).data<float32>().ToArray() |> Array.map int else [||]

let private memoryClasses (state: IReadOnlyDictionary<string, Tensor>) =
    if state.ContainsKey "memory/targets" then state["memory/targets"].data<int64>().ToArray() else [||]

[<Tests>]
let tests =
    testList "methods" [
        testPropertyWithConfig config "SI: ω sums −g·Δθ over the path (task or total gradient), Ω += ω/((θ* − θ_start)² + ξ) at the task end, R = cΣΩ(θ − θ*)² with ∇R = 2cΩ(θ − θ*) (1e-6)" <| fun (seed: int) ->
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(uint64 (uint32 seed))
            let model = linear gen 3L 4L
            let ps = namedParameters model
            let c, xi = 0.5, 0.1
            let si = Si(SiOptions(C = c, Xi = xi))
            let siTotal = Si(SiOptions(C = c, Xi = xi, Gradient = SiGradient.Total))
            let start = ps |> Array.map (fun p -> p.Value.detach().clone())
            for m in [ si; siTotal ] do
                hostCall m (fun () -> m.TaskStart(TaskStartContext(0, "t0", ps)))
                Expect.isNull (hostCall m (fun () -> m.Penalty(PenaltyContext(0L, 0, ps)))) "no penalty before the first task ends"
            let omega = ps |> Array.map (fun p -> torch.zeros(p.Value.shape))
            let omegaTotal = ps |> Array.map (fun p -> torch.zeros(p.Value.shape))
            for step in 0 .. 4 do
                let gTask = ps |> Array.map (fun p -> randnLike gen p.Value)
                let gTotal = ps |> Array.map (fun p -> randnLike gen p.Value)
                let deltas = ps |> Array.map (fun p -> randnLike gen p.Value * scalar 0.1)
                do
                    use _ = torch.no_grad()
                    for p, d in Array.zip ps deltas do p.Value.add_(d) |> ignore
                for k in 0 .. ps.Length - 1 do
                    omega[k] <- omega[k] - gTask[k] * deltas[k]
                    omegaTotal[k] <- omegaTotal[k] - gTotal[k] * deltas[k]
                for m in [ si; siTotal ] do
                    hostCall m (fun () -> m.AfterStep(StepContext(int64 step, 0, ps, gTask, gTotal, deltas, 0.1, 0.0)))
            for k, p in Array.indexed ps do
                Expect.isTrue (closeTo 1e-6 (si.StateDict()["omega/" + p.Name]) omega.[k]) "ω = Σ −g_task·Δθ"
                Expect.isTrue (closeTo 1e-6 (siTotal.StateDict()["omega/" + p.Name]) omegaTotal.[k]) "ω = Σ −g_total·Δθ"
            let probes = Dictionary<string, float[]>()
            hostCall si (fun () -> si.TaskEnd(taskEnd 0 false model ps [] probes gen))
            let state = si.StateDict()
            for k, p in Array.indexed ps do
                let moved = p.Value.detach() - start[k]
                Expect.isTrue (closeTo 1e-6 state.["importance/" + p.Name] (omega.[k] / (moved.square() + scalar xi))) "Ω = ω/(Δ² + ξ)"
                Expect.equal (state["omega/" + p.Name].abs().max().item<float32>()) 0.0f "ω restarts at 0"
                Expect.isTrue (closeTo 1e-6 state.["anchor/" + p.Name] (p.Value.detach())) "θ* = θ at the task end"
            let pathIntegral = omega |> Array.sumBy (fun w -> w.double().sum().item<float>())
            Expect.floatClose { absolute = 1e-6; relative = 1e-6 } probes.["si_path_integral"].[0] pathIntegral "probe = Σ ω"
            hostCall si (fun () -> Expect.equal (si.Penalty(PenaltyContext(5L, 1, ps)).item<float32>()) 0.0f "R = 0 at θ*")
            let anchor = ps |> Array.map (fun p -> p.Value.detach().clone())
            move gen 0.3 ps
            hostCall si (fun () ->
                let importance = si.StateDict()
                let r = si.Penalty(PenaltyContext(6L, 1, ps))
                for p in ps do p.Value.grad <- null
                r.backward()
                let mutable expected = 0.0
                for k, p in Array.indexed ps do
                    let d = p.Value.detach() - anchor[k]
                    let w = importance["importance/" + p.Name]
                    expected <- expected + c * (w * d.square()).double().sum().item<float>()
                    Expect.isTrue (closeTo 1e-6 p.Value.grad (w * d * scalar (2.0 * c))) "∇R = 2cΩ(θ − θ*)"
                Expect.floatClose { absolute = 1e-6; relative = 1e-6 } (float (r.item<float32>())) expected "R = cΣΩ(θ − θ*)²")

        testPropertyWithConfig config "MAS: Ω is the per-item mean of |∇θ‖f(x)‖²| (= |2f xᵀ|, |2f| for a linear layer) over the first max_items items, summed over tasks; R = λΣΩ(θ − θ*)² (1e-5)" <| fun (seed: int) ->
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(uint64 (uint32 seed))
            let model = linear gen 5L 3L
            let ps = namedParameters model
            let data = classBatches gen 5L (fun i -> int64 (i % 3)) 10 4   // batches of 4, 4 and 2 items
            // The analytic per-item importance of the first n items at the current weights.
            let expected n =
                use _ = torch.no_grad()
                let x = torch.cat([| for b in data -> b[Batch.Input] |], 0L).narrow(0L, 0L, n)
                let f = model.forward x
                let weight = (f.unsqueeze(2L) * x.unsqueeze(1L) * scalar 2.0).abs().mean([| 0L |])
                let bias = (f * scalar 2.0).abs().mean([| 0L |])
                [| weight; bias |]
            let probes = Dictionary<string, float[]>()
            let lambda = 0.7
            let mas = Mas(MasOptions(Lambda = lambda, MaxItems = 6))
            let everything = Mas(MasOptions(Lambda = lambda, MaxItems = 0))
            hostCall mas (fun () -> mas.TaskEnd(taskEnd 0 false model ps data probes gen))
            hostCall everything (fun () -> everything.TaskEnd(taskEnd 0 false model ps data probes gen))
            let first = expected 6L
            for k, p in Array.indexed ps do
                Expect.isTrue (closeTo 1e-5 (mas.StateDict()["importance/" + p.Name]) first.[k]) "Ω = mean over the first 6 items of |2f xᵀ|, |2f|"
                Expect.isTrue (closeTo 1e-5 (everything.StateDict()["importance/" + p.Name]) (expected 10L).[k]) "max_items = 0: every item"
            move gen 0.5 ps
            let second = expected 6L
            hostCall mas (fun () -> mas.TaskEnd(taskEnd 1 false model ps data probes gen))
            let state = mas.StateDict()
            for k, p in Array.indexed ps do
                Expect.isTrue (closeTo 1e-5 state.["importance/" + p.Name] (first.[k] + second.[k])) "Ω ← Ω + Ω_new"
            let anchor = ps |> Array.map (fun p -> p.Value.detach().clone())
            move gen 0.5 ps
            hostCall mas (fun () ->
                let r = mas.Penalty(PenaltyContext(0L, 2, ps)).item<float32>() |> float
                let expectedR =
                    Array.indexed ps |> Array.sumBy (fun (k, p) ->
                        lambda * (state["importance/" + p.Name] * (p.Value.detach() - anchor[k]).square()).double().sum().item<float>())
                Expect.floatClose { absolute = 1e-5; relative = 1e-5 } r expectedR "R = λΣΩ(θ − θ*)²")

        testPropertyWithConfig config "LwF: the term is 0 when the student is the teacher, equals αT² Σ_rows KL(p_T ‖ p_θ) (float64 reference), and k micro-batches sum to the term of their concatenation (1e-5)" <| fun (seed: int) ->
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(uint64 (uint32 seed))
            let model = linear gen 5L 4L
            let ps = namedParameters model
            let alpha, temperature = 0.7, 2.0
            let lwf = Lwf(LwfOptions(Alpha = alpha, Temperature = temperature))
            let logitsWith =
                Func<IReadOnlyDictionary<string, Tensor>, Batch, Tensor>(fun teacher b ->
                    use _ = torch.no_grad()
                    let get name (current: Tensor) = match teacher.TryGetValue name with | true, t -> t | _ -> current
                    torch.nn.functional.linear(b[Batch.Input], get "weight" model.weight, get "bias" model.bias))
            let term (b: Batch) =
                hostCall lwf (fun () ->
                    let loss = lwf.Loss(LossTermContext(0L, 1, b, model.forward b[Batch.Input], logitsWith))
                    if isNull loss then nan else float (loss.item<float32>()))
            let parts = [ 2; 3; 4 ] |> List.map (fun n -> Batch(torch.randn([| int64 n; 5L |], generator = gen), torch.zeros([| int64 n |], dtype = torch.int64)))
            let whole = Batch.Concat(parts |> List.toArray)
            Expect.isTrue (Double.IsNaN(term whole)) "no term before a task has ended"
            hostCall lwf (fun () -> lwf.TaskEnd(taskEnd 0 false model ps [] (Dictionary()) gen))
            Expect.equal (term whole) 0.0 "0 when the student is the teacher"
            let teacher = ps |> Array.map (fun p -> p.Value.detach().clone())
            move gen 0.5 ps
            let reference =
                use _ = torch.no_grad()
                let x = whole[Batch.Input].double()
                let zt = torch.nn.functional.linear(x, teacher[0].double(), teacher[1].double()) / torch.tensor temperature
                let zs = torch.nn.functional.linear(x, model.weight.double(), model.bias.double()) / torch.tensor temperature
                let pt = zt.softmax(-1L)
                alpha * temperature * temperature * (pt * (zt.log_softmax(-1L) - zs.log_softmax(-1L))).sum().item<float>()
            let summed = parts |> List.sumBy term
            Expect.floatClose { absolute = 1e-5; relative = 1e-5 } (term whole) reference "αT² Σ KL(p_T ‖ p_θ)"
            Expect.floatClose { absolute = 1e-5; relative = 1e-5 } summed (term whole) "Σ over micro-batches = the concatenated batch"

        test "LwF on token sequences: rows whose target is the ignore index do not count, so micro-batches of different lengths sum to the term of their padded concatenation (1e-5)" {
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(5UL)
            let model = linear gen 6L 7L
            let ps = namedParameters model
            let lwf = Lwf(LwfOptions(Alpha = 1.0, Temperature = 2.0))
            let logitsWith =
                Func<IReadOnlyDictionary<string, Tensor>, Batch, Tensor>(fun teacher b ->
                    use _ = torch.no_grad()
                    torch.nn.functional.linear(b[Batch.Input], teacher["weight"], teacher["bias"]))
            let sequences (b: int64) (t: int64) =
                let targets = torch.zeros([| b; t |], dtype = torch.int64)
                targets[0L, t - 1L] <- torch.tensor Batch.IgnoreIndex   // a padded position inside a part too
                Batch([ KeyValuePair(Batch.Input, torch.randn([| b; t; 6L |], generator = gen)); KeyValuePair(Batch.Targets, targets) ])
            hostCall lwf (fun () -> lwf.TaskEnd(taskEnd 0 false model ps [] (Dictionary()) gen))
            move gen 0.5 ps
            let term (b: Batch) =
                hostCall lwf (fun () -> float (lwf.Loss(LossTermContext(0L, 1, b, model.forward b[Batch.Input], logitsWith)).item<float32>()))
            let parts = [| sequences 2L 3L; sequences 3L 5L |]
            let whole = Batch.Concat(parts)
            Expect.equal whole.[Batch.Targets].shape [| 5L; 5L |] "padded to the longest part"
            Expect.floatClose { absolute = 1e-5; relative = 1e-5 } (Array.sumBy term parts) (term whole) "Σ parts = padded concatenation"
        }

        testPropertyWithConfig config "A-GEM: when g·g_ref < 0 the update uses g̃ = g − (g·g_ref/‖g_ref‖²)g_ref, so g̃·g_ref ≥ −1e-6‖g‖‖g_ref‖; g is unchanged when g·g_ref ≥ 0 or the memory is empty (1e-6)" <| fun (seed: int) ->
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(uint64 (uint32 seed))
            let model = linear gen 5L 3L
            let ps = namedParameters model
            let agem = AGem(AGemOptions(Budget = 12, ReferenceItems = 64))
            // The task-loss gradient of batches (Σᵢℓᵢ/N over all their items), as the core's GradientOf; remembers the last.
            let lastReference = ref [||]
            let gradientOfBatches =
                Func<IEnumerable<Batch>, IReadOnlyList<Tensor>>(fun batches ->
                    let b = Batch.Concat(Seq.toArray batches)
                    let loss = torch.nn.functional.cross_entropy(model.forward b[Batch.Input], b[Batch.Targets])
                    let g = torch.autograd.grad([| loss |], ps |> Array.map (fun p -> p.Value)) |> Seq.toArray
                    lastReference.Value <- g |> Array.map (fun t -> t.clone().DetachFromDisposeScope())   // kept by the test beyond the call
                    g :> IReadOnlyList<Tensor>)
            let update (taskGradient: Tensor[]) step task =
                hostCall agem (fun () ->
                    agem.BeforeUpdate(GradientContext(step, task, ps, taskGradient, Array.empty<Tensor>, gradientOfBatches, null, new torch.Generator(uint64 step))))
            let noise () = ps |> Array.map (fun p -> randnLike gen p.Value)
            let untouched = noise ()
            let copy = untouched |> Array.map (fun t -> t.clone())
            update untouched 0L 0
            Expect.isTrue (Array.forall2 (fun (a: Tensor) b -> torch.eq(a, b).all().item<bool>()) untouched copy) "empty memory: g unchanged"
            let probes = Dictionary<string, float[]>()
            let data = classBatches gen 5L (fun i -> int64 (i % 3)) 30 8
            hostCall agem (fun () -> agem.TaskEnd(taskEnd 0 false model ps data probes gen))
            Expect.equal probes.["a_gem_projected_fraction"] [| 0.0 |] "no projection during task 0"
            Expect.equal (agem.Count) 12L "the memory holds its budget"
            // g_ref is the gradient on the whole memory (64 reference items ≥ 12): computed here from the memory's rows.
            let state = agem.StateDict()
            let memoryGradient =
                let loss = torch.nn.functional.cross_entropy(model.forward state["memory/input"], state["memory/targets"])
                torch.autograd.grad([| loss |], ps |> Array.map (fun p -> p.Value)) |> Seq.toArray
            let refNorm2 = dot memoryGradient memoryGradient
            // g = n − a·g_ref with a = n·g_ref/‖g_ref‖² + 1, so that g·g_ref = −‖g_ref‖² < 0.
            let n = noise ()
            let a = dot n memoryGradient / refNorm2 + 1.0
            let g = Array.map2 (fun (x: Tensor) (r: Tensor) -> x - r * scalar a) n memoryGradient
            let before = g |> Array.map (fun t -> t.clone())
            let dotBefore = dot g memoryGradient
            update g 1L 1
            for k in 0 .. ps.Length - 1 do
                Expect.isTrue (closeTo 1e-6 lastReference.Value.[k] memoryGradient.[k]) "g_ref: the gradient on the memory's items"
            let expected = Array.map2 (fun (x: Tensor) (r: Tensor) -> x - r * scalar (dotBefore / refNorm2)) before memoryGradient
            for k in 0 .. ps.Length - 1 do
                Expect.isTrue (closeTo 1e-6 g.[k] expected.[k]) "g̃ = g − (g·g_ref/‖g_ref‖²) g_ref"
            let norm (ts: Tensor[]) = sqrt (dot ts ts)
            Expect.isGreaterThanOrEqual (dot g memoryGradient) (-1e-6 * norm before * norm memoryGradient) "g̃·g_ref ≥ 0"
            // g = n + b·g_ref with b = 1 − n·g_ref/‖g_ref‖², so that g·g_ref = ‖g_ref‖² > 0: left as it is.
            let m = noise ()
            let b = 1.0 - dot m memoryGradient / refNorm2
            let h = Array.map2 (fun (x: Tensor) (r: Tensor) -> x + r * scalar b) m memoryGradient
            let hCopy = h |> Array.map (fun t -> t.clone())
            update h 2L 1
            Expect.isTrue (Array.forall2 (fun (x: Tensor) y -> torch.eq(x, y).all().item<bool>()) h hCopy) "g·g_ref ≥ 0: g unchanged"
            hostCall agem (fun () -> agem.TaskEnd(taskEnd 1 true model ps data probes gen))
            Expect.equal probes.["a_gem_projected_fraction"] [| 0.5 |] "1 of the task's 2 steps projected"

        test "replay, class-balanced: over 5 tasks × 2 classes the memory never exceeds its budget and keeps ⌊budget/K⌋ items (one more for the smallest class ids) of every class of each finished task" {
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(1UL)
            let budget = 50
            let replay = Replay(ReplayOptions(Budget = budget, MixRatio = 1.0, Selection = MemorySelection.ClassBalanced))
            let model = linear gen 2L 10L
            let ps = namedParameters model
            let probes = Dictionary<string, float[]>()
            for t in 0 .. 4 do
                hostCall replay (fun () -> replay.TaskStart(TaskStartContext(t, sprintf "t%d" t, ps)))
                let data = streamTask t 60 20
                for i, b in List.indexed data do
                    hostCall replay (fun () -> replay.Observe(b, t, new torch.Generator(uint64 (100 * t + i))))
                    let offered = hostCall replay (fun () -> replay.Count)
                    Expect.equal offered (if t = 0 then 0L else int64 budget) "items of finished tasks only"
                hostCall replay (fun () -> replay.TaskEnd(taskEnd t (t = 4) model ps data probes gen))
                let state = replay.StateDict()
                let classes = memoryClasses state
                let ids = memoryIds state
                Expect.isLessThanOrEqual classes.Length budget "within the budget"
                Expect.equal probes.["replay_memory_items"] [| float classes.Length |] "probe = items in memory"
                Expect.equal (Array.distinct ids).Length ids.Length "distinct items"
                for id, cls in Array.zip ids classes do
                    Expect.equal cls (int64 (2 * (id / 60) + id % 2)) "each row is the item it came from"
                let seen = if t = 4 then 8 else 2 * (t + 1)   // the last task end does not fill
                for cls in 0 .. seen - 1 do
                    let quota = budget / seen + (if cls < budget % seen then 1 else 0)
                    Expect.equal (classes |> Array.filter (fun c -> c = int64 cls) |> Array.length) quota (sprintf "class %d keeps its quota" cls)
        }

        test "replay, reservoir: the memory never exceeds its budget, offers only earlier tasks, and keeps every item with probability budget/n (early and late halves within 0.005 of 50/600 over 200 streams)" {
            use _ = torch.NewDisposeScope()
            let budget, perTask, size, streams = 50, 120, 20, 200
            let counts = Array.zeroCreate<int> (5 * perTask)
            let model = linear (new torch.Generator(0UL)) 2L 10L
            let ps = namedParameters model
            let data = [ for t in 0 .. 4 -> streamTask t perTask size ]
            for s in 0 .. streams - 1 do
                let replay = Replay(ReplayOptions(Budget = budget, Selection = MemorySelection.Reservoir))
                let gen = new torch.Generator(uint64 (1000 + s))
                for t in 0 .. 4 do
                    for b in data[t] do
                        hostCall replay (fun () -> replay.Observe(b, t, gen))
                        let stored = memoryIds (replay.StateDict())
                        Expect.isLessThanOrEqual stored.Length budget "within the budget"
                        if s = 0 then
                            let offered = hostCall replay (fun () -> replay.Count)
                            Expect.equal offered (stored |> Array.filter (fun id -> id / perTask < t) |> Array.length |> int64) "only earlier tasks are offered"
                for id in memoryIds (replay.StateDict()) do counts[id] <- counts[id] + 1
            let frequency (ids: int seq) = float (Seq.sumBy (fun i -> counts[i]) ids) / float (Seq.length ids * streams)
            let expected = float budget / float (5 * perTask)
            let early, late = frequency [ 0 .. 299 ], frequency [ 300 .. 599 ]
            Expect.floatClose { absolute = 0.005; relative = 0.0 } early expected "early items kept with probability budget/n"
            Expect.floatClose { absolute = 0.005; relative = 0.0 } late expected "late items kept with probability budget/n"
        }

        test "replay: StateDict → LoadStateDict into a fresh instance draws the same Sample for the same seed and continues the reservoir bitwise; an empty state loads" {
            use _ = torch.NewDisposeScope()
            let model = linear (new torch.Generator(0UL)) 2L 10L
            let ps = namedParameters model
            let sample (r: Replay) =
                hostCall r (fun () ->
                    let b = r.Sample(16, new torch.Generator(7UL))
                    idsOf b, b[Batch.Targets].data<int64>().ToArray())
            for selection in [ MemorySelection.Reservoir; MemorySelection.ClassBalanced ] do
                let options = ReplayOptions(Budget = 30, Selection = selection)
                let replay = Replay(options)
                let gen = new torch.Generator(3UL)
                for t in 0 .. 1 do
                    hostCall replay (fun () -> replay.TaskStart(TaskStartContext(t, sprintf "t%d" t, ps)))
                    for b in streamTask t 40 10 do hostCall replay (fun () -> replay.Observe(b, t, gen))
                    hostCall replay (fun () -> replay.TaskEnd(taskEnd t false model ps (streamTask t 40 10) (Dictionary()) gen))
                hostCall replay (fun () -> replay.TaskStart(TaskStartContext(2, "t2", ps)))
                let restored = Replay(options)
                let saved = Dictionary<string, Tensor>(replay.StateDict() |> Seq.map (fun kv -> KeyValuePair(kv.Key, kv.Value.clone())))
                hostCall restored (fun () -> restored.LoadStateDict(saved))
                Expect.equal (hostCall restored (fun () -> restored.Count)) (hostCall replay (fun () -> replay.Count)) "the same count"
                Expect.equal (sample restored) (sample replay) "the same sample for the same seed"
                for i, b in List.indexed (streamTask 2 40 10) do
                    for r in [ replay; restored ] do hostCall r (fun () -> r.Observe(b, 2, new torch.Generator(uint64 (50 + i))))
                Expect.equal (memoryIds (restored.StateDict())) (memoryIds (replay.StateDict())) "the same memory after more of the stream"
            let empty = Replay(ReplayOptions())
            hostCall empty (fun () -> empty.LoadStateDict(Dictionary<string, Tensor>()))
            Expect.equal (hostCall empty (fun () -> empty.Count)) 0L "empty"
            let fresh = Replay(ReplayOptions())
            hostCall fresh (fun () -> fresh.LoadStateDict(empty.StateDict()))
            Expect.equal (hostCall fresh (fun () -> fresh.Count)) 0L "the state of an empty memory loads"
        }

        test "replay, class-balanced: token targets [B, T] are refused with an InvalidOperationException that names reservoir" {
            use _ = torch.NewDisposeScope()
            let model = linear (new torch.Generator(0UL)) 2L 10L
            let ps = namedParameters model
            let replay = Replay(ReplayOptions(Selection = MemorySelection.ClassBalanced))
            let tokens = [ Batch([ KeyValuePair(Batch.InputIds, torch.zeros([| 2L; 4L |], dtype = torch.int64)); KeyValuePair(Batch.Targets, torch.zeros([| 2L; 4L |], dtype = torch.int64)) ]) ]
            Expect.throwsC
                (fun () -> hostCall replay (fun () -> replay.TaskEnd(taskEnd 0 false model ps tokens (Dictionary()) (new torch.Generator(1UL)))))
                (fun e ->
                    Expect.isTrue (e :? InvalidOperationException) "an InvalidOperationException"
                    Expect.stringContains e.Message "reservoir" "names the selection that works")
        }
    ]
