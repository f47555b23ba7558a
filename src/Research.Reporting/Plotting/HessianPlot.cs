using Research.Core.Hessian;

namespace Research.Reporting;

/// <summary>Figures of the forgetting decomposition (<see cref="ForgettingDecomposition"/>).</summary>
public static class HessianPlot
{
    /// <summary>The quadratic model's prediction ∇L·Δθ + ½ΔθᵀHΔθ against the measured increase, one point per pair (task
    /// ends filled, points inside a task hollow), with the diagonal y = x where the model is exact.</summary>
    public static void WritePredictedAgainstMeasured(string path, string title, IReadOnlyList<DecompositionPoint> points,
        int width = 800, int height = 700)
    {
        var plot = new ScottPlot.Plot();
        foreach (var group in points.GroupBy(p => p.Earlier))
        {
            var ends = group.Where(p => p.Step < 0).ToList();
            var inside = group.Where(p => p.Step >= 0).ToList();
            var color = plot.Add.Palette.GetColor(group.Key);
            if (ends.Count > 0)
            {
                var s = plot.Add.ScatterPoints(ends.Select(p => p.Measured).ToArray(), ends.Select(p => p.Predicted).ToArray());
                s.LegendText = $"task {group.Key}, task ends";
                s.MarkerSize = 9;
                s.Color = color;
            }
            if (inside.Count > 0)
            {
                var s = plot.Add.ScatterPoints(inside.Select(p => p.Measured).ToArray(), inside.Select(p => p.Predicted).ToArray());
                s.LegendText = $"task {group.Key}, inside later tasks";
                s.MarkerShape = ScottPlot.MarkerShape.OpenCircle;
                s.MarkerSize = 7;
                s.Color = color;
            }
        }
        var all = points.SelectMany(p => new[] { p.Measured, p.Predicted }).Where(double.IsFinite).ToList();
        if (all.Count > 0)
        {
            double lo = Math.Min(0, all.Min()), hi = all.Max();
            var diagonal = plot.Add.Line(lo, lo, hi, hi);
            diagonal.LegendText = "y = x";
            diagonal.LinePattern = ScottPlot.LinePattern.Dashed;
            diagonal.Color = ScottPlot.Colors.Gray;
        }
        Finish(plot, title + ": predicted against measured loss increase", "measured L_j(θ) − L_j(θ_j)", "∇L·Δθ + ½ΔθᵀHΔθ", path, width, height);
    }

    /// <summary>The top-k eigenvalues of each task's Hessian at its end, by index.</summary>
    public static void WriteSpectrum(string path, string title, IReadOnlyList<(int Task, IReadOnlyList<double> Eigenvalues)> spectra,
        int width = 900, int height = 500)
    {
        var plot = new ScottPlot.Plot();
        foreach (var (task, eigenvalues) in spectra)
        {
            var line = plot.Add.Scatter(Enumerable.Range(1, eigenvalues.Count).Select(i => (double)i).ToArray(), eigenvalues.ToArray());
            line.LegendText = $"task {task}";
            line.LineWidth = 2;
            line.MarkerSize = 5;
        }
        Finish(plot, title + ": top eigenvalues of each task's Hessian", "index", "eigenvalue λ", path, width, height);
    }

    /// <summary>The share of the change Δθ (‖P_kΔθ‖²/‖Δθ‖², solid) and of the quadratic term (dashed) in the top-k
    /// eigenspace of H_j, against how far into the later task the point lies.</summary>
    public static void WriteOverlap(string path, string title, IReadOnlyList<DecompositionPoint> points, int width = 900, int height = 500)
    {
        var plot = new ScottPlot.Plot();
        foreach (var group in points.GroupBy(p => (p.Earlier, p.Later)))
        {
            var ordered = group.OrderBy(p => p.Fraction).ToList();
            double[] xs = ordered.Select(p => p.Fraction).ToArray();
            var color = plot.Add.Palette.GetColor(group.Key.Earlier * 7 + group.Key.Later);
            var norm = plot.Add.Scatter(xs, ordered.Select(p => p.TopKNormShare).ToArray());
            norm.LegendText = $"task {group.Key.Earlier} in task {group.Key.Later}: ‖Δθ‖² share";
            norm.Color = color;
            var quadratic = plot.Add.Scatter(xs, ordered.Select(p => p.TopKQuadraticShare).ToArray());
            quadratic.LegendText = $"task {group.Key.Earlier} in task {group.Key.Later}: quadratic share";
            quadratic.Color = color;
            quadratic.LinePattern = ScottPlot.LinePattern.Dashed;
        }
        Finish(plot, title + ": Δθ in the top-k eigenspace of H_j", "fraction of the later task trained", "share", path, width, height);
    }

    static void Finish(ScottPlot.Plot plot, string title, string x, string y, string path, int width, int height)
    {
        plot.Title(title);
        plot.XLabel(x);
        plot.YLabel(y);
        plot.ShowLegend(ScottPlot.Edge.Right);
        PlotFile.SavePng(plot, path, width, height);
    }
}
