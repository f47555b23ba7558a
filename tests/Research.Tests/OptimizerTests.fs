/// The optimizers are chains of gradient transforms; each test states an identity of AdamW or Adam with L2:
/// against the update equations computed by hand in float64, against each other, and against TorchSharp's
/// AdamW fed the same recorded gradients and learning-rate schedule. A gradient is given exactly: for a leaf
/// tensor p, backward of sum(p ⊙ g) leaves p.grad = g. Randomness comes from explicit generators seeded by an
/// integer FsCheck draws over the whole int range (DoNotSize), so FsCheck needs no registered generators and
/// every failure replays.
module Research.Tests.OptimizerTests

open System
open System.Collections.Generic
open Expecto
open FsCheck
open TorchSharp
open Research.Core.Optim
open Research.Tests.TestSupport

type private Tensor = torch.Tensor

/// Float32 arithmetic of one update lands a few roundings (6e-8 each) away from float64; 1e-6 leaves room for
/// that and is still orders of magnitude below the error of a misplaced ε, bias correction or decay term.
let private tolerance = 1e-6

/// The elements of a tensor as float64 (exact for float32).
let private values (t: Tensor) : float[] = t.detach().to_type(torch.float64).data<float>().ToArray()

let private norm (xs: float[]) = sqrt (Array.sumBy (fun x -> x * x) xs)

/// ‖actual − expected‖ / ‖expected‖.
let private relativeError (actual: float[]) (expected: float[]) = norm (Array.map2 (-) actual expected) / norm expected

let private atMost (bound: float) (what: string) (error: float) =
    if not (error <= bound) then failtestf "%s: relative error %.3g is above %.1g" what error bound

let private bitwiseEqual (a: Tensor) (b: Tensor) = torch.eq(a, b).all().item<bool>()

let private uniform (rng: Random) (lo: float) (hi: float) = lo + rng.NextDouble() * (hi - lo)

let private logUniform (rng: Random) (lo: float) (hi: float) = exp (uniform rng (log lo) (log hi))

/// A torch generator for an FsCheck integer (negative integers included).
let private generator (seed: int) = new torch.Generator(uint64 (uint32 seed))

/// A leaf tensor drawn from N(0, 1) that records its gradient.
let private leaf (gen: torch.Generator) (shape: int64[]) = torch.randn(shape, generator = gen).requires_grad_(true)

/// A second leaf with the same values, for running two optimizers side by side.
let private twin (p: Tensor) = p.detach().clone().requires_grad_(true)

/// Adds g to p.grad (which the caller has zeroed or never created): d/dp sum(p ⊙ g) = g exactly.
let private accumulateGrad (p: Tensor) (g: Tensor) =
    use _ = torch.NewDisposeScope()
    (p * g).sum().backward()

/// One step of the core optimizer with gradients gs; returns Δθ as float64.
let private step (opt: Optimizer) (lr: float) (gs: Tensor list) =
    opt.ZeroGrad()
    List.iter2 (fun (p: OptimParameter) g -> accumulateGrad p.Value g) (List.ofSeq opt.Parameters) gs
    let delta = opt.Step lr
    // Δθ per parameter, in the order the parameters were given (the flat buffer orders them by group).
    [ for p in opt.Parameters ->
        let slot = opt.Buffer.Slots |> Seq.find (fun s -> s.Name = p.Name)
        values (FlatBuffer.ViewOf(delta, slot)) ]

let private everything (group: ParameterGroup) = [| GroupRule(group, Func<string, Tensor, bool>(fun _ _ -> true)) |]

let private assign (rules: IReadOnlyList<GroupRule>) (named: (string * Tensor) list) =
    ParameterGroups.Assign(named |> List.map (fun (n, t) -> struct (n, t)), rules)

/// Every parameter in one group with weight decay λ.
let private oneGroup (decay: float) named = assign (everything (ParameterGroup("all", 1.0, decay))) named

let private adamW (beta1, beta2, eps) decay named = Optimizer.AdamW(oneGroup decay named, beta1, beta2, eps)

let private adamL2 (beta1, beta2, eps) decay named = Optimizer.AdamL2(oneGroup decay named, beta1, beta2, eps)

/// β₁, β₂ and ε drawn widely; ε up to 0.1 so that where it enters (outside the square root) is visible.
let private drawBetasEps (rng: Random) = uniform rng 0.5 0.99, uniform rng 0.9 0.9999, logUniform rng 1e-8 1e-1

/// AdamW as written (Loshchilov & Hutter 2019, Algorithm 2) in float64, one element at a time: m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g²,
/// m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ), Δθ = −η_t(m̂/(√v̂+ε) + λθ), θ ← θ + Δθ. Returns Δθ of every step.
let private adamWReference (beta1, beta2, eps) (decay: float) (theta0: float[]) (steps: (float * float[]) list) =
    let theta = Array.copy theta0
    let m = Array.zeroCreate theta.Length
    let v = Array.zeroCreate theta.Length
    steps
    |> List.mapi (fun i (lr, g: float[]) ->
        let t = float (i + 1)
        Array.init theta.Length (fun j ->
            m[j] <- beta1 * m[j] + (1.0 - beta1) * g[j]
            v[j] <- beta2 * v[j] + (1.0 - beta2) * g[j] * g[j]
            let mHat = m[j] / (1.0 - beta1 ** t)
            let vHat = v[j] / (1.0 - beta2 ** t)
            let delta = -lr * (mHat / (sqrt vHat + eps) + decay * theta[j])
            theta[j] <- theta[j] + delta
            delta))

let private formulaTests =
    [ testPropertyWithConfig propConfig
          "AdamW's steps t=1 and t=2 equal θ − η(m̂/(√v̂+ε) + λθ) computed in float64 (‖error‖/‖Δθ‖ ≤ 1e-6)"
      <| fun (DoNotSize seed) ->
          use _ = torch.NewDisposeScope()
          let rng = Random seed
          use gen = generator seed
          let hyper = drawBetasEps rng
          let decay = uniform rng 0.0 0.5
          let shape = [| 7L; 5L |]
          let theta = leaf gen shape
          let theta0 = values theta
          let steps = [ for _ in 1..2 -> logUniform rng 1e-4 1e-1, torch.randn(shape, generator = gen) ]
          let expected = adamWReference hyper decay theta0 [ for lr, g in steps -> lr, values g ]
          let opt = adamW hyper decay [ "theta", theta ]
          List.iteri2
              (fun i (lr, g) (expectedDelta: float[]) ->
                  let delta = List.exactlyOne (step opt lr [ g ])
                  atMost tolerance (sprintf "Δθ at t=%d" (i + 1)) (relativeError delta expectedDelta))
              steps expected
          let expectedTheta = List.fold (Array.map2 (+)) theta0 expected
          atMost tolerance "θ after two steps" (relativeError (values theta) expectedTheta)

      testPropertyWithConfig propConfig "AdamW with wd=0 equals Adam (wd=0), bitwise over 10 steps" <| fun (DoNotSize seed) ->
          use _ = torch.NewDisposeScope()
          let rng = Random seed
          use gen = generator seed
          let hyper = drawBetasEps rng
          let a = leaf gen [| 6L; 3L |]
          let b = twin a
          let optW = adamW hyper 0.0 [ "a", a ]
          let optL2 = adamL2 hyper 0.0 [ "b", b ]
          for t in 1..10 do
              use _ = torch.NewDisposeScope()
              let g = torch.randn([| 6L; 3L |], generator = gen)
              let lr = logUniform rng 1e-4 1e-1
              step optW lr [ g ] |> ignore
              step optL2 lr [ g ] |> ignore
              if not (bitwiseEqual a b) then failtestf "θ differs after step %d" t

      testPropertyWithConfig propConfig
          "AdamW with wd>0: θ ← (1−ηλ)θ − η·m̂/(√v̂+ε), with −η·m̂/(√v̂+ε) the step of a wd=0 twin (‖error‖/‖Δθ‖ ≤ 1e-6)"
      <| fun (DoNotSize seed) ->
          use _ = torch.NewDisposeScope()
          let rng = Random seed
          use gen = generator seed
          let hyper = drawBetasEps rng
          // ηλ from 1e-5 to 0.1: a missing or doubled decay term is at least 1% of Δθ.
          let decay = logUniform rng 1e-2 1.0
          let decayed = leaf gen [| 5L; 4L |]
          let plain = twin decayed
          let optW = adamW hyper decay [ "decayed", decayed ]
          let optAdam = adamW hyper 0.0 [ "plain", plain ]
          for t in 1..3 do
              use _ = torch.NewDisposeScope()
              let g = torch.randn([| 5L; 4L |], generator = gen)
              let lr = logUniform rng 1e-3 1e-1
              let before = values decayed
              let delta = List.exactlyOne (step optW lr [ g ])
              let adamDelta = List.exactlyOne (step optAdam lr [ g ])
              let expectedDelta = Array.map2 (fun theta d -> -lr * decay * theta + d) before adamDelta
              atMost tolerance (sprintf "Δθ at t=%d" t) (relativeError delta expectedDelta)
              let expectedTheta = Array.map2 (fun theta d -> (1.0 - lr * decay) * theta + d) before adamDelta
              atMost tolerance (sprintf "θ at t=%d" t) (relativeError (values decayed) expectedTheta)

      test "AdamW with wd>0 differs from Adam+L2: after 5 steps ‖θ_W − θ_L2‖/‖θ₀‖ > 1e-2 (λ=0.5, η=1e-2)" {
          use _ = torch.NewDisposeScope()
          use gen = generator 11
          let hyper = 0.9, 0.999, 1e-8
          let shape = [| 8L; 8L |]
          let w = leaf gen shape
          let l2 = twin w
          let theta0 = values w
          let optW = adamW hyper 0.5 [ "w", w ]
          let optL2 = adamL2 hyper 0.5 [ "l2", l2 ]
          // Gradient scales from 0.01 to 10 per element: where |g| ≫ λθ, L2's decay is divided away by √v̂.
          let scale = torch.pow(torch.tensor 10.0f, torch.rand(shape, generator = gen) * 3.0f.ToScalar() - 2.0f.ToScalar())
          for _ in 1..5 do
              use _ = torch.NewDisposeScope()
              let g = torch.randn(shape, generator = gen) * scale
              step optW 1e-2 [ g ] |> ignore
              step optL2 1e-2 [ g ] |> ignore
          let difference = norm (Array.map2 (-) (values w) (values l2)) / norm theta0
          if not (difference > 1e-2) then failtestf "‖θ_W − θ_L2‖/‖θ₀‖ = %.3g, expected > 1e-2" difference
      } ]

/// Linear warmup to η_max over 10 steps, then cosine decay to η_max/10 at step 100: a pure function of t.
let private scheduledLr (peak: float) (t: int) =
    if t <= 10 then peak * float t / 10.0
    else peak * (0.1 + 0.45 * (1.0 + cos (Math.PI * float (t - 10) / 90.0)))

let private torchSharpTests =
    [ test "fed the same recorded gradients and lr schedule, the core AdamW and TorchSharp's AdamW stay within 1e-6 in ‖Δθ‖/‖θ‖ over 100 steps" {
          use _ = torch.NewDisposeScope()
          use gen = generator 2024
          let beta1, beta2, eps, decay, peak = 0.9, 0.95, 1e-8, 0.1, 1e-2
          let named = [ "layer.weight", leaf gen [| 32L; 16L |]; "layer.bias", leaf gen [| 16L |]; "conv.kernel", leaf gen [| 4L; 3L; 3L |] ]
          let core = Optimizer.AdamW(assign (GroupRule.DecayByRank decay) named, beta1, beta2, eps)
          let reference = [ for p in core.Parameters -> p, torch.nn.Parameter(p.Value.detach().clone()) ]
          // The core's group table decides the mask; TorchSharp gets the same split as two parameter groups.
          // Every option is passed: a ParamGroup's own defaults (lr 1e-3, β₂ 0.999, …) override the optimizer's.
          let group (decays: bool) =
              Modules.AdamW.ParamGroup(
                  [ for p, q in reference do if (p.Group.WeightDecay > 0.0) = decays then q ],
                  lr = peak, beta1 = beta1, beta2 = beta2, eps = eps, weight_decay = (if decays then decay else 0.0))
          use torchAdamW = torch.optim.AdamW([ group true; group false ], peak, beta1, beta2, eps)
          let coreTheta () = core.Parameters |> Seq.collect (fun p -> values p.Value) |> Array.ofSeq
          let torchTheta () = reference |> Seq.collect (fun (_, q) -> values q) |> Array.ofSeq
          let theta0 = coreTheta ()
          let drift = [ for p in core.Parameters -> torch.randn(p.Value.shape, generator = gen) ]
          let mutable worst = 0.0
          for t in 1..100 do
              use _ = torch.NewDisposeScope()
              // A steady direction plus noise, shrinking as 1/√t: the parameters travel far, and v̂ lags m̂.
              let gs = [ for d in drift -> (d + torch.randn(d.shape, generator = gen)) * (1.0 / sqrt (float t)).ToScalar() ]
              let lr = scheduledLr peak t
              step core lr gs |> ignore
              torchAdamW.zero_grad()
              List.iter2 (fun (_, q) g -> accumulateGrad q g) reference gs
              for pg in torchAdamW.ParamGroups do pg.LearningRate <- lr
              torchAdamW.step() |> ignore
              let expected = torchTheta ()
              worst <- max worst (relativeError (coreTheta ()) expected)
          atMost tolerance "worst ‖θ_core − θ_TorchSharp‖/‖θ_TorchSharp‖ over 100 steps" worst
          let moved = relativeError (coreTheta ()) theta0
          if not (moved > 0.1) then failtestf "the parameters moved only %.3g of ‖θ₀‖; the comparison says little" moved
      } ]

let private maskAndScaleTests =
    [ testPropertyWithConfig propConfig
          "the default group rule decays rank ≥ 2 only: with zero gradient, weights shrink by (1−ηλ) per step (1e-6 relative) and biases keep their value bitwise"
      <| fun (DoNotSize seed) ->
          use _ = torch.NewDisposeScope()
          let rng = Random seed
          use gen = generator seed
          // ηλ ≥ 1e-5: the shrink is ten times the tolerance, so "no decay" cannot pass.
          let decay = logUniform rng 1e-2 1.0
          let named = [ "w", leaf gen [| 6L; 4L |]; "kernel", leaf gen [| 2L; 3L; 3L |]; "b", leaf gen [| 4L |]; "gain", leaf gen [||] ]
          let opt = Optimizer.AdamW(assign (GroupRule.DecayByRank decay) named)
          let groups = [ for p in opt.Parameters -> p.Name, p.Group.Name ]
          Expect.equal groups [ "w", "decay"; "kernel", "decay"; "b", "no_decay"; "gain", "no_decay" ] "group of each parameter"
          for t in 1..3 do
              use _ = torch.NewDisposeScope()
              let lr = logUniform rng 1e-3 1e-1
              let before = [ for p in opt.Parameters -> p.Value.detach().clone() ]
              step opt lr [ for p in opt.Parameters -> torch.zeros_like p.Value ] |> ignore
              for p, old in List.zip (List.ofSeq opt.Parameters) before do
                  if p.Group.WeightDecay > 0.0 then
                      Array.iter2
                          (fun now was ->
                              let expected = (1.0 - lr * decay) * was
                              if abs (now - expected) > tolerance * abs was then
                                  failtestf "%s at t=%d: %.9g, expected (1−ηλ)·%.9g = %.9g" p.Name t now was expected)
                          (values p.Value) (values old)
                  elif not (bitwiseEqual p.Value old) then failtestf "%s changed at t=%d" p.Name t

      testPropertyWithConfig propConfig
          "Adam's first update is −η·sign(g) at any gradient scale 1e-3…1e3 (|g| ≥ 5e4·ε; |Δθ + η·sign(g)| ≤ 1e-4·η)"
      <| fun (DoNotSize seed) ->
          use _ = torch.NewDisposeScope()
          let rng = Random seed
          use gen = generator seed
          let beta1, beta2, _ = drawBetasEps rng
          let scale = logUniform rng 1e-3 1e3
          let lr = logUniform rng 1e-4 1e-1
          let shape = [| 5L; 5L |]
          let theta = leaf gen shape
          // |g| ∈ [0.5, 1.5)·scale, so ε/|g| ≤ 2e-5 and m̂/(√v̂+ε) = g/(|g|+ε) is sign(g) to that accuracy.
          let magnitude = (torch.rand(shape, generator = gen) + 0.5f.ToScalar()) * scale.ToScalar()
          let g = torch.randn(shape, generator = gen).sign() * magnitude
          let delta = List.exactlyOne (step (adamW (beta1, beta2, 1e-8) 0.0 [ "theta", theta ]) lr [ g ])
          Array.iter2
              (fun d gi ->
                  if abs (d + lr * float (sign gi)) > 1e-4 * lr then
                      failtestf "scale %.3g: Δθ = %.9g for g = %.9g, expected −η·sign(g) = %.9g" scale d gi (-lr * float (sign gi)))
              delta (values g) ]

let tests = testList "optimizer" (formulaTests @ torchSharpTests @ maskAndScaleTests)
