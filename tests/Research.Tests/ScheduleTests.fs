/// The schedules are pure functions of the step; each test states an identity of one of them and checks
/// it over random warmups, run lengths and options. Inputs are drawn inside each property from plain
/// integers, so FsCheck needs no registered generators.
module Research.Tests.ScheduleTests

open System
open System.Collections.Generic
open System.Reflection
open Expecto
open FsCheck
open Research.Abstractions
open Research.Core.Config
open Research.Plugins.Schedules

let private config = { FsCheckConfig.defaultConfig with maxTest = 200 }

/// Closed-form values agree to rounding; the tolerance covers a few ulps of sums like m + (1 − m).
let private tolerance = 1e-12

let private noEvaluations : IReadOnlyList<EvaluationPoint> = [||]

let private contextWith (evaluations: IReadOnlyList<EvaluationPoint>) (total: int64) (step: int64) =
    ScheduleContext(step, total, 1L, evaluations)

/// ISchedule.Multiplier takes its context as an `in` parameter, which F# passes by address.
let private multiplier (schedule: ISchedule) (context: ScheduleContext) = schedule.Multiplier &context

let private at (schedule: ISchedule) (total: int64) (step: int64) =
    multiplier schedule (contextWith noEvaluations total step)

let private near (expected: float) (actual: float) (what: string) =
    if not (abs (actual - expected) <= tolerance + tolerance * abs expected) then
        failtestf "%s: expected %.17g, got %.17g" what expected actual

let private atMost (bound: float) (actual: float) (what: string) =
    if not (actual <= bound + tolerance) then failtestf "%s: %.17g is above %.17g" what actual bound

/// n mapped into [lo, hi].
let private within (lo: int) (hi: int) (n: int) = lo + (abs (n % (hi - lo + 1)))

/// n mapped to a ratio in [0, 1] with three decimals.
let private ratio (n: int) = float (within 0 1000 n) / 1000.0

let private nonIncreasing (f: int64 -> float) (first: int64) (last: int64) (what: string) =
    for t in first .. last - 1L do
        atMost (f t) (f (t + 1L)) (sprintf "%s, from t = %d to t + 1" what t)

/// ½(1 + cos(π/4)): how much of the way from start to end a cosine has still to go at p = ¼. At p = ½ a
/// cosine and a line agree, so a quarter is where a test can tell them apart.
let private cosineAtQuarter = (2.0 + sqrt 2.0) / 4.0

let private evaluation (step: int64) (valLoss: float) =
    EvaluationPoint(step, 0, readOnlyDict [ "val_loss", valLoss ])

/// The options unchanged, after checking that the test itself drew valid ones.
let private valid (options: 'o) =
    match List.ofSeq (OptionSchema.Errors(box options)) with
    | [] -> options
    | errors -> failwithf "the test drew invalid options %A: %A" options errors

/// FsCheck draws small integers; two of them make a few tens of thousands of distinct generators.
let private randomFrom (a: int) (b: int) = Random(1000 * a + b)

/// Every schedule, with valid options drawn from rng such that each reaches its peak at the end of its
/// warmup w when T > w (one-cycle has no warmup and is listed apart).
let private warmupSchedules (rng: Random) (w: int64) : (string * ISchedule) list =
    let r () = float (rng.Next 1001) / 1000.0
    let shape = [| DecayShape.Linear; DecayShape.Cosine; DecayShape.Sqrt |]
    let named name (s: ISchedule) = name, s
    [ named "constant" (Constant(valid (WarmupOptions(WarmupSteps = w))))
      named "linear" (Linear(valid (LinearOptions(WarmupSteps = w, EndRatio = r ()))))
      named "cosine" (Cosine(valid (CosineOptions(WarmupSteps = w, MinLrRatio = r ()))))
      named "cosine-restarts" (
          CosineRestarts(valid (CosineRestartsOptions(WarmupSteps = w, CycleSteps = int64 (rng.Next(1, 60)),
                                                      CycleMult = 1.0 + 2.0 * r (), MinLrRatio = r ()))))
      named "step" (
          StepDecay(valid (StepDecayOptions(WarmupSteps = w, StepSize = int64 (rng.Next(1, 60)), Gamma = max 0.01 (r ())))))
      named "exponential" (
          Exponential(valid (ExponentialOptions(WarmupSteps = w, DecayRate = max 0.01 (r ()),
                                                DecaySteps = int64 (rng.Next 60)))))
      named "polynomial" (Polynomial(valid (PolynomialOptions(WarmupSteps = w, EndRatio = r (), Power = 0.1 + 3.0 * r ()))))
      // Without warmup the timescale must be given.
      named "inverse-sqrt" (
          InverseSqrt(valid (InverseSqrtOptions(WarmupSteps = w, Timescale = (if w = 0L then int64 (rng.Next(1, 60)) else 0L)))))
      named "warmup-stable-decay" (
          WarmupStableDecay(valid (WarmupStableDecayOptions(WarmupSteps = w, DecayFraction = r (), MinLrRatio = r (),
                                                            DecayShape = shape[rng.Next shape.Length]))))
      named "reduce-on-plateau" (
          ReduceOnPlateau(valid (ReduceOnPlateauOptions(WarmupSteps = w, Patience = rng.Next 4, Cooldown = rng.Next 3,
                                                        Factor = 0.05 + 0.9 * r (), MinLrRatio = r ())))) ]

let private allSchedules (rng: Random) (w: int64) =
    let oneCycle =
        OneCycle(valid (OneCycleOptions(PctStart = 0.05 + 0.9 * float (rng.Next 1001) / 1000.0,
                                        DivFactor = float (rng.Next(1, 100)), FinalDivFactor = float (rng.Next(1, 100000)),
                                        Anneal = (if rng.Next 2 = 0 then AnnealStrategy.Cos else AnnealStrategy.Linear))))
    ("one-cycle", oneCycle :> ISchedule) :: warmupSchedules rng w

/// A val_loss history with plateaus (values from a small set), one evaluation every `every` steps.
let private randomHistory (rng: Random) (every: int64) (count: int) : IReadOnlyList<EvaluationPoint> =
    [| for i in 1 .. count -> evaluation (every * int64 i) (float (rng.Next 5)) |]

/// PyTorch's ReduceLROnPlateau.step (threshold_mode "rel", eps 0), transcribed with its mutable state:
/// the stateful original that the pure fold must agree with, evaluation by evaluation.
type private PlateauReference(mode: PlateauMode, factor, patience, threshold, cooldown, minLr) =
    let mutable best = if mode = PlateauMode.Min then infinity else -infinity
    let mutable numBadEpochs = 0
    let mutable cooldownCounter = 0
    let mutable lr = 1.0
    member _.Step(current: float) =
        let isBetter =
            if mode = PlateauMode.Min then current < best * (1.0 - threshold) else current > best * (1.0 + threshold)
        if isBetter then
            best <- current
            numBadEpochs <- 0
        else
            numBadEpochs <- numBadEpochs + 1
        if cooldownCounter > 0 then
            cooldownCounter <- cooldownCounter - 1
            numBadEpochs <- 0
        if numBadEpochs > patience then
            lr <- max (lr * factor) minLr
            cooldownCounter <- cooldown
            numBadEpochs <- 0
        lr

let tests =
    testList "schedules" [
        testPropertyWithConfig config "warmup starts at 0, is t/W during warmup and reaches the peak at its end"
        <| fun (PositiveInt w') (PositiveInt span) (seed: int) ->
            let w = int64 (within 1 300 w')
            let total = w + int64 (within 1 2000 span)
            for name, s in warmupSchedules (randomFrom w' seed) w do
                near 0.0 (at s total 0L) $"{name}: f(0)"
                let t = int64 (within 0 (int w - 1) seed)
                near (float t / float w) (at s total t) $"{name}: f({t}) with W = {w}"
                near 1.0 (at s total w) $"{name}: f(W) with W = {w}, T = {total}"

        testPropertyWithConfig config "linear falls by equal steps from the peak at W to end_ratio at T and stays there"
        <| fun (NonNegativeInt w') (PositiveInt span) (e': int) ->
            let w, total, e = int64 (within 0 300 w'), int64 (within 0 300 w') + int64 (within 1 1000 span), ratio e'
            let s = Linear(LinearOptions(WarmupSteps = w, EndRatio = e))
            near 1.0 (at s total w) "f(W)"
            near e (at s total total) "f(T)"
            near e (at s total (total + 7L)) "f(T + 7)"
            let drop = (1.0 - e) / float (total - w)
            for t in w .. total - 1L do
                near drop (at s total t - at s total (t + 1L)) $"f({t}) − f({t + 1L})"

        testCase "linear with default options reaches 0 at T" <| fun () ->
            let s = Linear(LinearOptions(WarmupSteps = 10L))
            near 0.0 (at s 100L 100L) "f(T)"
            near 0.5 (at s 100L 55L) "f halfway through the decay"

        testPropertyWithConfig config "cosine is at the peak after warmup, at min at the end, never increasing between"
        <| fun (NonNegativeInt w') (PositiveInt span) (m': int) ->
            let w, m = int64 (within 0 300 w'), ratio m'
            let total = w + int64 (within 1 1000 span)
            let s = Cosine(CosineOptions(WarmupSteps = w, MinLrRatio = m))
            near 1.0 (at s total w) "f(W)"
            near m (at s total total) "f(T)"
            near m (at s total (2L * total + 1L)) "f after T (not periodic)"
            nonIncreasing (at s total) w (total + 3L) "f"
            if (total - w) % 4L = 0L then
                near (m + (1.0 - m) * cosineAtQuarter) (at s total (w + (total - w) / 4L)) "f a quarter through the decay"

        testPropertyWithConfig config "cosine-restarts returns to the peak at each cycle start and falls within a cycle"
        <| fun (NonNegativeInt w') (PositiveInt l0') (mult': int) (m': int) ->
            let w, l0, m = int64 (within 0 100 w'), int64 (within 1 40 l0'), 0.9 * ratio m'
            let mult = [| 1.0; 2.0; 1.0 + 2.0 * ratio mult' |][within 0 2 mult']
            let s = CosineRestarts(CosineRestartsOptions(WarmupSteps = w, CycleSteps = l0, CycleMult = mult, MinLrRatio = m))
            let f = at s 1L
            let mutable start, length = w, l0
            for _ in 1 .. 6 do
                near 1.0 (f start) $"f at the cycle start {start} (length {length})"
                for t in start .. start + length - 2L do
                    if not (f (t + 1L) < f t) then failtestf "f rises or stalls inside the cycle at t = %d" t
                if length % 2L = 0L then near ((1.0 + m) / 2.0) (f (start + length / 2L)) "f at the middle of a cycle"
                start <- start + length
                length <- int64 (floor (float length * mult))

        testPropertyWithConfig config "cosine-restarts with cycle_mult = 1 is periodic with period cycle_steps"
        <| fun (NonNegativeInt w') (PositiveInt l') (NonNegativeInt t') ->
            let w, l = int64 (within 0 100 w'), int64 (within 1 50 l')
            let s = CosineRestarts(CosineRestartsOptions(WarmupSteps = w, CycleSteps = l, MinLrRatio = 0.1))
            let t = w + int64 t'
            near (at s 1L t) (at s 1L (t + 5L * l)) $"f({t}) and f({t} + 5·{l})"

        testPropertyWithConfig config "step decay multiplies by γ at each boundary and is constant between"
        <| fun (NonNegativeInt w') (PositiveInt size') (g': int) ->
            let w, size, gamma = int64 (within 0 100 w'), int64 (within 1 30 size'), float (within 1 1000 g') / 1000.0
            let s = StepDecay(StepDecayOptions(WarmupSteps = w, StepSize = size, Gamma = gamma))
            near 1.0 (at s 1L w) "f(W)"
            for t in w + 1L .. w + 5L * size do
                let expected = if (t - w) % size = 0L then gamma else 1.0
                near expected (at s 1L t / at s 1L (t - 1L)) $"f({t}) / f({t - 1L}) with step_size {size}"

        testPropertyWithConfig config "step decay with milestones is γ^(number of milestones ≤ t) after warmup"
        <| fun (NonNegativeInt w') (gaps: PositiveInt list) (g': int) ->
            let w, gamma = int64 (within 0 100 w'), float (within 1 1000 g') / 1000.0
            let milestones = gaps |> List.truncate 5 |> List.scan (fun m (PositiveInt gap) -> m + int64 (within 1 40 gap)) 0L |> List.tail
            if not milestones.IsEmpty then
                let s = StepDecay(StepDecayOptions(WarmupSteps = w, Milestones = Array.ofList milestones, Gamma = gamma))
                for t in w .. List.last milestones + 3L do
                    let passed = milestones |> List.filter (fun m -> m <= t) |> List.length
                    near (gamma ** float passed) (at s 1L t) $"f({t}) with milestones {milestones}"

        testPropertyWithConfig config "exponential decay falls by decay_rate every decay_steps, and to decay_rate at T by default"
        <| fun (NonNegativeInt w') (PositiveInt steps') (r': int) (PositiveInt span) ->
            let w, steps, rate = int64 (within 0 100 w'), int64 (within 1 50 steps'), float (within 1 1000 r') / 1000.0
            let s = Exponential(ExponentialOptions(WarmupSteps = w, DecaySteps = steps, DecayRate = rate))
            near 1.0 (at s 1L w) "f(W)"
            for t in w .. w + 3L * steps do
                near (rate * at s 1L t) (at s 1L (t + steps)) $"f({t} + {steps}) against rate · f({t})"
            let total = w + int64 (within 1 500 span)
            let byDefault = Exponential(ExponentialOptions(WarmupSteps = w, DecayRate = rate))
            near rate (at byDefault total total) "f(T) with decay_steps = 0"

        testPropertyWithConfig config "polynomial reaches end_ratio at T and with power 1 equals linear"
        <| fun (NonNegativeInt w') (PositiveInt span) (e': int) (p': int) ->
            let w, e = int64 (within 0 100 w'), ratio e'
            let total = w + int64 (within 1 500 span)
            let power = 0.1 + 4.0 * ratio p'
            let curved = Polynomial(PolynomialOptions(WarmupSteps = w, EndRatio = e, Power = power))
            near 1.0 (at curved total w) "f(W)"
            near e (at curved total total) "f(T)"
            nonIncreasing (at curved total) w total "f"
            let straight = Polynomial(PolynomialOptions(WarmupSteps = w, EndRatio = e))
            let linear = Linear(LinearOptions(WarmupSteps = w, EndRatio = e))
            for t in 0L .. total + 2L do
                near (at linear total t) (at straight total t) $"polynomial and linear at t = {t}"

        testPropertyWithConfig config "inverse-sqrt is continuous at the end of warmup and ∝ 1/√t after"
        <| fun (PositiveInt w') (NonNegativeInt t') ->
            let w = int64 (within 1 300 w')
            let s = InverseSqrt(InverseSqrtOptions(WarmupSteps = w))
            near 1.0 (at s 1L w) "f(W)"
            near (float (w - 1L) / float w) (at s 1L (w - 1L)) "f(W − 1), the last warmup step"
            let t = w + int64 t'
            near (sqrt (float w)) (at s 1L t * sqrt (float t)) $"f({t})·√{t}"
            near (at s 1L t / 2.0) (at s 1L (4L * t)) $"f(4·{t}) against f({t}) / 2"

        testPropertyWithConfig config "inverse-sqrt with timescale τ > W is flat until τ, then √(τ/t)"
        <| fun (NonNegativeInt w') (PositiveInt extra) (NonNegativeInt t') ->
            let w = int64 (within 0 100 w')
            let tau = w + int64 (within 1 100 extra)
            let s = InverseSqrt(InverseSqrtOptions(WarmupSteps = w, Timescale = tau))
            for t in w .. tau do near 1.0 (at s 1L t) $"f({t}) before τ = {tau}"
            let t = tau + int64 t'
            near (sqrt (float tau / float t)) (at s 1L t) $"f({t})"

        testPropertyWithConfig config "WSD is flat through its stable phase and decays to min_lr_ratio at T along its shape"
        <| fun (NonNegativeInt w') (PositiveInt span) (d': int) (m': int) (shape': int) ->
            let w, m, fraction = int64 (within 0 200 w'), ratio m', ratio d'
            let total = w + int64 (within 1 1000 span)
            let shape = [| DecayShape.Linear; DecayShape.Cosine; DecayShape.Sqrt |][within 0 2 shape']
            let s = WarmupStableDecay(WarmupStableDecayOptions(WarmupSteps = w, DecayFraction = fraction,
                                                               MinLrRatio = m, DecayShape = shape))
            let decayStart = max w (total - int64 (Math.Round(fraction * float total, MidpointRounding.AwayFromZero)))
            for t in w .. decayStart - 1L do
                if at s total t <> 1.0 then failtestf "f(%d) = %.17g in the stable phase [%d, %d)" t (at s total t) w decayStart
            near m (at s total total) $"f(T) with shape {shape}"
            near m (at s total (total + 9L)) "f after T"
            nonIncreasing (at s total) decayStart total "f in the decay"
            if (total - decayStart) % 4L = 0L && total > decayStart then
                let remaining =
                    match shape with
                    | DecayShape.Linear -> 0.75
                    | DecayShape.Cosine -> cosineAtQuarter
                    | _ -> 1.0 - sqrt 0.25
                let quarter = decayStart + (total - decayStart) / 4L
                near (m + (1.0 - m) * remaining) (at s total quarter) $"f a quarter through the {shape} decay"

        testPropertyWithConfig config "one-cycle starts at 1/div, peaks at round(pct_start·T), ends at 1/(div·final_div)"
        <| fun (PositiveInt total') (p': int) (d': int) (f': int) (a': int) ->
            let total = int64 (within 20 3000 total')
            let pct = 0.05 + 0.9 * ratio p'
            let div, finalDiv = float (within 1 100 d'), float (within 1 100000 f')
            let anneal = if a' % 2 = 0 then AnnealStrategy.Cos else AnnealStrategy.Linear
            let s = OneCycle(OneCycleOptions(PctStart = pct, DivFactor = div, FinalDivFactor = finalDiv, Anneal = anneal))
            let peak = int64 (Math.Round(pct * float total, MidpointRounding.AwayFromZero))
            near (1.0 / div) (at s total 0L) "f(0)"
            near 1.0 (at s total peak) $"f at the peak step {peak}"
            near (1.0 / (div * finalDiv)) (at s total total) "f(T)"
            near (1.0 / (div * finalDiv)) (at s total (total + 5L)) "f after T"
            nonIncreasing (fun t -> -(at s total t)) 0L peak "−f while rising"
            nonIncreasing (at s total) peak total "f while falling"
            if (total - peak) % 4L = 0L then
                let e = 1.0 / (div * finalDiv)
                let remaining = if anneal = AnnealStrategy.Cos then cosineAtQuarter else 0.75
                near (e + (1.0 - e) * remaining) (at s total (peak + (total - peak) / 4L)) $"f a quarter through the {anneal} fall"

        testPropertyWithConfig config "reduce-on-plateau reduces by factor at the (patience+1)-th evaluation without improvement, not before"
        <| fun (NonNegativeInt w') (NonNegativeInt p') (f': int) (maximize: bool) ->
            let w, patience, factor = int64 (within 0 50 w'), within 0 6 p', 0.05 + 0.9 * ratio f'
            let mode = if maximize then PlateauMode.Max else PlateauMode.Min
            let options = ReduceOnPlateauOptions(WarmupSteps = w, Patience = patience, Factor = factor, Mode = mode)
            let s = ReduceOnPlateau(options)
            // One evaluation that improves on the initial ±∞, then patience + 1 that repeat it: no improvement.
            let stepOf i = w + 1L + 3L * int64 i
            let history : IReadOnlyList<EvaluationPoint> = [| for i in 0 .. patience + 1 -> evaluation (stepOf i) 2.0 |]
            let f t = multiplier s (contextWith history 1000L t)
            near 1.0 (f w) "f(W)"
            for i in 0 .. patience do near 1.0 (f (stepOf i)) $"f at evaluation {i} (without improvement: {i})"
            near 1.0 (f (stepOf (patience + 1) - 1L)) "f just before the reducing evaluation"
            near factor (f (stepOf (patience + 1))) "f at the reducing evaluation"

        testPropertyWithConfig config "reduce-on-plateau equals PyTorch's stateful ReduceLROnPlateau stepped at each evaluation"
        <| fun (a: int) (b: int) ->
            let rng = randomFrom a b
            let mode = if rng.Next 2 = 0 then PlateauMode.Min else PlateauMode.Max
            let factor, threshold = 0.1 + 0.8 * rng.NextDouble(), [| 0.0; 1e-4; 0.3 |][rng.Next 3]
            let patience, cooldown, minLr = rng.Next 4, rng.Next 3, [| 0.0; 0.05; 0.5 |][rng.Next 3]
            let options = ReduceOnPlateauOptions(Mode = mode, Factor = factor, Patience = patience, Threshold = threshold,
                                                 Cooldown = cooldown, MinLrRatio = minLr)
            let s = ReduceOnPlateau(options)
            let history = randomHistory rng 4L 30
            let reference = PlateauReference(mode, factor, patience, threshold, cooldown, minLr)
            for e in history do
                let expected = reference.Step e.Metrics["val_loss"]
                near expected (multiplier s (contextWith history 1000L e.Step)) $"f at step {e.Step}"
                near expected (multiplier s (contextWith history 1000L (e.Step + 3L))) $"f just before the next evaluation"

        testCase "reduce-on-plateau names a missing metric" <| fun () ->
            let s = ReduceOnPlateau(ReduceOnPlateauOptions(Metric = "val_accuracy"))
            let history : IReadOnlyList<EvaluationPoint> = [| evaluation 1L 0.5 |]
            let e = Expect.throwsC (fun () -> multiplier s (contextWith history 10L 5L) |> ignore) id
            Expect.stringContains e.Message "val_accuracy" "the message names the watched metric"
            Expect.stringContains e.Message "val_loss" "the message lists the recorded metrics"

        testPropertyWithConfig config "every schedule is pure: calling twice or out of order gives the same value"
        <| fun (a: int) (b: int) ->
            let rng = randomFrom a b
            let w, total = int64 (rng.Next 50), int64 (rng.Next(51, 300))
            let history = randomHistory rng 7L 40
            let steps = [| 0L .. total + 20L |]
            for name, s in allSchedules rng w do
                let f t = multiplier s (contextWith history total t)
                let inOrder = steps |> Array.map f
                let shuffled = steps |> Array.sortBy (fun _ -> rng.Next())
                for t in shuffled do
                    let first, second = f t, f t
                    if first <> inOrder[int t] || second <> first then
                        failtestf "%s: f(%d) was %.17g in order, then %.17g and %.17g" name t inOrder[int t] first second

        testPropertyWithConfig config "every schedule stays within [0, 1]"
        <| fun (a: int) (b: int) ->
            let rng = randomFrom a b
            let w, total = int64 (rng.Next 50), int64 (rng.Next(1, 300))
            let history = randomHistory rng 5L 60
            for name, s in allSchedules rng w do
                for t in 0L .. 2L * total do
                    let f = multiplier s (contextWith history total t)
                    if not (f >= 0.0 && f <= 1.0 + tolerance) then failtestf "%s: f(%d) = %.17g with W = %d, T = %d" name t f w total

        testCase "the tests cover every schedule plugin of the assembly" <| fun () ->
            let plugins =
                typeof<Constant>.Assembly.GetTypes()
                |> Array.choose (fun t -> t.GetCustomAttribute<PluginAttribute>() |> Option.ofObj)
                |> Array.map (fun a -> a.Name)
                |> Set.ofArray
            let tested = allSchedules (Random 0) 1L |> List.map fst |> Set.ofList
            Expect.equal tested plugins "schedules in the assembly and in warmupSchedules/allSchedules"

        testCase "invalid options are reported with their key" <| fun () ->
            let cases : (string * obj * string) list = [
                "negative warmup", WarmupOptions(WarmupSteps = -1L), "warmup_steps"
                "linear end above the peak", LinearOptions(EndRatio = 1.5), "end_ratio"
                "cosine negative min", CosineOptions(MinLrRatio = -0.1), "min_lr_ratio"
                "cosine NaN min", CosineOptions(MinLrRatio = nan), "min_lr_ratio"
                "SGDR without cycle length", CosineRestartsOptions(), "cycle_steps"
                "SGDR shrinking cycles", CosineRestartsOptions(CycleSteps = 10L, CycleMult = 0.5), "cycle_mult"
                "step without step_size", StepDecayOptions(), "step_size"
                "step with γ = 0", StepDecayOptions(StepSize = 10L, Gamma = 0.0), "gamma"
                "step with γ > 1", StepDecayOptions(StepSize = 10L, Gamma = 2.0), "gamma"
                "step with both", StepDecayOptions(StepSize = 10L, Milestones = [| 5L |]), "step_size"
                "step with unordered milestones", StepDecayOptions(Milestones = [| 50L; 20L |]), "milestones"
                "exponential rate 0", ExponentialOptions(DecayRate = 0.0), "decay_rate"
                "exponential negative steps", ExponentialOptions(DecaySteps = -5L), "decay_steps"
                "polynomial power 0", PolynomialOptions(Power = 0.0), "power"
                "polynomial end below 0", PolynomialOptions(EndRatio = -1.0), "end_ratio"
                "inverse-sqrt without timescale or warmup", InverseSqrtOptions(), "timescale"
                "inverse-sqrt negative timescale", InverseSqrtOptions(WarmupSteps = 5L, Timescale = -1L), "timescale"
                "WSD fraction above 1", WarmupStableDecayOptions(DecayFraction = 1.2), "decay_fraction"
                "WSD min above 1", WarmupStableDecayOptions(MinLrRatio = 2.0), "min_lr_ratio"
                "WSD unnamed shape", WarmupStableDecayOptions(DecayShape = enum<DecayShape> 7), "decay_shape"
                "one-cycle pct_start 1", OneCycleOptions(PctStart = 1.0), "pct_start"
                "one-cycle div below 1", OneCycleOptions(DivFactor = 0.5), "div_factor"
                "one-cycle final div 0", OneCycleOptions(FinalDivFactor = 0.0), "final_div_factor"
                "one-cycle unnamed anneal", OneCycleOptions(Anneal = enum<AnnealStrategy> 9), "anneal"
                "plateau empty metric", ReduceOnPlateauOptions(Metric = ""), "metric"
                "plateau unnamed mode", ReduceOnPlateauOptions(Mode = enum<PlateauMode> 3), "mode"
                "plateau factor 1", ReduceOnPlateauOptions(Factor = 1.0), "factor"
                "plateau negative patience", ReduceOnPlateauOptions(Patience = -1), "patience"
                "plateau negative threshold", ReduceOnPlateauOptions(Threshold = -0.1), "threshold"
                "plateau negative cooldown", ReduceOnPlateauOptions(Cooldown = -2), "cooldown"
                "plateau min above 1", ReduceOnPlateauOptions(MinLrRatio = 1.5), "min_lr_ratio" ]
            for what, options, key in cases do
                let keys = OptionSchema.Errors(box options) |> Seq.map (fun e -> e.Key) |> List.ofSeq
                Expect.equal keys [ key ] $"{what}: the keys reported"
                Expect.contains (OptionsBinder.Keys(options.GetType()).Keys) key $"{what}: {key} is a key the host binds"

        testCase "default options are valid where every option has a default" <| fun () ->
            let defaults : obj list = [
                WarmupOptions(); LinearOptions(); CosineOptions(); ExponentialOptions(); PolynomialOptions()
                InverseSqrtOptions(WarmupSteps = 100L); WarmupStableDecayOptions(); OneCycleOptions()
                ReduceOnPlateauOptions(); CosineRestartsOptions(CycleSteps = 100L); StepDecayOptions(StepSize = 100L)
                StepDecayOptions(Milestones = [| 100L; 200L |]) ]
            for options in defaults do
                Expect.isEmpty (OptionSchema.Errors options) $"{options}"

        testCase "warmup_ratio r is warmup_steps = round(r·T): each warmup schedule gives the same multiplier at every step t ≤ T, for r in {0.05, 0.1, 0.37} and T in {7, 100, 1001}" <| fun () ->
            for r in [ 0.05; 0.1; 0.37 ] do
                for T in [ 7L; 100L; 1001L ] do
                    let w = int64 (Math.Round(r * float T, MidpointRounding.AwayFromZero))
                    let pairs : (string * ISchedule * ISchedule) list =
                        [ "constant", Constant(WarmupOptions(WarmupRatio = r)), Constant(WarmupOptions(WarmupSteps = w))
                          "linear", Linear(LinearOptions(WarmupRatio = r, EndRatio = 0.1)), Linear(LinearOptions(WarmupSteps = w, EndRatio = 0.1))
                          "cosine", Cosine(CosineOptions(WarmupRatio = r, MinLrRatio = 0.1)), Cosine(CosineOptions(WarmupSteps = w, MinLrRatio = 0.1))
                          "polynomial", Polynomial(PolynomialOptions(WarmupRatio = r, Power = 2.0)), Polynomial(PolynomialOptions(WarmupSteps = w, Power = 2.0))
                          "wsd", WarmupStableDecay(WarmupStableDecayOptions(WarmupRatio = r)), WarmupStableDecay(WarmupStableDecayOptions(WarmupSteps = w))
                          "exponential", Exponential(ExponentialOptions(WarmupRatio = r)), Exponential(ExponentialOptions(WarmupSteps = w)) ]
                    for name, byRatio, bySteps in pairs do
                        for t in 0L .. T do
                            Expect.equal (at byRatio T t) (at bySteps T t) (sprintf "%s r=%g T=%d t=%d" name r T t)

        testCase "warmup_steps and warmup_ratio together are refused, naming warmup_ratio" <| fun () ->
            let keys = OptionSchema.Errors(CosineOptions(WarmupSteps = 10L, WarmupRatio = 0.1)) |> Seq.map (fun e -> e.Key) |> List.ofSeq
            Expect.equal keys [ "warmup_ratio" ] "one error, on warmup_ratio"
    ]
