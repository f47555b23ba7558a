// The figures of the VLM study (vlm-components.fsx), read from the summary's CSVs (one row per arm, each seed's value in
// "values"): mean ± 95% CI over seeds (Student t, n − 1 degrees of freedom), computed here from the seeds' values so that
// ‖Δθ‖ is the mean of each seed's root, not the root of a mean.
//
//   dotnet fsi experiments/sweeps/vlm-components-plot.fsx [SUMMARY_DIR]
#r "../../artifacts/bin/ScottPlot.dll"

open System
open System.Globalization
open System.IO

let args = fsi.CommandLineArgs |> Array.skip 1
let dir = if args.Length > 0 then args[0] else Path.Combine(__SOURCE_DIRECTORY__, "vlm-components")
let arms = [ "one-lr"; "seed-table"; "frozen-encoder"; "connector-only"; "table-l2sp-lm"; "table-replay" ]
let components = [ "vision_encoder"; "connector"; "language_model" ]

/// arm → each seed's value, from a summary CSV ("s1=0.5 s2=0.6 s3=0.7").
let seedValues (file: string) : Map<string, float list> =
    let lines = File.ReadAllLines(Path.Combine(dir, file))
    let header = lines[0].Split(',')
    lines
    |> Array.skip 1
    |> Array.map (fun line ->
        let cells = line.Split(',')
        let at name = cells[Array.IndexOf(header, name)]
        let values =
            (at "values").Split(' ', StringSplitOptions.RemoveEmptyEntries)
            |> Array.map (fun kv -> Double.Parse(kv.Split('=')[1], CultureInfo.InvariantCulture))
            |> Array.filter (fun x -> not (Double.IsNaN x)) // a frozen component has no Δθ in the decomposition's layout
            |> List.ofArray
        at "arm", values)
    |> Map.ofArray

/// Mean and the 95% CI half width (Student t; 4.303 for 3 seeds).
let stats (xs: float list) =
    let n = float xs.Length
    let mean = List.average xs
    if xs.Length < 2 then mean, 0.0
    else
        let sd = sqrt ((xs |> List.sumBy (fun x -> (x - mean) ** 2.0)) / (n - 1.0))
        let t = match xs.Length with 2 -> 12.706 | 3 -> 4.303 | 4 -> 3.182 | 5 -> 2.776 | _ -> 2.0
        mean, t * sd / sqrt n

/// Grouped bars: one group per arm, one bar per series (label, arm → values).
let grouped (title: string) (ylabel: string) (series: (string * Map<string, float list>) list) (output: string) =
    let plot = new ScottPlot.Plot()
    let palette = ScottPlot.Palettes.Category10()
    let width = float series.Length + 1.0
    for s, (label, values) in List.indexed series do
        for a, arm in List.indexed arms do
            match values.TryFind arm with
            | Some xs when not xs.IsEmpty ->
                let mean, half = stats xs
                plot.Add.Bar(ScottPlot.Bar(Position = float a * width + float s, Value = mean, Error = half, FillColor = palette.GetColor s)) |> ignore
            | _ -> ()
        plot.Legend.ManualItems.Add(ScottPlot.LegendItem(LabelText = label, FillColor = palette.GetColor s))
    let ticks = ScottPlot.TickGenerators.NumericManual()
    for a, arm in List.indexed arms do ticks.AddMajor(float a * width + (width - 2.0) / 2.0, arm)
    plot.Axes.Bottom.TickGenerator <- ticks
    plot.Axes.Margins(bottom = 0.0)
    plot.Title title
    plot.YLabel ylabel
    plot.ShowLegend(ScottPlot.Edge.Right) |> ignore
    let path = Path.Combine(dir, output)
    plot.SavePng(path, 1100, 450) |> ignore
    printfn "%s" path

grouped "Class word named in held-out captions after task B (mean ± 95% CI, 3 seeds)" "named (share of 500 captions)"
    [ "task A (classes 0–4)", seedValues "caption_named_task0.csv"; "task B (classes 5–9)", seedValues "caption_named_task1.csv" ]
    "captions-named.png"

let root (m: Map<string, float list>) = m |> Map.map (fun _ xs -> xs |> List.map sqrt)
grouped "How far each component moved during task B: ‖Δθ_g‖ (mean ± 95% CI)" "‖Δθ_g‖"
    [ for c in components -> c, root (seedValues (sprintf "probe_delta_norm_squared_%s.csv" c)) ]
    "delta-norm-by-component.png"

grouped "Task A's quadratic forgetting term by component, ½Δθ_gᵀ(H_AΔθ)_g (mean ± 95% CI)" "nats per token"
    [ for c in components -> c, seedValues (sprintf "probe_quadratic_loss_increase_%s.csv" c) ]
    "quadratic-by-component.png"
