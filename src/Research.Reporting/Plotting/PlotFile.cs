using Research.Core.Files;

namespace Research.Reporting;

/// <summary>Where every figure is written: rendered to PNG bytes, then written by <see cref="OutputFile"/> (a whole file
/// renamed into place; a path that leads to a device, a FIFO or a folder is refused, never replaced).</summary>
public static class PlotFile
{
    public static void SavePng(ScottPlot.Plot plot, string path, int width, int height) =>
        OutputFile.WriteAllBytes(path, plot.GetImageBytes(width, height, ScottPlot.ImageFormat.Png));
}
