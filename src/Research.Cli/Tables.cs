using Spectre.Console;
using Spectre.Console.Rendering;

namespace Research.Cli;

/// <summary>
/// Tables drawn by Spectre.Console: aligned columns without borders, one row per line, the first column flush left, so
/// the output reads well and still greps and splits on whitespace. Cells are plain text, never markup (a run name may
/// hold '[').
/// </summary>
static class Tables
{
    /// <summary>A column that is left-aligned, or right-aligned for numbers.</summary>
    public sealed record Column(string Header, bool Right = false);

    public static Table Create(params Column[] columns)
    {
        var table = new Table().Border(TableBorder.None);
        for (int i = 0; i < columns.Length; i++)
        {
            // Two spaces between columns, none before the first: a row starts with its first cell.
            var column = new TableColumn(new Text(columns[i].Header))
            {
                Alignment = columns[i].Right ? Justify.Right : Justify.Left,
                Padding = new Padding(0, 0, i == columns.Length - 1 ? 0 : 2, 0),
            };
            table.AddColumn(column);
        }
        return table;
    }

    /// <summary>
    /// A titled matrix of a study of <paramref name="tasks"/> tasks — R, L or a probe: a row per task is labelled
    /// <c>task i</c> (after training task i), a column per task <c>task j</c> (evaluated on task j); other shapes (a probe
    /// of one row, or several values per task) by index. NaN shows as "–".
    /// </summary>
    public static void WriteMatrix(string title, double[][] m, string format, int tasks)
    {
        int width = m.Length == 0 ? 0 : m.Max(r => r.Length);
        bool rowsPerTask = m.Length == tasks, columnsPerTask = width == tasks;
        Console.WriteLine();
        Console.WriteLine(rowsPerTask && columnsPerTask ? $"{title} (row: after training task i; column: task j)" : title);
        var table = Create([new(""), .. Enumerable.Range(0, width).Select(j => new Column(columnsPerTask ? $"task {j}" : $"{j}", Right: true))]);
        for (int i = 0; i < m.Length; i++)
            Row(table, [rowsPerTask ? $"task {i}" : $"{i}",
                .. m[i].Select(v => double.IsNaN(v) ? "–" : v.ToString(format, System.Globalization.CultureInfo.InvariantCulture))]);
        Write(table);
    }

    public static void Row(Table table, params string[] cells) => table.AddRow(cells.Select(c => (IRenderable)new Text(c)).ToArray());

    /// <summary>
    /// Writes the table to the current standard output with no width imposed, on a terminal too: a cell is never wrapped,
    /// so a long run name stays one word to copy or grep (a wide row wraps as the terminal wraps any long line). Lines end
    /// at their last character: a long last cell in one row (an error) pads no other row.
    /// </summary>
    public static void Write(Table table)
    {
        using var text = new StringWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors, Interactive = InteractionSupport.No,
            Out = new AnsiConsoleOutput(text),
        });
        console.Profile.Width = 100_000;
        console.Write(table);
        foreach (var line in text.ToString().TrimEnd().Split('\n')) Console.Out.WriteLine(line.TrimEnd());
    }
}
