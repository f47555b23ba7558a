using Research.Core.Training;
using Spectre.Console;

namespace Research.Reporting;

/// <summary>
/// A live progress bar (Spectre.Console: loss, lr, throughput, ETA) on an interactive terminal; one line per
/// epoch otherwise (CI logs, pipes).
/// </summary>
public sealed class ConsoleObserver : ITrainingObserver
{
    ProgressTask? _task;
    readonly bool _interactive = AnsiConsole.Profile.Capabilities.Interactive && !Console.IsOutputRedirected;

    /// <summary>Runs <paramref name="body"/> with this observer, inside a live progress display when interactive.</summary>
    public T Run<T>(string title, Func<ITrainingObserver, T> body)
    {
        if (!_interactive) return body(this);
        T result = default!;
        AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
                     new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                _task = ctx.AddTask(Markup.Escape(title), autoStart: true, maxValue: 1);
                result = body(this);
            });
        return result;
    }

    public void Started(string runDir, long totalSteps)
    {
        if (_task != null) _task.MaxValue = totalSteps;
        Message($"run directory {runDir}; {totalSteps} optimizer steps");
    }

    public void Step(long step, long totalSteps, double loss, double learningRate, double itemsPerSecond)
    {
        if (_task == null) return;
        _task.Value = step;
        _task.Description = $"loss {loss:F4}  lr {learningRate:E2}  {itemsPerSecond:F0} items/s";
    }

    public void EpochEnded(int epoch, long step, IReadOnlyDictionary<string, EvalResult> results) =>
        Message($"epoch {epoch + 1} (step {step}): " +
                string.Join("  ", results.Select(r => $"{r.Key} {r.Value.Describe()}")));

    public void Failed(string text) => Console.Error.WriteLine(text);

    public void Message(string text)
    {
        if (_interactive) AnsiConsole.MarkupLine(Markup.Escape(text));
        else Console.WriteLine(text);
    }
}
