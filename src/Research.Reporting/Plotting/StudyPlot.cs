using Research.Abstractions;

namespace Research.Reporting;

/// <summary>Figures of forgetting studies: each task's accuracy as tasks are added, and arms side by side.</summary>
public static class StudyPlot
{
    /// <summary>
    /// One line per task j: its test accuracy R[i][j] after training task i, for i ≥ j (x = tasks trained).
    /// A falling line is forgetting.
    /// </summary>
    public static void WriteTaskAccuracy(string path, string title, EvaluationRecord record, int width = 900, int height = 500)
    {
        var plot = new ScottPlot.Plot();
        int T = record.Tasks.Count;
        for (int j = 0; j < T; j++)
        {
            var xs = Enumerable.Range(j, T - j).Select(i => (double)(i + 1)).ToArray();
            var ys = Enumerable.Range(j, T - j).Select(i => record.Accuracy[i][j]).ToArray();
            var line = plot.Add.Scatter(xs, ys);
            line.LegendText = $"task {j} ({record.Tasks[j]})";
            line.LineWidth = 2;
            line.MarkerSize = 6;
        }
        Finish(plot, title, "tasks trained", "test accuracy", path, width, height);
    }

    /// <summary>Average test accuracy over the tasks seen so far, (1/(i+1)) Σ_{j≤i} R[i][j], one line per arm.</summary>
    public static void WriteAverageAccuracy(string path, string title, IReadOnlyList<(string Arm, EvaluationRecord Record)> arms,
        int width = 900, int height = 500)
    {
        var plot = new ScottPlot.Plot();
        foreach (var (arm, r) in arms)
        {
            int T = r.Tasks.Count;
            var xs = Enumerable.Range(1, T).Select(i => (double)i).ToArray();
            var ys = Enumerable.Range(0, T).Select(i => Enumerable.Range(0, i + 1).Average(j => r.Accuracy[i][j])).ToArray();
            var line = plot.Add.Scatter(xs, ys);
            line.LegendText = arm;
            line.LineWidth = 2;
            line.MarkerSize = 6;
        }
        Finish(plot, title, "tasks trained", "average test accuracy on tasks seen", path, width, height);
    }

    /// <summary>The task × task accuracy matrix as a heatmap, each cell labelled with its value: row i is "after
    /// training task i" (top to bottom), column j "on task j".</summary>
    public static void WriteMatrix(string path, string title, double[][] accuracy, int width = 700, int height = 600)
    {
        PlotFile.SavePng(Matrix(title, accuracy), path, width, height);
    }

    /// <summary>The matrix of <see cref="WriteMatrix"/> as PNG bytes (a TensorBoard image); rows not yet trained are NaN
    /// and left blank.</summary>
    public static byte[] MatrixPng(string title, double[][] accuracy, int width = 560, int height = 480) =>
        Matrix(title, accuracy).GetImageBytes(width, height, ScottPlot.ImageFormat.Png);

    static ScottPlot.Plot Matrix(string title, double[][] accuracy)
    {
        int T = accuracy.Length;
        var cells = new double[T, T];
        for (int i = 0; i < T; i++) for (int j = 0; j < T; j++) cells[i, j] = accuracy[i][j];
        var plot = new ScottPlot.Plot();
        var map = plot.Add.Heatmap(cells);
        map.Colormap = new ScottPlot.Colormaps.Viridis();
        map.ManualRange = new ScottPlot.Range(0, 1);
        // ScottPlot draws row 0 at the top with cell (i, j) centred on x = j, y = T − 1 − i: as the matrix is printed.
        for (int i = 0; i < T; i++)
            for (int j = 0; j < T; j++)
            {
                if (double.IsNaN(accuracy[i][j])) continue;
                var label = plot.Add.Text(accuracy[i][j].ToString("F2", System.Globalization.CultureInfo.InvariantCulture), j, T - 1 - i);
                label.LabelAlignment = ScottPlot.Alignment.MiddleCenter;
                label.LabelFontColor = accuracy[i][j] > 0.6 ? ScottPlot.Colors.Black : ScottPlot.Colors.White;
            }
        plot.Add.ColorBar(map);
        plot.Axes.Bottom.TickGenerator = Ticks(T, j => $"task {j}");
        plot.Axes.Left.TickGenerator = Ticks(T, i => $"after {T - 1 - i}");
        plot.Title(title);
        plot.XLabel("evaluated on");
        plot.YLabel("after training");
        return plot;
    }

    static ScottPlot.TickGenerators.NumericManual Ticks(int n, Func<int, string> label)
    {
        var ticks = new ScottPlot.TickGenerators.NumericManual();
        for (int k = 0; k < n; k++) ticks.AddMajor(k, label(k));
        return ticks;
    }

    /// <summary>One line per run of a metric against the step (loss curves of several runs).</summary>
    public static void WriteCurves(string path, string title, string metric, IReadOnlyList<(string Run, double[] Steps, double[] Values)> runs,
        int width = 900, int height = 500)
    {
        var plot = new ScottPlot.Plot();
        foreach (var (run, steps, values) in runs)
        {
            var line = plot.Add.Scatter(steps, values);
            line.LegendText = run;
            line.MarkerSize = 0;
            line.LineWidth = 2;
        }
        plot.Title(title);
        plot.XLabel("step");
        plot.YLabel(metric);
        plot.ShowLegend(ScottPlot.Edge.Right);
        PlotFile.SavePng(plot, path, width, height);
    }

    static void Finish(ScottPlot.Plot plot, string title, string x, string y, string path, int width, int height)
    {
        plot.Title(title);
        plot.XLabel(x);
        plot.YLabel(y);
        plot.Axes.SetLimitsY(0, 1);
        plot.ShowLegend(ScottPlot.Edge.Right);
        PlotFile.SavePng(plot, path, width, height);
    }
}
