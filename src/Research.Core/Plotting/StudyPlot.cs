using Research.Abstractions;

namespace Research.Core.Plotting;

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

    static void Finish(ScottPlot.Plot plot, string title, string x, string y, string path, int width, int height)
    {
        plot.Title(title);
        plot.XLabel(x);
        plot.YLabel(y);
        plot.Axes.SetLimitsY(0, 1);
        plot.ShowLegend(ScottPlot.Edge.Right);
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        plot.SavePng(path, width, height);
    }
}
