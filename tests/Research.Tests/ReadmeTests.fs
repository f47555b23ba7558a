/// The README's plugin section is executable: its project file and code are built outside the solution,
/// against Research.Abstractions only, loaded with --plugins, and used by name in a run.
module Research.Tests.ReadmeTests

open System.IO
open System.Text.RegularExpressions
open Expecto
open Research.Core.Tracking
open Research.Tests.TestSupport

/// The fenced blocks of a language between the doc-test markers of the README.
let snippet (language: string) =
    let readme = File.ReadAllText(Path.Combine(repoRoot, "README.md"))
    let section = Regex.Match(readme, "<!-- doc-test:plugin -->(.*?)<!-- /doc-test:plugin -->", RegexOptions.Singleline)
    if not section.Success then failtest "README.md has no doc-test:plugin section"
    let block = Regex.Match(section.Groups[1].Value, sprintf "```%s\n(.*?)```" language, RegexOptions.Singleline)
    if not block.Success then failtestf "the plugin section has no ```%s block" language
    block.Groups[1].Value

let tests =
    testList "readme" [
        test "the README's plugin builds outside the solution against Research.Abstractions only, loads with --plugins, and drives a run by name" {
            let dir = tempDir "readme-plugin"
            let project = Path.Combine(dir, "MyPlugins")
            Directory.CreateDirectory project |> ignore
            let csproj = snippet "xml"
            Expect.isFalse (csproj.Contains "ProjectReference") "references no project of the solution"
            Expect.equal (Regex.Matches(csproj, "PackageReference Include=\"([^\"]+)\"") |> Seq.map (fun m -> m.Groups[1].Value) |> List.ofSeq)
                [ "Research.Abstractions" ] "the contract's package, and nothing else"
            File.WriteAllText(Path.Combine(project, "MyPlugins.csproj"), csproj)
            File.WriteAllText(Path.Combine(project, "Triangle.cs"), snippet "csharp")
            packageConfig dir
            let output = Path.Combine(dir, "plugins")
            let build = runProcess project "dotnet" [ "build"; "-c"; "Release"; "-nologo"; "-v:q"; "-o"; output ]
            Expect.equal build.ExitCode 0 (sprintf "the snippet builds:\n%s%s" build.Out build.Err)
            let files = Directory.GetFiles(output, "*", SearchOption.AllDirectories)
            let others = files |> Array.map Path.GetFileName |> Array.filter (fun f -> not (f.StartsWith "MyPlugins."))
            Expect.isEmpty others "the plugin alone: no contract, no TorchSharp, no natives"
            Expect.isLessThan (files |> Array.sumBy (fun f -> FileInfo(f).Length)) 200_000L "a few kB, not TorchSharp's ~50 MB"

            let list = research dir [ "plugins"; "list"; "--plugins"; output ]
            Expect.stringContains list.Out "triangle" "listed"

            // The synthetic config ends inside [train]: the first line belongs to it.
            let config = syntheticConfig dir "log_every = 1\n[schedule]\nname = \"triangle\"\nperiod_steps = 4\n"
            let run = research dir [ "train"; config; "--plugins"; output ]
            Expect.equal run.ExitCode 0 run.Err
            use store = new RunStore(Path.Combine(onlyRunDir dir, RunStore.FileName))
            let lrs = store.Query("SELECT value FROM metrics WHERE key = 'lr' ORDER BY step") |> Seq.map (fun r -> r[0] :?> float) |> List.ofSeq
            // f(t) = 1 − |2·(t mod 4)/4 − 1| for t = 0, 1, 2, 3, 4, 5 → 0, ½, 1, ½, 0, ½ (times the peak 1e-3).
            Expect.sequenceEqual (lrs |> List.take 6 |> List.map (fun v -> System.Math.Round(v * 1e4) / 10.0)) [ 0.0; 0.5; 1.0; 0.5; 0.0; 0.5 ] "triangle"
            // The plugin's [Option(Min = 1)] is the host's check.
            let refused = research dir [ "train"; config; "--plugins"; output; "--set"; "schedule.period_steps=0"; "--dry-run" ]
            Expect.equal refused.ExitCode 2 refused.Err
            Expect.stringContains refused.Err "schedule.period_steps: 0 must be ≥ 1" "the declared range, named"
        }
    ]
