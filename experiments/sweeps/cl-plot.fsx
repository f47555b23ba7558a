// The bar chart of the continual-learning reproduction: average test accuracy after the last task (mean ± 95% CI over
// seeds 1–3) for each method, one colour per scenario, read from the summary cl-reproduce.fsx wrote.
//
//   dotnet fsi experiments/sweeps/cl-plot.fsx [SUMMARY_DIR] [OUT.png]
#r "../../artifacts/bin/ScottPlot.dll"

open System
open System.Globalization
open System.IO

let args = fsi.CommandLineArgs |> Array.skip 1
let dir = if args.Length > 0 then args[0] else Path.Combine(__SOURCE_DIRECTORY__, "continual-learning")
let output = if args.Length > 1 then args[1] else Path.Combine(dir, "average-accuracy-by-method.png")
let scenarios = [ "split-class"; "split-task"; "permuted" ]
let methods = [ "fine-tuning"; "ewc"; "ewc-batched"; "si"; "mas"; "lwf"; "a-gem"; "replay"; "joint" ]

/// arm → (mean, ci95 half width) from the summary's CSV (one row per group; the chosen value is the arm's only level).
let stats =
    File.ReadAllLines(Path.Combine(dir, "average-accuracy.csv"))
    |> Array.skip 1
    |> Array.map (fun line ->
        let cells = line.Split(',')
        let header = File.ReadLines(Path.Combine(dir, "average-accuracy.csv")) |> Seq.head |> fun h -> h.Split(',')
        let at name = cells[Array.IndexOf(header, name)]
        let number (s: string) = if s = "" then nan else Double.Parse(s, CultureInfo.InvariantCulture)
        at "arm", (number (at "mean"), number (at "ci95_half")))
    |> Map.ofArray

let plot = new ScottPlot.Plot()
let palette = ScottPlot.Palettes.Category10()
for s, scenario in List.indexed scenarios do
    for m, name in List.indexed methods do
        match stats.TryFind(scenario + "-" + name) with
        | Some(mean, half) ->
            let bar = ScottPlot.Bar(Position = float m * 4.0 + float s, Value = mean, Error = (if Double.IsNaN half then 0.0 else half),
                                    FillColor = palette.GetColor s)
            plot.Add.Bar(bar) |> ignore
        | None -> ()
    plot.Legend.ManualItems.Add(ScottPlot.LegendItem(LabelText = scenario, FillColor = palette.GetColor s))
let ticks = ScottPlot.TickGenerators.NumericManual()
for m, name in List.indexed methods do ticks.AddMajor(float m * 4.0 + 1.0, name)
plot.Axes.Bottom.TickGenerator <- ticks
plot.Axes.Margins(bottom = 0.0)
plot.Title "Fashion-MNIST, 5 tasks: average test accuracy after the last task (mean ± 95% CI, 3 seeds)"
plot.YLabel "average accuracy"
plot.ShowLegend(ScottPlot.Edge.Right) |> ignore
plot.SavePng(output, 1100, 500) |> ignore
printfn "%s" output
