/// Regularizer plugins as math: penalties, their gradients, anchors and state.
module Research.Tests.RegularizerTests

open System
open Expecto
open TorchSharp
open Research.Abstractions
open Research.Plugins.Methods
open Research.Tests.TestSupport

let private parameters (gen: torch.Generator) =
    [| NamedParameter("w", torch.randn([| 4L; 3L |], generator = gen).requires_grad_(true))
       NamedParameter("b", torch.randn([| 3L |], generator = gen).requires_grad_(true)) |]

let private gradOf (penalty: torch.Tensor) (ps: NamedParameter[]) =
    for p in ps do p.Value.grad <- null
    penalty.backward()
    ps |> Array.map (fun p -> p.Value.grad.clone())

/// max|a − b| ≤ 1e-6 · (1 + max|b|): float32 rounding grows with the magnitude of the values compared.
let private close (a: torch.Tensor) (b: torch.Tensor) =
    use d = (a - b).abs().max()
    use scale = b.abs().max()
    d.item<float32>() <= 1e-6f * (1.0f + scale.item<float32>())

let private penaltyContext ps = PenaltyContext(0L, 0, ps)

/// A task end (not the last task) whose Fisher is the given tensors (the core's estimator is tested in FisherTests).
let private taskEnd index (ps: NamedParameter[]) (fisher: Map<string, torch.Tensor>) =
    TaskEndContext(index, sprintf "t%d" index, false, ps,
                   Func<_, _>(fun _ -> failwith "not needed"), Func<_, _, _>(fun _ _ -> failwith "not needed"), Seq.empty,
                   Func<_, _, _>(fun l _ -> l),
                   Func<FisherKind, Collections.Generic.IReadOnlyDictionary<string, torch.Tensor>>(fun _ ->
                       fisher |> Map.map (fun _ t -> t.clone()) |> Map.toSeq |> dict |> Collections.Generic.Dictionary :> _),
                   Action<_, _>(fun _ _ -> ()), new torch.Generator(0UL))

let private randomFisher (gen: torch.Generator) (ps: NamedParameter[]) =
    ps |> Array.map (fun p -> p.Name, torch.rand(p.Value.shape, generator = gen)) |> Map.ofArray

let private move (gen: torch.Generator) (ps: NamedParameter[]) =
    use _ = torch.no_grad()
    for p in ps do p.Value.add_(torch.randn(p.Value.shape, generator = gen)) |> ignore

let tests =
    testList "penalties" [
        testPropertyWithConfig propConfig "ewc: the penalty is 0 at θ* and its gradient is λF(θ − θ*) (1e-6)" <| fun (seed: int) ->
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(uint64 (uint32 seed))
            let ps = parameters gen
            let lambda = 7.0
            let ewc = Ewc(EwcOptions(Lambda = lambda))
            Expect.isNull ((ewc :> IPenalty).Penalty(penaltyContext ps)) "no penalty before the first task ends"
            let fisher = randomFisher gen ps
            let anchor = ps |> Array.map (fun p -> p.Value.detach().clone())
            (ewc :> ITaskHooks).TaskEnd(taskEnd 0 ps fisher)
            Expect.equal ((ewc :> IPenalty).Penalty(penaltyContext ps).item<float32>()) 0.0f "0 at θ*"
            move gen ps
            let grads = gradOf ((ewc :> IPenalty).Penalty(penaltyContext ps)) ps
            for (p, a), g in Array.zip (Array.zip ps anchor) grads do
                let expected = fisher[p.Name].mul(p.Value.detach() - a).mul(torch.tensor (float32 lambda))
                Expect.isTrue (close g expected) "λF(θ − θ*)"

        test "online ewc with γ = 1 over two tasks equals one penalty with the sum of the two Fishers at the latest θ*" {
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(11UL)
            let ps = parameters gen
            let online = Ewc(EwcOptions(Lambda = 2.0, Mode = EwcMode.Online, Gamma = 1.0))
            let f1, f2 = randomFisher gen ps, randomFisher gen ps
            (online :> ITaskHooks).TaskEnd(taskEnd 0 ps f1)
            move gen ps
            (online :> ITaskHooks).TaskEnd(taskEnd 1 ps f2)
            let state = (online :> IStateful).StateDict()
            for p in ps do
                Expect.isTrue (close state[sprintf "0/fisher/%s" p.Name] (f1[p.Name] + f2[p.Name])) "F = F₁ + F₂"
                Expect.isTrue (close state[sprintf "0/theta/%s" p.Name] (p.Value.detach())) "anchored at the latest θ*"
            Expect.isFalse (state.ContainsKey "1/fisher/w") "one penalty"
        }
        test "separate ewc keeps one penalty per task and sums them; its state round-trips" {
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(12UL)
            let ps = parameters gen
            let separate = Ewc(EwcOptions(Lambda = 2.0))
            let single0 = Ewc(EwcOptions(Lambda = 2.0))
            let single1 = Ewc(EwcOptions(Lambda = 2.0))
            let f1, f2 = randomFisher gen ps, randomFisher gen ps
            let consolidate (e: Ewc) context = (e :> ITaskHooks).TaskEnd(context)
            consolidate separate (taskEnd 0 ps f1); consolidate single0 (taskEnd 0 ps f1)
            move gen ps
            consolidate separate (taskEnd 1 ps f2); consolidate single1 (taskEnd 1 ps f2)
            move gen ps
            let value (r: Ewc) = (r :> IPenalty).Penalty(penaltyContext ps).item<float32>() |> float
            Expect.floatClose Accuracy.high (value separate) (value single0 + value single1) "sum of the two penalties"
            let restored = Ewc(EwcOptions(Lambda = 2.0))
            (restored :> IStateful).LoadStateDict((separate :> IStateful).StateDict())
            Expect.floatClose Accuracy.high (value restored) (value separate) "restored from its state"
        }
        testPropertyWithConfig propConfig "l2: R = λ/2‖θ‖² and ∇R = λθ (1e-6)" <| fun (seed: int) ->
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(uint64 (uint32 seed))
            let ps = parameters gen
            let lambda = 0.5
            let r = L2(L2Options(Lambda = lambda)) :> IPenalty
            let penalty = r.Penalty(penaltyContext ps)
            let expected = ps |> Array.sumBy (fun p -> p.Value.square().sum().item<float32>() |> float) |> (*) (lambda / 2.0)
            Expect.floatClose Accuracy.high (penalty.item<float32>() |> float) expected "value"
            for p, g in Array.zip ps (gradOf penalty ps) do
                Expect.isTrue (close g (p.Value.detach().mul(torch.tensor (float32 lambda)))) "λθ"

        testPropertyWithConfig propConfig "l2-sp: R is 0 at the anchor θ⁰ and ∇R = α(θ − θ⁰) after θ moves (1e-6)" <| fun (seed: int) ->
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(uint64 (uint32 seed))
            let ps = parameters gen
            let alpha = 0.3
            let r = L2SP(L2SPOptions(Alpha = alpha)) :> IPenalty
            let atAnchor = r.Penalty(penaltyContext ps)
            Expect.equal (atAnchor.item<float32>()) 0.0f "zero at θ⁰ (the first call anchors)"
            let anchor = ps |> Array.map (fun p -> p.Value.detach().clone())
            do
                use _ = torch.no_grad()
                for p in ps do p.Value.add_(torch.randn(p.Value.shape, generator = gen)) |> ignore
            let moved = r.Penalty(penaltyContext ps)
            for (p, a), g in Array.zip (Array.zip ps anchor) (gradOf moved ps) do
                Expect.isTrue (close g ((p.Value.detach() - a).mul(torch.tensor (float32 alpha)))) "α(θ − θ⁰)"

        test "l2-sp with match pulls only the parameters it names: R = α/2 ‖θ_b − θ⁰_b‖² after every parameter moves, and w's gradient is 0" {
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(5UL)
            let ps = parameters gen
            let r = L2SP(L2SPOptions(Alpha = 2.0, Match = "^b$")) :> IPenalty
            Expect.equal (r.Penalty(penaltyContext ps).item<float32>()) 0.0f "zero at θ⁰"
            do
                use _ = torch.no_grad()
                for p in ps do p.Value.add_(torch.tensor 0.5f) |> ignore
            let moved = r.Penalty(penaltyContext ps)
            let bCount = ps |> Array.find (fun p -> p.Name = "b") |> fun p -> p.Value.numel() |> float
            Expect.floatClose Accuracy.high (moved.item<float32>() |> float) (2.0 / 2.0 * bCount * 0.25) "α/2 · b's elements · 0.5²"
            for p in ps do p.Value.grad <- null
            moved.backward()
            let w = ps |> Array.find (fun p -> p.Name = "w")
            Expect.isTrue (isNull w.Value.grad || w.Value.grad.abs().sum().item<float32>() = 0.0f) "w is not pulled"
            let b = ps |> Array.find (fun p -> p.Name = "b")
            Expect.isTrue (close b.Value.grad (torch.ones_like(b.Value))) "∇_b R = α(θ_b − θ⁰_b) = 2 · 0.5"
        }
        test "l2-sp with the previous-task anchor: no penalty during the first task, then anchored at the end of each task, and its anchor round-trips through its state" {
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(3UL)
            let ps = parameters gen
            let r = L2SP(L2SPOptions(Alpha = 1.0, Anchor = AnchorKind.PreviousTask))
            Expect.isNull ((r :> IPenalty).Penalty(penaltyContext ps)) "no anchor yet"
            (r :> ITaskHooks).TaskEnd(taskEnd 0 ps Map.empty)
            Expect.equal ((r :> IPenalty).Penalty(penaltyContext ps).item<float32>()) 0.0f "zero at the task-end weights"
            let saved = (r :> IStateful).StateDict()
            Expect.equal (saved.Keys |> Set) (Set [ "anchor/w"; "anchor/b" ]) "state by parameter name"
            let restored = L2SP(L2SPOptions(Alpha = 1.0, Anchor = AnchorKind.PreviousTask))
            (restored :> IStateful).LoadStateDict(saved)
            do
                use _ = torch.no_grad()
                for p in ps do p.Value.add_(torch.tensor 1.0f) |> ignore
            Expect.floatClose Accuracy.high ((restored :> IPenalty).Penalty(penaltyContext ps).item<float32>() |> float) (0.5 * 15.0) "α/2 · 15 elements · 1²"
        }
    ]
