/// Summaries of a sweep from its merged store: trials grouped by arm and axis levels (everything but the seed), each
/// metric as mean ± 95% confidence interval over seeds, as a console table, CSV and plots.
module Research.Sweeps.Summary

open System
open System.Globalization
open System.IO
open Research.Core.Tracking
open Research.Sweeps.SweepStore

/// Mean, 95% half-width and sd over seeds (RunResults.MeanCi, shared with `research runs compare`).
let meanCi (xs: float[]) =
    let struct (mean, half, sd) = RunResults.MeanCi xs
    mean, half, sd

/// The probes of a finished study run, by name (empty when the run stored no record).
let probes (store: Store) (runId: string) : Collections.Generic.IReadOnlyDictionary<string, float[][]> =
    match Research.Core.Studies.StudyRecord.Load(store.Runs, runId) with
    | null -> readOnlyDict []
    | record -> record.Probes

/// The names of a probe expression: `A` or `A / B` (a ratio; spaces around the slash, since names hold slashes).
let private operands (expr: string) =
    match expr.Split(" / ", StringSplitOptions.TrimEntries) with
    | [| a |] -> a, None
    | [| a; b |] -> a, Some b
    | _ -> invalidArg "expr" (sprintf "'%s': a probe expression is NAME or NAME / NAME" expr)

/// Cell (i, c) of `A`, or of `A / B` cell by cell; None where a name is missing or the value is not finite.
let private cell (ps: Collections.Generic.IReadOnlyDictionary<string, float[][]>) (a: string, b: string option) (i: int) (c: int) =
    let get name =
        match ps.TryGetValue name with
        | true, m when i < m.Length && c < m[i].Length && Double.IsFinite(m[i][c]) -> Some(m[i][c])
        | _ -> None
    match get a, b |> Option.map get with
    | Some x, None -> Some x
    | Some x, Some(Some y) when y <> 0.0 -> Some(x / y)
    | _ -> None

/// The mean of f(i, j) over the task pairs (i, j), j < i, of T tasks where it has a value; None where none has.
let private pairMean (T: int) (f: int -> int -> float option) =
    match [ for i in 0 .. T - 1 do for j in 0 .. i - 1 do match f i j with Some v -> yield v | None -> () ] with
    | [] -> None
    | xs -> Some(List.average xs)

/// `probe:EXPR` of a study run (Spec's Probe): the mean over the task pairs (i, j), j < i, of the expression's cell.
let probeMetric (store: Store) (runId: string) (expr: string) : float option =
    let ps = probes store runId
    let names = operands expr
    let T = match ps.TryGetValue(fst names) with | true, m -> m.Length | _ -> 0
    pairMean T (cell ps names)

/// `along:EXPR` of a study run (Spec's Along): for each of the m points inside the later tasks, the fraction of the task
/// trained and the expression over hessian_along/, each the mean over the task pairs (i, j), j < i (the probes' row i,
/// column j·m + p). None when the run has no points.
let alongOf (store: Store) (runId: string) (expr: string) : (float * float) array option =
    let ps = probes store runId
    let a, b = operands expr
    let prefix (n: string) = Research.Abstractions.ProbeNames.HessianAlong + "/" + n
    let names = prefix a, b |> Option.map prefix
    match ps.TryGetValue(prefix "fraction") with
    | true, fractions when fractions.Length > 0 ->
        let T = fractions.Length
        let m = fractions[0].Length / T
        let mean (names: string * string option) p = pairMean T (fun i j -> cell ps names i (j * m + p)) |> Option.defaultValue nan
        let points = [| for p in 0 .. m - 1 -> mean (prefix "fraction", None) p, mean names p |]
        if m = 0 || points |> Array.forall (fun (f, _) -> Double.IsNaN f) then None else Some points
    | _ -> None

/// A metric of a finished run of `command` (train or study): for a study, a study metric by name; <split>_accuracy or
/// <split>_loss, the split's final value (RunReader.Final: the last evaluation of a training run, the average over
/// the tasks after the last task of a study); or the last value of a logged metric (`log:PLUGIN/NAME`: a plugin's).
let metricOf (store: Store) (command: string) (runId: string) (metric: string) : float option =
    let study () = if command = "study" then Option.ofNullable (store.Runs.StudyMetric(runId, metric)) else None
    let split () =
        let m = Text.RegularExpressions.Regex.Match(metric, "^(\\w+)_(accuracy|loss)$")
        if m.Success then Option.ofNullable (store.Runs.Final(runId, m.Groups[1].Value, m.Groups[2].Value)) else None
    let logged () = Option.ofNullable (store.Runs.LastMetric(runId, Log.key metric))
    if metric.StartsWith Probe.Prefix then (if command = "study" then probeMetric store runId (metric.Substring Probe.Prefix.Length) else None)
    else study () |> Option.orElseWith split |> Option.orElseWith logged

/// The finished run of a trial: the latest that completed — it finished, or failed only in a study metric, whose other
/// values are stored (RunReader.Completed).
let finishedRun (store: Store) (trial: Trial) : string option = store.CompletedRun trial

/// The finished trials by group (arm and one level per axis: everything but the seed), in the order of the sweep.
let byGroup (trials: Trial list) =
    trials
    |> List.filter (fun t -> t.State = "finished")
    |> List.groupBy (fun t -> t.Spec.Arm, [ for l in t.Spec.Labels -> l[0], l[1] ])

/// An axis as shown in tables: its last key segment (methods.0.lambda → lambda).
let short (axis: string) = axis.Split('.') |> Array.last

/// One group: an arm with one level per axis, and the metric of each seed's finished run.
type Group =
    { Arm: string
      Labels: (string * string) list
      Numbers: Map<string, float>
      Values: (int * float) list }
    member g.Title =
        if g.Labels.IsEmpty then g.Arm
        else g.Arm + " " + (g.Labels |> List.map (fun (a, l) -> sprintf "%s=%s" (short a) l) |> String.concat " ")

let private f4 (x: float) = if Double.IsNaN x then "–" else x.ToString("F4", CultureInfo.InvariantCulture)
let private r (x: float) = if Double.IsNaN x then "" else x.ToString("R", CultureInfo.InvariantCulture)

/// A trial's numeric axis levels, by axis.
let private numbersOf (t: Trial) =
    Map.ofList [ for (l, n) in Array.zip t.Spec.Labels t.Spec.Numbers do if n.HasValue then l[0], n.Value ]

/// The finished run of each finished trial, grouped; trials in the order of the sweep. A group none of whose runs has
/// the metric (a study metric asked of a training arm) is left out.
let groups (store: Store) (trials: Trial list) (metric: string) : Group list =
    [ for ((arm, labels), ts) in byGroup trials do
          let t0 = List.head ts
          let values = [ for t in ts do match finishedRun store t |> Option.bind (fun run -> metricOf store t.Spec.Command run metric) with Some v -> yield t.Spec.Seed, v | None -> () ]
          if not values.IsEmpty then
              yield
                  { Arm = arm
                    Labels = labels
                    Numbers = numbersOf t0
                    Values = values } ]

/// `along:EXPR` (Spec's Along) as groups: one per group of the sweep and point inside the later task, with the axis
/// `Along.Axis` (the fraction of the task trained, the mean over seeds) added to its levels.
let along (store: Store) (trials: Trial list) (expr: string) : Group list =
    [ for ((arm, labels), ts) in byGroup trials do
          let numbers = numbersOf (List.head ts)
          let perSeed = [ for t in ts do match finishedRun store t |> Option.bind (fun run -> alongOf store run expr) with Some xs -> yield t.Spec.Seed, xs | None -> () ]
          if not perSeed.IsEmpty then
              for p in 0 .. (perSeed |> List.map (snd >> Array.length) |> List.min) - 1 do
                  let fraction = perSeed |> List.averageBy (fun (_, xs) -> fst xs[p])
                  let values = [ for (seed, xs) in perSeed do if Double.IsFinite(snd xs[p]) then yield seed, snd xs[p] ]
                  if not values.IsEmpty then
                      yield
                          { Arm = arm
                            Labels = labels @ [ Along.Axis, fraction.ToString("F3", CultureInfo.InvariantCulture) ]
                            Numbers = numbers.Add(Along.Axis, fraction)
                            Values = values } ]

/// Each group's values minus the baseline arm's value of the same seed (seeds missing on either side are left out);
/// the baseline's own group is dropped. The baseline arm must have no axes (one group).
let paired (baseline: string) (gs: Group list) : Group list =
    match gs |> List.filter (fun g -> g.Arm = baseline) with
    | [ b ] ->
        let reference = Map.ofList b.Values
        [ for g in gs do
              if g.Arm <> baseline then
                  yield { g with Values = [ for (seed, v) in g.Values do match reference.TryFind seed with Some r -> yield seed, v - r | None -> () ] } ]
    | [] -> []
    | _ -> invalidArg "baseline" (sprintf "the baseline arm '%s' has several groups (axes); pair with an arm without axes" baseline)

/// The console table: a row per group, the metric's mean ± 95% CI and the number of seeds.
let table (metric: string) (gs: Group list) =
    let w = max 24 (gs |> List.map (fun g -> g.Title.Length) |> List.fold max 0)
    let sb = Text.StringBuilder()
    sb.AppendLine(sprintf "%s: mean ± 95%% CI over seeds (Student t)" metric) |> ignore
    sb.AppendLine(sprintf "%-*s %5s  %-20s %8s" w "group" "seeds" "mean ± 95% CI" "sd") |> ignore
    for g in gs do
        let mean, half, sd = meanCi (g.Values |> List.map snd |> Array.ofList)
        let ci = if Double.IsNaN half then f4 mean else sprintf "%s ± %s" (f4 mean) (f4 half)
        sb.AppendLine(sprintf "%-*s %5d  %-20s %8s" w g.Title g.Values.Length ci (f4 sd)) |> ignore
    sb.ToString()

/// CSV: a row per group — arm, one column per axis, seeds, mean, 95% interval, sd, and each seed's value.
let csv (metric: string) (gs: Group list) =
    let axes = gs |> List.collect (fun g -> g.Labels |> List.map fst) |> List.distinct
    let header = [ yield "arm"; yield! axes; yield! [ "metric"; "seeds"; "mean"; "ci95_low"; "ci95_high"; "ci95_half"; "sd"; "values" ] ]
    let rows =
        [ for g in gs ->
            let xs = g.Values |> List.map snd |> Array.ofList
            let mean, half, sd = meanCi xs
            seq {
                yield g.Arm
                for a in axes -> (g.Labels |> List.tryFind (fun (x, _) -> x = a) |> Option.map snd |> Option.defaultValue "")
                yield metric
                yield string xs.Length
                yield r mean
                yield r (mean - half)
                yield r (mean + half)
                yield r half
                yield r sd
                yield (g.Values |> List.map (fun (s, v) -> sprintf "s%d=%s" s (r v)) |> String.concat " ") } ]
    Csv.ToText(header, rows)

/// The metric against an axis with 95% error bars, a line per group of the arms that have the axis (per level of
/// their other axes); arms without it are horizontal baselines with their interval as a band.
let plot (path: string) (sweep: string) (metric: string) (axis: string) (logX: bool) (gs: Group list) =
    let p = new ScottPlot.Plot()
    let x (v: float) = if logX then log10 v else v
    let withAxis, baselines = gs |> List.partition (fun g -> g.Numbers.ContainsKey axis)
    let mutable color = 0
    let next () =
        let c = ScottPlot.Palettes.Category10().GetColor color
        color <- color + 1
        c
    let lines =
        withAxis
        |> List.groupBy (fun g -> g.Arm, g.Labels |> List.filter (fun (a, _) -> a <> axis))
        |> List.map (fun ((arm, others), gs) ->
            let gs = gs |> List.sortBy (fun g -> g.Numbers[axis])
            let stats = gs |> List.map (fun g -> meanCi (g.Values |> List.map snd |> Array.ofList))
            let label = if others.IsEmpty then arm else arm + " " + (others |> List.map (fun (a, l) -> short a + "=" + l) |> String.concat " ")
            label, gs |> List.map (fun g -> x g.Numbers[axis]) |> Array.ofList, stats)
    for (label, xs, stats) in lines do
        let c = next ()
        let ys = stats |> List.map (fun (m, _, _) -> m) |> Array.ofList
        let es = stats |> List.map (fun (_, h, _) -> if Double.IsNaN h then 0.0 else h) |> Array.ofList
        let s = p.Add.Scatter(xs, ys, c)
        s.LegendText <- label
        s.LineWidth <- 2.0f
        s.MarkerSize <- 7.0f
        let e = p.Add.ErrorBar(xs, ys, es)
        e.Color <- c
        e.LineWidth <- 1.5f
    for g in baselines do
        let c = next ()
        let mean, half, _ = meanCi (g.Values |> List.map snd |> Array.ofList)
        if not (Double.IsNaN half) then
            let band = p.Add.VerticalSpan(mean - half, mean + half)
            band.FillStyle.Color <- c.WithAlpha 0.15
            band.LineStyle.Width <- 0.0f
        let line = p.Add.HorizontalLine(mean)
        line.Color <- c
        line.LinePattern <- ScottPlot.LinePattern.Dashed
        line.LineWidth <- 2.0f
        line.LegendText <- g.Title
    if logX then
        let values = withAxis |> List.map (fun g -> g.Numbers[axis]) |> List.distinct |> List.sort
        let ticks = ScottPlot.TickGenerators.NumericManual()
        for v in values do ticks.AddMajor(log10 v, v.ToString("G4", CultureInfo.InvariantCulture))
        p.Axes.Bottom.TickGenerator <- ticks
    p.Title(sprintf "%s: %s against %s (mean ± 95%% CI over seeds)" sweep metric (short axis))
    p.XLabel(short axis + (if logX then " (log scale)" else ""))
    p.YLabel metric
    p.ShowLegend(ScottPlot.Edge.Right) |> ignore
    Research.Reporting.PlotFile.SavePng(p, path, 1000, 550)

/// For study sweeps: each group's test-accuracy matrix averaged over its seeds, as a heatmap.
let matrices (dir: string) (store: Store) (trials: Trial list) =
    [ for (arm, labels), ts in byGroup trials do
          let cells =
              ts
              |> List.choose (finishedRun store)
              |> List.choose (fun run -> Option.ofObj (store.Runs.Matrix(run, "test")))
              |> List.map (fun m -> m.Accuracy)
          if not cells.IsEmpty then
              let n = cells |> List.map (fun m -> m.Length) |> List.max
              let mean =
                  Array.init n (fun i ->
                      Array.init n (fun j ->
                          let xs = [ for m in cells do if i < m.Length && j < m[i].Length && not (Double.IsNaN(m[i][j])) then m[i][j] ]
                          if xs.IsEmpty then nan else List.average xs))
              let levels = arm :: List.map snd labels
              let slug = String.concat "-" levels |> String.map (fun ch -> if Char.IsLetterOrDigit ch || ch = '.' || ch = '-' then ch else '_')
              let path = Path.Combine(dir, sprintf "matrix-%s.png" slug)
              Research.Reporting.StudyPlot.WriteMatrix(path, String.concat " " levels + sprintf ": test accuracy, mean of %d seed(s)" ts.Length, mean)
              yield path ]

/// A logged metric (train_loss) against the step, one line per group: the mean over its seeds at the steps all of
/// them logged. None when no finished run logged it.
let curves (path: string) (title: string) (store: Store) (trials: Trial list) (key: string) =
    let lines =
        [ for (arm, labels), ts in byGroup trials do
              let perSeed =
                  ts
                  |> List.choose (finishedRun store)
                  |> List.map (fun run ->
                      store.Runs.Metric(run, Log.key key)
                      |> Seq.map (fun p -> float p.Step, p.Value)
                      |> Map.ofSeq)
                  |> List.filter (fun m -> not m.IsEmpty)
              if not perSeed.IsEmpty then
                  let steps = perSeed |> List.map (fun m -> set m.Keys) |> Set.intersectMany |> Set.toArray
                  let mean = steps |> Array.map (fun s -> perSeed |> List.averageBy (fun m -> m[s]))
                  yield String.concat " " (arm :: [ for (a, l) in labels -> short a + "=" + l ]), steps, mean ]
    if lines.IsEmpty then None
    else
        Research.Reporting.StudyPlot.WriteCurves(path, title, key, [ for (l, s, v) in lines -> struct (l, s, v) ] |> ResizeArray)
        Some path
