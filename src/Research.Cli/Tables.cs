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

    public static void Row(Table table, params string[] cells) => table.AddRow(cells.Select(c => (IRenderable)new Text(c)).ToArray());

    /// <summary>
    /// Writes the table to the current standard output with no width imposed, on a terminal too: a cell is never wrapped,
    /// so a long run name stays one word to copy or grep (a wide row wraps as the terminal wraps any long line).
    /// </summary>
    public static void Write(Table table)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors, Interactive = InteractionSupport.No,
            Out = new AnsiConsoleOutput(Console.Out),
        });
        console.Profile.Width = 100_000;
        console.Write(table);
    }
}
