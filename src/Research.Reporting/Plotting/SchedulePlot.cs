using System.Globalization;

namespace Research.Reporting;

/// <summary>
/// Learning-rate schedules drawn or tabulated side by side. Each series holds a schedule's multipliers
/// f(0), f(1), ... (calling a pure schedule once per step); the learning rate at step t is η · f(t).
/// </summary>
public static class SchedulePlot
{
    /// <summary>One PNG with every series as a line of learning rate against step, with a legend.</summary>
    public static void WritePng(
        string path,
        IReadOnlyList<(string Name, double[] Values)> series,
        double peakLearningRate,
        int width = 1000,
        int height = 500)
    {
        var plot = new ScottPlot.Plot();
        // The default palette has 10 colours; there are more schedules than that.
        plot.Add.Palette = new ScottPlot.Palettes.Category20();
        foreach (var (name, values) in series)
        {
            var steps = Enumerable.Range(0, values.Length).Select(t => (double)t).ToArray();
            var line = plot.Add.Scatter(steps, values.Select(f => peakLearningRate * f).ToArray());
            line.LegendText = name;
            line.MarkerSize = 0;
            line.LineWidth = 2;
        }
        plot.Title("Learning-rate schedules");
        plot.XLabel("step");
        plot.YLabel("learning rate");
        // Outside the data area: the schedules end in the lower right, where an inner legend would hide them.
        plot.ShowLegend(ScottPlot.Edge.Right);
        PlotFile.SavePng(plot, path, width, height);
    }

    /// <summary>
    /// <c>step,name₁,name₂,...</c> then one row per step with η · f(t) in round-trip format (invariant
    /// culture); a series shorter than the longest leaves its cells empty.
    /// </summary>
    public static string ToCsv(IReadOnlyList<(string Name, double[] Values)> series, double peakLearningRate)
    {
        var steps = series.Count == 0 ? 0 : series.Max(s => s.Values.Length);
        return Research.Core.Tracking.Csv.ToText(series.Select(s => s.Name).Prepend("step"),
            Enumerable.Range(0, steps).Select(t => series.Select(s => t < s.Values.Length ? Research.Core.Tracking.Csv.Number(peakLearningRate * s.Values[t]) : "")
                .Prepend(t.ToString(CultureInfo.InvariantCulture))));
    }

}
