using Research.Core.Training;
using static TorchSharp.torch;

namespace Research.Reporting;

/// <summary>
/// What a study's TensorBoard file shows beside the store's scalars, at each task end: the test-accuracy matrix so far
/// as an image, and Δθ since the previous task end per parameter group as histograms. Rendered here, outside the core,
/// which draws nothing.
/// </summary>
public sealed class TensorBoardImages : IRunObserver
{
    public void TaskEnded(IRunLoop loop)
    {
        if (loop.Store.Board is not { } board) return;
        long step = loop.Step;
        int T = loop.Run.Tasks.Count;
        var rows = Enumerable.Range(0, T).Select(i => i < loop.StudyRows.Count ? loop.StudyRows[i].TestAccuracy : Enumerable.Repeat(double.NaN, T).ToArray()).ToArray();
        board.Image("study/accuracy_matrix", step, StudyPlot.MatrixPng($"test accuracy after task {loop.Phase}", rows), 560, 480);

        using var _ = NewDisposeScope();
        var o = loop.Optimizer;
        var delta = o.DeltaSince(loop.Layout.TaskStartWeights(loop.Phase));
        foreach (var group in o.Buffer.Groups.GroupBy(g => g.Group.Name))
        {
            using var values = cat(group.Select(g => delta.narrow(0, g.Offset, g.Count)).ToList());
            board.Histogram($"delta_theta/{group.Key}", step, values.data<float>().ToArray());
        }
    }
}
