/// The command line on System.CommandLine: help for every command from the same declarations the parser uses,
/// suggestions for mistyped names, one "error:" line per parse mistake with exit 2; tables and CSV that hold any run name.
module Research.Tests.CliTests

open System
open System.CommandLine
open System.IO
open System.Text.RegularExpressions
open Expecto
open Microsoft.VisualBasic.FileIO
open Research.Tests.TestSupport

/// Every command of the tree with the words that reach it: ["plot"; "schedule"], groups included.
let rec private commands (path: string list) (command: Command) : (string list * Command) list =
    (path, command) :: [ for sub in command.Subcommands do yield! commands (path @ [ sub.Name ]) sub ]

/// Whitespace runs as one space: help text wraps at the terminal's width.
let private flat (s: string) = Regex.Replace(s, @"\s+", " ")

/// A usage mistake: exit 2, nothing on standard output, every standard-error line an "error:".
let private expectUsageError (r: ProcessResult) (names: string list) =
    Expect.equal r.ExitCode 2 (sprintf "exit 2; stderr: %s" r.Err)
    Expect.equal (r.Out.Trim()) "" "nothing on standard output"
    let lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries)
    Expect.isNonEmpty lines "an error line"
    for l in lines do Expect.isTrue (l.StartsWith "error: ") (sprintf "every line an error: %s" l)
    for n in names do Expect.stringContains r.Err n "names what was wrong"

/// CSV records read by an independent RFC 4180 reader (the runtime's TextFieldParser).
let private readCsv (text: string) =
    use parser = new TextFieldParser(new StringReader(text))
    parser.SetDelimiters [| "," |]
    parser.HasFieldsEnclosedInQuotes <- true
    parser.TrimWhiteSpace <- false
    [ while not parser.EndOfData do yield parser.ReadFields() ]

[<Tests>]
let tests =
    testList "command line" [
        test "research COMMAND --help for every command: exit 0, its description, each argument and each option (and alias) with its description" {
            let all = commands [] (Research.Cli.Program.Root())
            Expect.isGreaterThan all.Length 25 "every command and group"
            for path, command in all do
                let r = researchInProcess (path @ [ "--help" ])
                let label = String.Join(" ", "research" :: path)
                Expect.equal r.ExitCode 0 (sprintf "%s --help: %s" label r.Err)
                let out = flat r.Out
                Expect.isNotEmpty command.Description (sprintf "%s has a description" label)
                Expect.stringContains out (flat command.Description) (sprintf "%s --help shows its description" label)
                for a in command.Arguments do
                    Expect.isNotEmpty a.Description (sprintf "%s <%s> has a description" label a.Name)
                    Expect.stringContains out (sprintf "<%s>" a.Name) (sprintf "%s --help lists <%s>" label a.Name)
                    Expect.stringContains out (flat a.Description) (sprintf "%s --help describes <%s>" label a.Name)
                for o in command.Options do
                    Expect.isNotEmpty o.Description (sprintf "%s %s has a description" label o.Name)
                    // Not the Windows-style /h and /? of the help option.
                    for name in Seq.append [ o.Name ] o.Aliases |> Seq.filter (fun n -> not (n.StartsWith "/")) do
                        Expect.stringContains out name (sprintf "%s --help lists %s" label name)
                    Expect.stringContains out (flat o.Description) (sprintf "%s --help describes %s" label o.Name)
                for sub in command.Subcommands do
                    Expect.stringContains out sub.Name (sprintf "%s --help lists its command %s" label sub.Name)
        }
        test "bare research and research help COMMAND print the help (exit 0); the usage omits no option that works" {
            let bare = researchInProcess []
            Expect.equal bare.ExitCode 0 bare.Err
            Expect.stringContains bare.Out "train" "the commands"
            let viaHelp = researchInProcess [ "help"; "plot"; "schedule" ]
            Expect.equal viaHelp.ExitCode 0 viaHelp.Err
            Expect.equal viaHelp.Out (researchInProcess [ "plot"; "schedule"; "--help" ]).Out "the same text"
            // The old hand-written usage line omitted --plugins here though it worked.
            Expect.stringContains viaHelp.Out "--plugins" "every option the parser accepts"
        }
        test "a mistyped command or option gets the closest name; a missing value, argument or command and an extra argument are one error line each, exit 2" {
            expectUsageError (researchInProcess [ "tran"; "x.toml" ]) [ "unknown command 'research tran'"; "did you mean 'train'?" ]
            expectUsageError (researchInProcess [ "plot"; "schedul"; "cosine" ]) [ "did you mean 'schedule'?" ]
            expectUsageError (researchInProcess [ "train"; "x.toml"; "--dryrun" ]) [ "unknown option --dryrun"; "did you mean '--dry-run'?" ]
            expectUsageError (researchInProcess [ "runs"; "export"; "--outptu"; "x.csv" ]) [ "did you mean '--output'?" ]
            expectUsageError (researchInProcess [ "runs"; "list"; "--bogus" ]) [ "unknown option --bogus" ]
            // After "--" a word that looks like an option is an argument: here a folder that does not exist.
            expectUsageError (researchInProcess [ "plot"; "curves"; "--"; "-weird" ]) [ "-weird holds no run.sqlite" ]
            expectUsageError (researchInProcess [ "plot"; "matrix"; "run"; "-o" ]) [ "'-o'"; "research plot matrix --help" ]
            expectUsageError (researchInProcess [ "train"; "x.toml"; "--set" ]) [ "'--set'" ]
            expectUsageError (researchInProcess [ "train" ]) [ "CONFIG" ]
            expectUsageError (researchInProcess [ "train"; "a.toml"; "b.toml" ]) [ "unexpected argument 'b.toml'" ]
            expectUsageError (researchInProcess [ "plot" ]) [ "'research plot' needs a command"; "schedule" ]
            expectUsageError (researchInProcess [ "plot"; "schedule"; "cosine"; "--steps"; "0"; "--csv" ]) [ "--steps must be between 1 and 10000000, not 0" ]
            expectUsageError (researchInProcess [ "generate"; "run"; "--greedy"; "--top-k"; "5"; "--prompt"; "x" ]) [ "--greedy" ]
        }
        test "generate's prompt is cleaned as the corpora are but keeps its trailing line breaks, spaces and tabs (an instruction prompt's separator), CRLF as LF" {
            let p = Research.Core.Text.TextCleaning.Prompt
            Expect.equal (p "Write a fortune about love.\n") "Write a fortune about love.\n" "the separator stays"
            Expect.equal (p "Honor'\be de Balzac \t\r\n") "Honoré de Balzac \t\n" "cleaned body (overstrike), tail kept, CRLF as LF"
            Expect.equal (p "a\x07b") "ab" "a control character is removed as from a fortune"
            Expect.equal (p "") "" "empty"
        }
        test "CSV holds any name (RFC 4180, read back by an independent reader): a schedule series, and runs export of a run named with a comma and quotes" {
            let tricky = [ "plain"; "a,b"; "say \"hi\""; "two\nlines"; " padded "; "-1" ]
            let text = Research.Core.Tracking.Csv.ToText([ "name"; "value" ], [ for t in tricky -> [ t; "1.5" ] ])
            let records = readCsv text
            Expect.equal records.Head [| "name"; "value" |] "header"
            Expect.equal [ for r in records.Tail -> r[0] ] tricky "every field read back as written"
            let series = Research.Reporting.SchedulePlot.ToCsv([| struct ("cosine, short", [| 1.0; 0.5 |]) |], 0.1)
            Expect.equal (readCsv series) [ [| "step"; "cosine, short" |]; [| "0"; "0.1" |]; [| "1"; "0.05" |] ] "a series named with a comma"

            let dir = tempDir "cli-csv"
            let name = "ab,\"cd\""
            let train = research dir [ "train"; syntheticConfig dir ""; "--set"; sprintf "run.name=%s" "'ab,\"cd\"'" ]
            Expect.equal train.ExitCode 0 train.Err
            let runId = Path.GetFileName(onlyRunDir dir)
            Expect.isTrue (runId.StartsWith name) (sprintf "the run is named %s" runId)
            let export = research dir [ "runs"; "export"; Path.Combine(dir, "runs") ]
            Expect.equal export.ExitCode 0 export.Err
            let rows = readCsv export.Out
            Expect.equal rows.Head [| "run"; "kind"; "step"; "key"; "value" |] "header"
            Expect.isTrue (rows.Tail |> List.forall (fun r -> r.Length = 5 && r[0] = runId)) "five fields in every row, the run's name whole"
            let list = research dir [ "runs"; "list"; Path.Combine(dir, "runs") ]
            Expect.equal list.ExitCode 0 list.Err
            let row = list.Out.Split('\n') |> Array.tryFind (fun l -> l.StartsWith runId)
            Expect.isSome row "runs list shows the name as it is (plain text, not markup), flush left"
            Expect.stringContains row.Value "finished" "and the status beside it"
        }
    ]
