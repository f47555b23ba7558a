/// The strengths' convention (docs/methods.md), measured: each built-in method's penalty, computed by the plugin on small
/// hand-written tensors, equals the formula the docs write for it, and equals the paper's and Avalanche's forms at the
/// strengths the docs' table gives. References are computed here in float64, by hand or with TorchSharp's own functions,
/// never through the plugins' code. Tolerances: 1e-12 relative in float64; 1e-6 relative in float32 (SI and MAS keep their importance in float32).
/// Last, `research config schema NAME` prints each built-in's formula and paper.
module Research.Tests.ConventionTests

open System
open System.Collections.Generic
open System.IO
open Expecto
open TorchSharp
open Research.Abstractions
open Research.Core
open Research.Core.Precision
open Research.Core.Training
open Research.Plugins.Methods
open Research.Tests.TestSupport

type private Tensor = torch.Tensor

/// |a − b| ≤ tol · |b| (b ≠ 0 in every use: a penalty away from its anchor).
let private near (tol: float) (a: float) (b: float) = abs (a - b) <= tol * abs b

let private expectNear tol (actual: float) (expected: float) (what: string) =
    Expect.isTrue (near tol actual expected) (sprintf "%s: %.17g, expected %.17g (relative tolerance %g)" what actual expected tol)

/// A tensor's values, flattened, as float64.
let private values (t: Tensor) = t.detach().contiguous().to_type(torch.float64).cpu().data<float>().ToArray()

/// The parameters w [2, 2] and b [2] of a linear map, in a dtype, with autograd.
let private parameters (dtype: torch.ScalarType) (w: float[]) (b: float[]) =
    [| NamedParameter("w", torch.tensor(w).reshape(2L, 2L).to_type(dtype).detach().requires_grad_(true))
       NamedParameter("b", torch.tensor(b).to_type(dtype).detach().requires_grad_(true)) |]

/// Sets θ to new values (w then b, as `parameters` orders them).
let private setTo (ps: NamedParameter[]) (w: float[]) (b: float[]) =
    use _ = torch.no_grad()
    ps[0].Value.copy_(torch.tensor(w).reshape(2L, 2L)) |> ignore
    ps[1].Value.copy_(torch.tensor(b)) |> ignore

/// θ flattened as the references see it: w's four values, then b's two.
let private flat (ps: NamedParameter[]) = Array.append (values ps[0].Value) (values ps[1].Value)

/// ∇R by parameter, flattened like `flat`.
let private gradient (r: Tensor) (ps: NamedParameter[]) =
    torch.autograd.grad([| r |], ps |> Array.map (fun p -> p.Value)) |> Seq.map values |> Array.concat

/// Σᵢ wᵢ(θᵢ − aᵢ)², the quadratic form every penalty here is written with.
let private weighted (w: float[]) (theta: float[]) (anchor: float[]) = Array.map3 (fun w t a -> w * (t - a) * (t - a)) w theta anchor |> Array.sum

/// A task end that is not the last; the Fisher (EWC's) and the gradient of a function of the logits (MAS's) are given.
let private taskEnd index (ps: NamedParameter[]) (data: Batch list) (gradientOf: Batch -> (Tensor -> Tensor) -> IReadOnlyList<Tensor>)
                    (fisher: string -> Tensor) =
    TaskEndContext(
        index, sprintf "t%d" index, false, ps,
        Func<Batch, Tensor>(fun _ -> failwith "these methods read no logits at a task end"),
        Func<Batch, Func<Tensor, Tensor>, IReadOnlyList<Tensor>>(fun b f -> gradientOf b f.Invoke),
        data, Func<Tensor, Batch, Tensor>(fun logits _ -> logits),
        Func<FisherKind, IReadOnlyDictionary<string, Tensor>>(fun _ ->
            Dictionary<string, Tensor>(ps |> Seq.map (fun p -> KeyValuePair(p.Name, fisher p.Name))) :> _),
        Action<string, float[]>(fun _ _ -> ()), new torch.Generator(0UL))

let private noGradient _ _ : IReadOnlyList<Tensor> = failwith "this method takes no gradient at a task end"
let private noFisher _ : Tensor = failwith "this method needs no Fisher"

/// The Fisher of a task as a float64 tensor per parameter name, from six values (w's four, b's two).
let private fisherFrom (f: float[]) (name: string) =
    if name = "w" then torch.tensor(f[0..3]).reshape(2L, 2L) else torch.tensor(f[4..5])

/// The strengths docs/methods.md's table gives, each as the text of its cell; the tests below apply them as numbers.
let private stated =
    [ "`ewc`", [ "λ_paper = λ"; "ewc_lambda = λ/2" ]
      "`ewc`, `mode = \"online\"`", [ "λ_vdV = λ/γ"; "ewc_lambda = λ/2" ]
      "`si`", [ "c_paper = c"; "si_lambda = 2c" ]
      "`mas`", [ "λ_paper = λ"; "lambda_reg = λ (one task ended); lambda_reg = 2λ (two tasks, alpha = ½)" ]
      "`l2-sp`", [ "α_paper = α" ]
      "`l2`", [ "λ_paper = λ"; "weight_decay = λ" ]
      "`lwf`", [ "λ_o = αT²"; "alpha = αT²" ]
      "`replay`", [ "batch_size_mem = round(r·B)" ] ]

/// What `config schema NAME` must print of each built-in method's documentation: its formula and its paper.
let private schemaDocs =
    [ "ewc", [ "R(θ) = λ/2 Σ_t Σᵢ F_t,i (θᵢ − θ*_t,i)²"; "F* ← γF* + F_t"; "Kirkpatrick et al. 2017"; "Schwarz et al. 2018"; "ewc_lambda = λ/2" ]
      "si", [ "R(θ) = c Σₖ Ωₖ(θₖ − θ*ₖ)²"; "Ωₖ += ωₖ / (Δₖ² + ξ)"; "Zenke, Poole & Ganguli 2017"; "si_lambda = 2c" ]
      "mas", [ "R(θ) = λ Σₖ Ωₖ(θₖ − θ*ₖ)²"; "Ωₖ = (1/N) Σᵢ |∂‖f(xᵢ)‖²₂ / ∂θₖ|"; "Aljundi, Babiloni, Elhoseiny, Rohrbach & Tuytelaars 2018"; "lambda_reg" ]
      "l2", [ "R(θ) = λ/2 Σᵢ θᵢ²"; "Krogh & Hertz 1991"; "weight_decay" ]
      "l2-sp", [ "R(θ) = α/2 ‖θ − θ⁰‖²"; "Li, Grandvalet & Davoine 2018" ]
      "lwf", [ "α T² KL(p_T ‖ p_θ)"; "Li & Hoiem 2017"; "λ_o = αT²" ]
      "a-gem", [ "g̃ = g − (gᵀg_ref / g_refᵀg_ref) g_ref"; "Chaudhry, Ranzato, Rohrbach & Elhoseiny 2019" ]
      "replay", [ "L = (Σ_{i∈current} ℓᵢ + w·Σ_{j∈memory} ℓⱼ) / (B + round(r·B))"; "Chaudhry et al. 2019"; "Rolnick et al. 2019" ] ]

// Hand-written values, each exact in float32, so an anchor the plugins snapshot in float32 keeps them exactly.
let private wA, bA = [| 0.5; -1.0; 1.5; 2.0 |], [| 0.25; -0.75 |]
let private wB, bB = [| 0.75; -0.5; 1.0; 2.5 |], [| 0.0; -1.25 |]
let private wT, bT = [| 1.25; -1.5; 0.5; 3.0 |], [| 0.5; -0.25 |]
let private fA = [| 0.5; 2.0; 0.25; 1.0; 4.0; 0.125 |]
let private fB = [| 1.0; 0.5; 3.0; 0.75; 0.25; 2.0 |]

let tests =
    testList "conventions" [
        test "ewc, separate: R = λ/2 Σ_t Σᵢ F_t,i(θᵢ − θ*_t,i)² and ∇R = λ Σ_t F_t(θ − θ*_t); Kirkpatrick's λ = λ; Avalanche's ewc_lambda·Σ_t ΣF_t(θ − θ*_t)² at ewc_lambda = λ/2 (float64, 1e-12)" {
            use _ = torch.NewDisposeScope()
            let lambda = 3.0
            let ps = parameters torch.float64 wA bA
            let ewc = Ewc(EwcOptions(Lambda = lambda))
            (ewc :> ITaskHooks).TaskEnd(taskEnd 0 ps [] noGradient (fisherFrom fA))
            setTo ps wB bB
            (ewc :> ITaskHooks).TaskEnd(taskEnd 1 ps [] noGradient (fisherFrom fB))
            setTo ps wT bT
            let r = (ewc :> IPenalty).Penalty(PenaltyContext(0L, 2, ps))
            Expect.equal r.dtype torch.float64 "the penalty is computed in the parameters' float64"
            let theta, a, b = flat ps, Array.append wA bA, Array.append wB bB
            let sum = weighted fA theta a + weighted fB theta b
            let ours = r.item<float>()
            expectNear 1e-12 ours (lambda / 2.0 * sum) "λ/2 Σ_t ΣF_t(θ − θ*_t)²"
            let kirkpatrick lambdaPaper = lambdaPaper / 2.0 * sum
            let avalanche ewcLambda = ewcLambda * sum
            expectNear 1e-12 ours (kirkpatrick lambda) "Kirkpatrick et al. at λ_paper = λ"
            expectNear 1e-12 ours (avalanche (lambda / 2.0)) "Avalanche at ewc_lambda = λ/2"
            let expectedGradient = Array.init 6 (fun i -> lambda * (fA[i] * (theta[i] - a[i]) + fB[i] * (theta[i] - b[i])))
            Array.iteri2 (fun i g e -> expectNear 1e-12 g e (sprintf "∂R/∂θ%d = λΣ_t F_t(θ − θ*_t)" i)) (gradient r ps) expectedGradient
        }

        test "ewc, online: R = λ/2 Σᵢ (F_B + γF_A)ᵢ(θᵢ − θ*_B,i)²; Avalanche's online mode at decay_factor = γ, ewc_lambda = λ/2; van de Ven's λ/2 Σ γF*(θ − θ*)² at λ_vdV = λ/γ (float64, 1e-12)" {
            use _ = torch.NewDisposeScope()
            let lambda, gamma = 3.0, 0.5
            let ps = parameters torch.float64 wA bA
            let ewc = Ewc(EwcOptions(Lambda = lambda, Mode = EwcMode.Online, Gamma = gamma))
            (ewc :> ITaskHooks).TaskEnd(taskEnd 0 ps [] noGradient (fisherFrom fA))
            setTo ps wB bB
            (ewc :> ITaskHooks).TaskEnd(taskEnd 1 ps [] noGradient (fisherFrom fB))
            setTo ps wT bT
            let ours = (ewc :> IPenalty).Penalty(PenaltyContext(0L, 2, ps)).item<float>()
            let theta, b = flat ps, Array.append wB bB
            let fStar = Array.map2 (fun a b -> gamma * a + b) fA fB
            expectNear 1e-12 ours (lambda / 2.0 * weighted fStar theta b) "λ/2 Σ F*(θ − θ*)², F* = γF_A + F_B"
            let avalanche ewcLambda decay = ewcLambda * weighted (Array.map2 (fun a b -> decay * a + b) fA fB) theta b
            let vanDeVen lambdaVdV = lambdaVdV / 2.0 * weighted (Array.map (fun f -> gamma * f) fStar) theta b
            expectNear 1e-12 ours (avalanche (lambda / 2.0) gamma) "Avalanche at ewc_lambda = λ/2, decay_factor = γ"
            expectNear 1e-12 ours (vanDeVen (lambda / gamma)) "van de Ven's form at λ_vdV = λ/γ"
        }

        test "si: ω = Σₜ −gΔθ, Ω = ω/(Δ² + ξ), R = c Σ Ω(θ − θ*)² with ∇R = 2cΩ(θ − θ*); Zenke et al.'s c = c; Avalanche's si_lambda/2 Σ min(Ω, 0.001)(θ − θ*)² at si_lambda = 2c, eps = ξ (float32, 1e-6)" {
            use _ = torch.NewDisposeScope()
            let c, xi = 0.5, 0.1
            let ps = parameters torch.float32 wA bA
            // gradient = "total" is what Avalanche reads; in a first task, with no penalty yet, task and total gradients agree.
            let si = Si(SiOptions(C = c, Xi = xi, Gradient = SiGradient.Total))
            (si :> ITaskHooks).TaskStart(TaskStartContext(0, "t0", ps))
            let steps = [ [| 0.01; -0.02; 0.005; 0.015; -0.01; 0.02 |]; [| 0.02; -0.01; 0.01; 0.005; -0.02; 0.01 |] ]
            let mutable theta = Array.append wA bA
            let omega = Array.zeroCreate 6
            for k, g in List.indexed steps do
                let delta = g |> Array.map (fun gi -> -0.0625 * gi)   // a gradient step at lr 1/16
                theta <- Array.map2 (+) theta delta
                setTo ps theta[0..3] theta[4..5]
                for i in 0 .. 5 do omega[i] <- omega[i] - g[i] * delta[i]
                let asTensors (v: float[]) = [| torch.tensor(v[0..3]).reshape(2L, 2L).to_type(torch.float32); torch.tensor(v[4..5]).to_type(torch.float32) |]
                (si :> IStepObserver).AfterStep(StepContext(int64 k, 0, ps, asTensors g, asTensors g, asTensors delta, 0.0625, 0.0))
            (si :> ITaskHooks).TaskEnd(taskEnd 0 ps [] noGradient noFisher)
            let anchor = Array.copy theta
            let importance = Array.init 6 (fun i -> let d = anchor[i] - (Array.append wA bA)[i] in omega[i] / (d * d + xi))
            Expect.isTrue (importance |> Array.forall (fun o -> o > 0.0 && o <= 0.001)) "every Ω in (0, 0.001], where Avalanche's clip is idle"
            setTo ps wT bT
            let r = (si :> IPenalty).Penalty(PenaltyContext(2L, 1, ps))
            let ours = float (r.item<float32>())
            let at = flat ps
            expectNear 1e-6 ours (c * weighted importance at anchor) "c Σ Ω(θ − θ*)²"
            let zenke cPaper = cPaper * weighted importance at anchor
            let avalanche siLambda = siLambda / 2.0 * weighted (importance |> Array.map (min 0.001)) at anchor
            expectNear 1e-6 ours (zenke c) "Zenke et al. at c_paper = c"
            expectNear 1e-6 ours (avalanche (2.0 * c)) "Avalanche at si_lambda = 2c"
            Array.iteri2 (fun i g e -> expectNear 1e-6 g e (sprintf "∂R/∂θ%d = 2cΩ(θ − θ*)" i))
                (gradient r ps) (Array.init 6 (fun i -> 2.0 * c * importance[i] * (at[i] - anchor[i])))
        }

        test "mas: Ω = (1/N) Σᵢ |∂‖f(xᵢ)‖²/∂θ| summed over tasks, R = λ Σ Ω(θ − θ*)² with ∇R = 2λΩ(θ − θ*); Aljundi et al.'s λ = λ; Avalanche's lambda_reg Σ Ω_av(θ − θ*)² at lambda_reg = λ after one task and 2λ after two (alpha = ½, batches of one item) (float32, 1e-6)" {
            use _ = torch.NewDisposeScope()
            let lambda = 0.75
            let ps = parameters torch.float32 wA bA
            let xs = [| [| 1.0; -0.5 |]; [| 0.25; 2.0 |] |]
            let data = [ Batch(torch.tensor(Array.concat xs).reshape(2L, 2L).to_type(torch.float32), torch.zeros([| 2L |], dtype = torch.int64)) ]
            let gradientOf (b: Batch) (f: Tensor -> Tensor) : IReadOnlyList<Tensor> =
                let logits = torch.nn.functional.linear(b[Batch.Input], ps[0].Value, ps[1].Value)
                torch.autograd.grad([| f logits |], ps |> Array.map (fun p -> p.Value)) |> Seq.toArray :> _
            // Per item, f = Wx + b, ∂‖f‖²/∂W = 2f xᵀ and ∂‖f‖²/∂b = 2f; Ω is the mean of their absolute values.
            let omegaAt (theta: float[]) =
                let perItem (x: float[]) =
                    let f = Array.init 2 (fun r -> theta[2 * r] * x[0] + theta[2 * r + 1] * x[1] + theta[4 + r])
                    Array.append (Array.init 4 (fun i -> abs (2.0 * f[i / 2] * x[i % 2]))) (Array.init 2 (fun r -> abs (2.0 * f[r])))
                Array.map2 (fun a b -> (a + b) / 2.0) (perItem xs[0]) (perItem xs[1])
            let mas = Mas(MasOptions(Lambda = lambda, MaxItems = 0))
            let a, b = Array.append wA bA, Array.append wB bB
            (mas :> ITaskHooks).TaskEnd(taskEnd 0 ps data gradientOf noFisher)
            let omegaA = omegaAt a
            setTo ps wT bT
            let afterOne = (mas :> IPenalty).Penalty(PenaltyContext(0L, 1, ps))
            let at = flat ps
            expectNear 1e-6 (float (afterOne.item<float32>())) (lambda * weighted omegaA at a) "one task: λ Σ Ω_A(θ − θ*_A)²"
            Array.iteri2 (fun i g e -> expectNear 1e-6 g e (sprintf "∂R/∂θ%d = 2λΩ(θ − θ*)" i))
                (gradient afterOne ps) (Array.init 6 (fun i -> 2.0 * lambda * omegaA[i] * (at[i] - a[i])))
            let aljundi lambdaPaper omega anchor = lambdaPaper * weighted omega at anchor
            expectNear 1e-6 (float (afterOne.item<float32>())) (aljundi lambda omegaA a) "Aljundi et al. at λ_paper = λ"
            // Avalanche after one task: its Ω is the first task's (with batches of one item, ours), lambda_reg = λ.
            let avalanche lambdaReg omega anchor = lambdaReg * weighted omega at anchor
            expectNear 1e-6 (float (afterOne.item<float32>())) (avalanche lambda omegaA a) "Avalanche after one task at lambda_reg = λ"
            setTo ps wB bB
            (mas :> ITaskHooks).TaskEnd(taskEnd 1 ps data gradientOf noFisher)
            let omegaB = omegaAt b
            setTo ps wT bT
            let afterTwo = float ((mas :> IPenalty).Penalty(PenaltyContext(0L, 2, ps)).item<float32>())
            expectNear 1e-6 afterTwo (lambda * weighted (Array.map2 (+) omegaA omegaB) at b) "two tasks: λ Σ (Ω_A + Ω_B)(θ − θ*_B)²"
            let alpha = 0.5
            let omegaAvalanche = Array.map2 (fun oa ob -> alpha * oa + (1.0 - alpha) * ob) omegaA omegaB
            expectNear 1e-6 afterTwo (avalanche (2.0 * lambda) omegaAvalanche b) "Avalanche after two tasks (Ω ← ½Ω + ½Ω_new) at lambda_reg = 2λ"
        }

        test "l2: R = λ/2 Σθ² and ∇R = λθ, the move of TorchSharp's SGD with weight_decay = λ on a zero loss; λ′Σθ² at λ′ = λ/2 (float64, 1e-12)" {
            use _ = torch.NewDisposeScope()
            let lambda = 0.375
            let ps = parameters torch.float64 wT bT
            let r = (L2(L2Options(Lambda = lambda)) :> IPenalty).Penalty(PenaltyContext(0L, 0, ps))
            let theta = flat ps
            let squares = theta |> Array.sumBy (fun t -> t * t)
            let textbook lambdaPrime = lambdaPrime * squares
            expectNear 1e-12 (r.item<float>()) (lambda / 2.0 * squares) "λ/2 Σθ²"
            expectNear 1e-12 (r.item<float>()) (textbook (lambda / 2.0)) "λ′Σθ² at λ′ = λ/2"
            let ours = gradient r ps
            Array.iteri2 (fun i g t -> expectNear 1e-12 g (lambda * t) (sprintf "∂R/∂θ%d = λθ" i)) ours theta
            // SGD at lr 1 with weight_decay = λ, on a loss whose gradient is zero, moves θ by −λθ.
            let copies = ps |> Array.map (fun p -> new Modules.Parameter(p.Value.detach().clone(), true))
            use sgd = torch.optim.SGD(copies, 1.0, weight_decay = lambda)
            (copies |> Array.map (fun p -> p.sum()) |> Array.reduce (+)).mul(torch.tensor 0.0).backward()
            sgd.step() |> ignore
            let moved = Array.map2 (-) theta (copies |> Array.map values |> Array.concat)
            Array.iteri2 (fun i m g -> expectNear 1e-12 m g (sprintf "SGD's move of θ%d = ∂R/∂θ%d" i i)) moved ours
        }

        test "l2-sp: R = α/2 ‖θ − θ⁰‖² with ∇R = α(θ − θ⁰), Li et al.'s α = α; with anchor = previous-task it is ewc with F = 1 and λ = α (float64, 1e-12)" {
            use _ = torch.NewDisposeScope()
            let alpha = 0.625
            let ps = parameters torch.float64 wA bA
            let l2sp = L2SP(L2SPOptions(Alpha = alpha)) :> IPenalty
            Expect.equal (l2sp.Penalty(PenaltyContext(0L, 0, ps)).item<float>()) 0.0 "the first call anchors θ⁰ and costs 0"
            setTo ps wT bT
            let r = l2sp.Penalty(PenaltyContext(1L, 0, ps))
            let theta, a = flat ps, Array.append wA bA
            let ones = Array.create 6 1.0
            let li alphaPaper = alphaPaper / 2.0 * weighted ones theta a
            expectNear 1e-12 (r.item<float>()) (alpha / 2.0 * weighted ones theta a) "α/2 ‖θ − θ⁰‖²"
            expectNear 1e-12 (r.item<float>()) (li alpha) "Li et al. at α_paper = α"
            Array.iteri2 (fun i g e -> expectNear 1e-12 g e (sprintf "∂R/∂θ%d = α(θ − θ⁰)" i))
                (gradient r ps) (Array.map2 (fun t a -> alpha * (t - a)) theta a)
            setTo ps wA bA
            let previous = L2SP(L2SPOptions(Alpha = alpha, Anchor = AnchorKind.PreviousTask))
            let ewc = Ewc(EwcOptions(Lambda = alpha))
            (previous :> ITaskHooks).TaskEnd(taskEnd 0 ps [] noGradient noFisher)
            (ewc :> ITaskHooks).TaskEnd(taskEnd 0 ps [] noGradient (fisherFrom ones))
            setTo ps wT bT
            expectNear 1e-12 ((previous :> IPenalty).Penalty(PenaltyContext(1L, 1, ps)).item<float>())
                ((ewc :> IPenalty).Penalty(PenaltyContext(1L, 1, ps)).item<float>()) "l2-sp (previous-task) = ewc with F = 1, λ = α"
        }

        test "lwf: the term divided by N is αT² · mean KL(p_T ‖ p_θ); Avalanche's alpha · batchmean KL at alpha = αT²; Li & Hoiem's λ_o · mean cross-entropy at λ_o = αT² differs by λ_o · mean H(p_T) and has the same gradient (float64, 1e-12)" {
            use _ = torch.NewDisposeScope()
            let alpha, t = 0.75, 2.0
            let ps = parameters torch.float64 wA bA
            let lwf = Lwf(LwfOptions(Alpha = alpha, Temperature = t))
            (lwf :> ITaskHooks).TaskEnd(taskEnd 0 ps [] noGradient noFisher)
            setTo ps wT bT
            let xs = [| [| 1.0; -0.5 |]; [| 0.25; 2.0 |]; [| -1.5; 0.75 |] |]
            let x = torch.tensor(Array.concat xs).reshape(3L, 2L)
            let batch = Batch(x, torch.zeros([| 3L |], dtype = torch.int64))
            let logitsWith =
                Func<IReadOnlyDictionary<string, Tensor>, Batch, Tensor>(fun teacher b ->
                    use _ = torch.no_grad()
                    torch.nn.functional.linear(b[Batch.Input], teacher["w"].to_type(torch.float64), teacher["b"].to_type(torch.float64)))
            let logits = torch.nn.functional.linear(x, ps[0].Value, ps[1].Value)
            let term = (lwf :> ILossTerm).Loss(LossTermContext(0L, 1, batch, logits, logitsWith))
            Expect.equal term.dtype torch.float64 "computed in the logits' float64"
            let n = float xs.Length
            let ours = term.item<float>() / n
            // The reference, by hand: z = Wx + b with the teacher's (θ*) and the student's (θ) weights, p = softmax(z/T).
            let softmax (z: float[]) = let m = Array.max z in let e = z |> Array.map (fun v -> exp (v - m)) in e |> Array.map (fun v -> v / Array.sum e)
            let probabilities (theta: float[]) (xi: float[]) =
                softmax (Array.init 2 (fun r -> (theta[2 * r] * xi[0] + theta[2 * r + 1] * xi[1] + theta[4 + r]) / t))
            let teacher, student = xs |> Array.map (probabilities (Array.append wA bA)), xs |> Array.map (probabilities (flat ps))
            let kl = Array.map2 (fun (p: float[]) (q: float[]) -> Array.map2 (fun pc qc -> pc * (log pc - log qc)) p q |> Array.sum) teacher student
            let entropy = teacher |> Array.map (fun p -> p |> Array.sumBy (fun pc -> -pc * log pc))
            let meanKl = Array.average kl
            expectNear 1e-12 ours (alpha * t * t * meanKl) "αT² · mean KL"
            let avalanche alphaAvalanche = alphaAvalanche * meanKl
            expectNear 1e-12 ours (avalanche (alpha * t * t)) "Avalanche at alpha = αT²"
            let lambdaO = alpha * t * t
            let liHoiem = lambdaO * (Array.map2 (+) kl entropy |> Array.average)
            expectNear 1e-12 ours (liHoiem - lambdaO * Array.average entropy) "Li & Hoiem's λ_o · mean CE − λ_o · mean H(p_T), at λ_o = αT²"
            // The same gradient: Li & Hoiem's cross-entropy −Σ p_T log p_θ in torch, against ours.
            let crossEntropy =
                let pT = (torch.nn.functional.linear(x, torch.tensor(wA).reshape(2L, 2L), torch.tensor(bA)) / torch.tensor t).softmax(-1L)
                let logStudent = (torch.nn.functional.linear(x, ps[0].Value, ps[1].Value) / torch.tensor t).log_softmax(-1L)
                (pT * logStudent).sum().neg().mul(torch.tensor (lambdaO / n))
            let oursGradient = gradient (term / torch.tensor n) ps
            Array.iteri2 (fun i g e -> expectNear 1e-12 g e (sprintf "∂/∂θ%d: ours = Li & Hoiem's" i)) oursGradient (gradient crossEntropy ps)
        }

        test "a-gem: when gᵀg_ref < 0, g becomes g − (gᵀg_ref/‖g_ref‖²) g_ref (orthogonal to g_ref), else stays g — the rule of the paper and of Avalanche, with no strength (float64, 1e-12)" {
            use _ = torch.NewDisposeScope()
            let ps = parameters torch.float64 wA bA
            let gRef = [| 1.0; 0.5; -0.25; 2.0; 0.0; -1.0 |]
            let split (v: float[]) = [| torch.tensor(v[0..3]).reshape(2L, 2L); torch.tensor(v[4..5]) |]
            let memory =
                { new IMemory with
                    member _.Count = 4L
                    member _.Sample(items, _) = Batch(torch.zeros([| int64 items; 2L |], dtype = torch.float64), torch.zeros([| int64 items |], dtype = torch.int64)) }
            let project (g: float[]) =
                let agem = AGem(AGemOptions(ReferenceItems = 2))
                let taskGradient = split g
                let context =
                    GradientContext(0L, 1, ps, taskGradient, [||],
                                    Func<IEnumerable<Batch>, IReadOnlyList<Tensor>>(fun _ -> split gRef :> _), memory, new torch.Generator(1UL))
                (agem :> IGradientHook).BeforeUpdate(context)
                taskGradient |> Array.map values |> Array.concat
            let dot (a: float[]) (b: float[]) = Array.map2 (*) a b |> Array.sum
            let conflicting = [| -1.0; 0.25; 0.5; -1.5; 2.0; 0.75 |]
            Expect.isLessThan (dot conflicting gRef) 0.0 "the first g conflicts with g_ref"
            let expected = Array.map2 (fun g r -> g - dot conflicting gRef / dot gRef gRef * r) conflicting gRef
            let projected = project conflicting
            Array.iteri2 (fun i p e -> expectNear 1e-12 p e (sprintf "g̃%d" i)) projected expected
            Expect.isLessThanOrEqual (abs (dot projected gRef)) 1e-12 "g̃ᵀg_ref = 0"
            let agreeing = [| 1.0; 0.25; 0.5; 1.5; 2.0; -0.75 |]
            Expect.isGreaterThan (dot agreeing gRef) 0.0 "the second g agrees with g_ref"
            Expect.equal (project agreeing) agreeing "g unchanged when gᵀg_ref ≥ 0"
        }

        test "replay: a micro-batch of B items gets round(r·B) memory items and the step's loss is the mean of ℓ over all B + round(r·B), Avalanche's loss at batch_size_mem = round(r·B) (float32, 1e-6)" {
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(29UL)
            let r, b = 0.5, 8
            let m = int (Math.Round(r * float b))
            let replay = Replay(ReplayOptions(Budget = m, MixRatio = r, Selection = MemorySelection.TaskBalanced))
            let pastX, pastY = torch.randn([| int64 m; 8L |], generator = gen), torch.randint(0L, 3L, [| int64 m |], generator = gen)
            (replay :> ITaskHooks).TaskEnd(taskEnd 0 [||] [ Batch(pastX, pastY) ] noGradient noFisher)
            let x, y = torch.randn([| int64 b; 8L |], generator = gen), torch.randint(0L, 3L, [| int64 b |], generator = gen)
            let methods = MethodSet.Of(replay)
            let mixed = methods.WithMemory([| Batch(x, y) |], 1, 0L, 7L)
            Expect.equal mixed.Batches[0].Size (int64 (b + m)) "B + round(r·B) items"
            use model = TrainStepTests.mlp 3L
            // The reference: each item's cross-entropy before the update, in float64 (all m memory items are drawn).
            let perItem (inputs: Tensor) (targets: Tensor) =
                use _ = torch.no_grad()
                torch.nn.functional.cross_entropy(model.forward(inputs).to_type(torch.float64), targets, reduction = torch.nn.Reduction.None) |> values
            let current, memory = perItem x y, perItem pastX pastY
            use optimizer = TrainStepTests.sgd model
            let outcome = TrainStep(model, optimizer, PrecisionPolicy.Fp32, methods, 0.0, taskIndex = 1).Run(mixed, 0.01)
            Expect.equal outcome.Items (int64 (b + m)) "N = B + round(r·B)"
            expectNear 1e-6 outcome.Loss ((Array.sum current + Array.sum memory) / float (b + m)) "(Σ_current ℓ + Σ_memory ℓ) / (B + round(r·B))"
            // Avalanche: batch_size_mem memory items concatenated to the batch of B, the loss averaged over both.
            let avalanche batchSizeMem = (Array.sum current + Array.sum memory[.. batchSizeMem - 1]) / float (b + batchSizeMem)
            expectNear 1e-6 outcome.Loss (avalanche (int (Math.Round(r * float b)))) "Avalanche at batch_size_mem = round(r·B)"
        }

        test "docs/methods.md's table states the strengths these tests apply" {
            let page = File.ReadAllLines(Path.Combine(repoRoot, "docs", "methods.md"))
            // The table of papers and Avalanche: the rows under its heading, up to the next heading.
            let table = page |> Array.skipWhile (fun l -> l <> "## Ours, the papers' and Avalanche's") |> Array.skip 1 |> Array.takeWhile (fun l -> not (l.StartsWith "#"))
            for methodCell, cells in stated do
                match table |> Array.tryFind (fun l -> l.StartsWith(sprintf "| %s |" methodCell)) with
                | None -> failtestf "docs/methods.md has no row for %s in its table of papers and Avalanche" methodCell
                | Some row -> for cell in cells do Expect.stringContains row cell (sprintf "%s: %s" methodCell cell)
        }

        test "research config schema NAME prints each built-in method's formula and paper, from its class documentation" {
            for name, fragments in schemaDocs do
                let r = researchInProcess [ "config"; "schema"; name ]
                Expect.equal r.ExitCode 0 r.Err
                Expect.stringContains r.Out (sprintf "[[methods]] name = \"%s\"" name) "its table"
                let doc = r.Out.Split('\n') |> Array.filter (fun l -> l.StartsWith "  # ") |> Array.map (fun l -> l.Substring 4) |> String.concat " "
                for fragment in fragments do Expect.stringContains doc fragment (sprintf "%s's documentation" name)
        }
    ]
