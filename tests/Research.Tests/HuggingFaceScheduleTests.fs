/// Our schedules against Hugging Face's `transformers.get_scheduler`, schedule by schedule. The `hf…` functions
/// are the lambdas of transformers' optimization.py written out in F# (float arithmetic in the same order), so each
/// property states where ours and theirs are the same function of the step and where they part. Then the names:
/// Hugging Face's scheduler names and argument names are accepted where they mean the same, and refused with advice
/// where they do not.
module Research.Tests.HuggingFaceScheduleTests

open System
open System.Collections.Generic
open Expecto
open Research.Abstractions
open Research.Core.Config
open Research.Core.Plugins
open Research.Plugins.Schedules
open Research.Tests.TestSupport

/// Closed forms evaluated in a different order agree to a few ulps.
let private tolerance = 1e-12

let private near (expected: float) (actual: float) (what: string) =
    if not (abs (actual - expected) <= tolerance + tolerance * abs expected) then
        failtestf "%s: Hugging Face %.17g, ours %.17g" what expected actual

let private noEvaluations : IReadOnlyList<EvaluationPoint> = [||]

let private ours (schedule: ISchedule) (total: int64) (step: int64) =
    let context = ScheduleContext(step, total, 1L, noEvaluations)
    schedule.Multiplier &context

// ---- transformers/optimization.py, the lr_lambda of each get_… function (step = current_step) ----

let private hfWarmup (step: int64) (w: int64) = float step / float (max 1L w)

let private hfConstantWithWarmup (w: int64) (step: int64) = if step < w then hfWarmup step w else 1.0

let private hfLinear (w: int64) (total: int64) (step: int64) =
    if step < w then hfWarmup step w
    else max 0.0 (float (total - step) / float (max 1L (total - w)))

/// get_cosine_schedule_with_warmup, and get_cosine_with_min_lr_schedule_with_warmup with min_lr_rate.
let private hfCosine (numCycles: float) (minLrRate: float) (w: int64) (total: int64) (step: int64) =
    if step < w then hfWarmup step w
    else
        let progress = float (step - w) / float (max 1L (total - w))
        let factor = 0.5 * (1.0 + cos (Math.PI * numCycles * 2.0 * progress))
        max 0.0 (factor * (1.0 - minLrRate) + minLrRate)

let private hfHardRestarts (numCycles: int64) (w: int64) (total: int64) (step: int64) =
    if step < w then hfWarmup step w
    else
        let progress = float (step - w) / float (max 1L (total - w))
        if progress >= 1.0 then 0.0
        else max 0.0 (0.5 * (1.0 + cos (Math.PI * ((float numCycles * progress) % 1.0))))

let private hfPolynomial (lrInit: float) (lrEnd: float) (power: float) (w: int64) (total: int64) (step: int64) =
    if step < w then hfWarmup step w
    elif step > total then lrEnd / lrInit
    else
        let pctRemaining = 1.0 - float (step - w) / float (total - w)
        ((lrInit - lrEnd) * pctRemaining ** power + lrEnd) / lrInit

/// get_inverse_sqrt_schedule: timescale None is num_warmup_steps, or 10,000 without warmup.
let private hfInverseSqrt (timescale: int64 option) (w: int64) (step: int64) =
    let tau = timescale |> Option.defaultValue (if w > 0L then w else 10_000L)
    if step < w then hfWarmup step w
    else 1.0 / sqrt (float (step + (tau - w)) / float tau)

/// get_wsd_schedule with warmup_type "linear" and num_cycles 0.5; num_stable_steps = T − W − D.
let private hfWsd (decayType: string) (minLrRatio: float) (w: int64) (decay: int64) (total: int64) (step: int64) =
    let stable = total - w - decay
    if step < w then max 0.0 (hfWarmup step w * (1.0 - minLrRatio) + minLrRatio)
    elif step < w + stable then 1.0
    elif step < w + stable + decay then
        let progress = float (step - w - stable) / float (max 1L decay)
        let factor =
            match decayType with
            | "linear" -> 1.0 - progress
            | "cosine" -> 0.5 * (1.0 + cos (Math.PI * 0.5 * 2.0 * progress))
            | _ -> 1.0 - sqrt progress
        max 0.0 (factor * (1.0 - minLrRatio) + minLrRatio)
    else minLrRatio

// ---- draws: FsCheck gives integers; each maps them into a range ----

let private within (lo: int) (hi: int) (n: int) = lo + abs (n % (hi - lo + 1))
let private ratio (n: int) = float (within 0 1000 n) / 1000.0

/// A warmup W in [0, 50] and a run of T = W + [1, 400] updates.
let private run (w': int) (span: int) =
    let w = int64 (within 0 50 w')
    w, w + int64 (within 1 400 span)

let private agree (hf: int64 -> float) (schedule: ISchedule) (total: int64) (steps: int64 seq) (what: string) =
    for t in steps do near (hf t) (ours schedule total t) (sprintf "%s at t = %d of T = %d" what t total)

let private config = { propConfig with maxTest = 200 }

let private formulas =
    testList "the same function of the step" [
        testPropertyWithConfig config "constant with warmup = constant_with_warmup, at every step" <| fun (w': int) (span: int) ->
            let w, total = run w' span
            agree (hfConstantWithWarmup w) (Constant(WarmupOptions(WarmupSteps = w))) total [ 0L .. total + 20L ] "constant"

        testPropertyWithConfig config "linear with end_ratio 0 = get_linear_schedule_with_warmup, at every step" <| fun (w': int) (span: int) ->
            let w, total = run w' span
            agree (hfLinear w total) (Linear(LinearOptions(WarmupSteps = w))) total [ 0L .. total + 20L ] "linear"

        testPropertyWithConfig config "cosine = get_cosine_schedule_with_warmup up to T; after T ours holds 0 where theirs rises again"
        <| fun (w': int) (span: int) ->
            let w, total = run w' span
            let s = Cosine(CosineOptions(WarmupSteps = w))
            agree (hfCosine 0.5 0.0 w total) s total [ 0L .. total ] "cosine"
            let after = [ total + 1L .. total + (total - w) ]
            for t in after do near 0.0 (ours s total t) (sprintf "ours after T, t = %d" t)
            // Past T their progress exceeds 1 and the cosine climbs back: a run that outlives its T (early stopping
            // off, a resumed run with more epochs) would see its rate grow there.
            if total - w >= 2L then
                Expect.isGreaterThan (hfCosine 0.5 0.0 w total (total + (total - w) / 2L)) 0.1 "theirs half way into the second half-wave"

        testPropertyWithConfig config "cosine with min_lr_ratio = get_cosine_with_min_lr_schedule_with_warmup(min_lr_rate) up to T"
        <| fun (w': int) (span: int) (m': int) ->
            let w, total = run w' span
            let m = ratio m'
            agree (hfCosine 0.5 m w total) (Cosine(CosineOptions(WarmupSteps = w, MinLrRatio = m))) total [ 0L .. total ] "cosine_with_min_lr"

        testPropertyWithConfig config "cosine-restarts with cycles = n = get_cosine_with_hard_restarts_schedule_with_warmup(num_cycles = n), at every step"
        <| fun (w': int) (span: int) (n': int) ->
            let w, total = run w' span
            let n = int64 (within 1 12 n')
            let s = CosineRestarts(CosineRestartsOptions(WarmupSteps = w, Cycles = n))
            agree (hfHardRestarts n w total) s total [ 0L .. total + 20L ] "cosine_with_restarts"

        testPropertyWithConfig config "polynomial with end_ratio = lr_end / lr = get_polynomial_decay_schedule_with_warmup, at every step"
        <| fun (w': int) (span: int) (e': int) (k': int) ->
            let w, total = run w' span
            let lr = 3e-4
            let lrEnd = lr * ratio e'
            let power = 0.25 + 3.0 * ratio k'
            let s = Polynomial(PolynomialOptions(WarmupSteps = w, EndRatio = lrEnd / lr, Power = power))
            agree (hfPolynomial lr lrEnd power w total) s total [ 0L .. total + 20L ] "polynomial"

        testPropertyWithConfig config "inverse-sqrt = get_inverse_sqrt_schedule when timescale is the warmup (both defaults), at every step"
        <| fun (w': int) (span: int) ->
            let w, total = run w' span
            let w = max 1L w // without warmup ours asks for a timescale, theirs takes 10,000
            agree (hfInverseSqrt None w) (InverseSqrt(InverseSqrtOptions(WarmupSteps = w))) total [ 0L .. total + 20L ] "inverse_sqrt"

        testPropertyWithConfig config "inverse-sqrt with timescale τ > W holds 1 until τ where get_inverse_sqrt_schedule has decayed since W"
        <| fun (w': int) (extra: int) ->
            let w = int64 (within 1 50 w')
            let tau = w + int64 (within 2 100 extra)
            let s = InverseSqrt(InverseSqrtOptions(WarmupSteps = w, Timescale = tau))
            near 1.0 (ours s 1L (tau - 1L)) "ours just before τ"
            Expect.isLessThan (hfInverseSqrt (Some tau) w (tau - 1L)) 1.0 "theirs just before τ"
            // From τ on both fall as t^(−½); theirs is shifted by τ − W: √(τ/(t − W + τ)) against √(τ/t).
            for t in [ tau; 2L * tau; 10L * tau ] do
                near (sqrt (float tau / float (t - w + tau))) (hfInverseSqrt (Some tau) w t) (sprintf "theirs at %d" t)
                near (sqrt (float tau / float t)) (ours s 1L t) (sprintf "ours at %d" t)

        testPropertyWithConfig config "warmup-stable-decay with decay_steps = get_wsd_schedule(num_decay_steps) from the end of warmup on, and everywhere when min_lr_ratio is 0"
        <| fun (w': int) (span: int) (d': int) (m': int) (shape': int) ->
            let w, total = run w' span
            let decay = int64 (within 1 (int (total - w)) d')
            let m = if m' % 3 = 0 then 0.0 else ratio m'
            let shape, hfType = [| DecayShape.Linear, "linear"; DecayShape.Cosine, "cosine"; DecayShape.Sqrt, "1-sqrt" |][within 0 2 shape']
            let s = WarmupStableDecay(WarmupStableDecayOptions(WarmupSteps = w, DecaySteps = decay, MinLrRatio = m, DecayShape = shape))
            // Their warmup rises from min_lr_ratio, ours from 0 (every other schedule here, and theirs, start at 0).
            let first = if m = 0.0 then 0L else w
            agree (hfWsd hfType m w decay total) s total [ first .. total + 20L ] (sprintf "wsd %s" hfType)
    ]

// ---- the names ----

let private host = lazy (PluginHost.Load([]))

/// An options type whose default does not satisfy its declaration: the user must choose the count.
type NeedsCount() =
    [<Option(Min = 1.0)>]
    member val Count = 0L with get, set

let private canonical (text: string) =
    ResolvedConfig.Canonical(ConfigLoader.Parse(text, "hf.toml"), host.Value, "train")

let private scheduleOf (text: string) =
    let c = canonical text
    match c["schedule"] with
    | null -> failtest "no schedule in the canonical config"
    | node -> node.ToJsonString()

let private errorOf (text: string) =
    try
        canonical text |> ignore
        failtestf "accepted:\n%s" text
    with :? ConfigException as e -> e.Message

let private names =
    testList "names" [
        test "Hugging Face's scheduler and argument names make the same run as ours, recorded under our names" {
            for hf, ourName, ourKeys in
                [ "name = \"constant_with_warmup\"\nnum_warmup_steps = 5", "constant", "warmup_steps = 5"
                  "name = \"cosine_with_min_lr\"\nnum_warmup_steps = 5\nmin_lr_rate = 0.1", "cosine", "warmup_steps = 5\nmin_lr_ratio = 0.1"
                  "name = \"cosine_with_restarts\"\nnum_cycles = 3", "cosine-restarts", "cycles = 3"
                  "name = \"inverse_sqrt\"\nnum_warmup_steps = 8", "inverse-sqrt", "warmup_steps = 8"
                  "name = \"warmup_stable_decay\"\nnum_decay_steps = 7", "warmup-stable-decay", "decay_steps = 7"
                  "name = \"reduce_lr_on_plateau\"\npatience = 4", "reduce-on-plateau", "patience = 4" ] do
                let theirs = scheduleOf $"[schedule]\n{hf}\n"
                let mine = scheduleOf $"[schedule]\nname = \"{ourName}\"\n{ourKeys}\n"
                Expect.equal theirs mine (sprintf "%s against %s" hf ourName)
                Expect.stringContains theirs $"\"name\":\"{ourName}\"" "recorded under our name"
            let a = ResolvedConfig.Identity(canonical "[schedule]\nname = \"cosine_with_min_lr\"\nnum_warmup_steps = 5\n", host.Value)
            let b = ResolvedConfig.Identity(canonical "[schedule]\nname = \"cosine\"\nwarmup_steps = 5\n", host.Value)
            Expect.equal a b "one identity, so a sweep written either way finds the same runs"
        }
        test "an option given under both its names is refused naming both" {
            let e = errorOf "[schedule]\nname = \"linear\"\nwarmup_steps = 5\nnum_warmup_steps = 5\n"
            Expect.stringContains e "hf.toml: schedule.num_warmup_steps: is the same option as warmup_steps" e
        }
        test "Hugging Face's keys that mean something else here are refused with what to write instead, naming the file and key" {
            for schedule, key, advice in
                [ "polynomial", "lr_end = 1e-7", "end_ratio = lr_end / lr"
                  "cosine", "min_lr = 1e-6", "min_lr_ratio = min_lr / lr"
                  "cosine", "num_cycles = 0.5", "cosine-restarts"
                  "reduce-on-plateau", "min_lr = 1e-6", "min_lr_ratio = min_lr / lr"
                  "warmup-stable-decay", "decay_type = \"1-sqrt\"", "decay_shape"
                  "warmup-stable-decay", "num_stable_steps = 10", "what warmup and decay leave"
                  "linear", "num_training_steps = 100", "the run's own number of updates" ] do
                let e = errorOf $"[schedule]\nname = \"{schedule}\"\n{key}\n"
                let written = key.Split(' ').[0]
                Expect.stringContains e $"hf.toml: schedule.{written}: " (sprintf "%s names the file and the key" key)
                Expect.stringContains e advice (sprintf "%s on %s gives its advice" key schedule)
        }
        test "cosine-restarts takes cycle_steps or cycles: neither, both, or cycles with a growing cycle_mult are refused" {
            Expect.stringContains (errorOf "[schedule]\nname = \"cosine-restarts\"\n") "schedule.cycle_steps: 0 with cycles = 0 sets no cycle" "neither"
            Expect.stringContains (errorOf "[schedule]\nname = \"cosine-restarts\"\ncycles = 2\ncycle_steps = 10\n") "schedule.cycles: 2 and cycle_steps are both set" "both"
            Expect.stringContains (errorOf "[schedule]\nname = \"cosine_with_restarts\"\nnum_cycles = 2\ncycle_mult = 2.0\n") "schedule.cycle_mult: 2.0 must be 1 with cycles" "growing"
        }
        test "a mistyped key or schedule name suggests the nearest one" {
            Expect.stringContains (errorOf "[schedule]\nname = \"linear\"\nwarmup_step = 5\n") "schedule.warmup_step: unknown key (did you mean 'warmup_steps'?)" "key"
            let e =
                try
                    host.Value.Find(PluginRole.Schedule, "cosin") |> ignore
                    failtest "found"
                with :? PluginException as e -> e.Message
            Expect.stringContains e "no schedule named 'cosin' (did you mean 'cosine'?)" "name"
            Expect.equal (host.Value.Find(PluginRole.Schedule, "cosine_with_restarts").Name) "cosine-restarts" "an alias finds its plugin"
        }
        test "a declared option left out is checked against its declaration too" {
            let e =
                try
                    OptionsBinder.Bind(typeof<NeedsCount>, null, "n.toml", "method") |> ignore
                    failtest "accepted"
                with :? ConfigException as e -> e.Message
            Expect.stringContains e "n.toml: method.count: is not set, and its default 0 must be ≥ 1" "names the key and the rule"
        }
    ]

let tests = testList "Hugging Face schedules" [ formulas; names ]
