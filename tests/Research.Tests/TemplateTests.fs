/// The contract's NuGet package and the dotnet new templates, as a plugin author meets them: install the templates from
/// the folder the build writes, create every role in C# and F#, build each against the packed contract outside the
/// solution, and run them through the host in a study.
module Research.Tests.TemplateTests

open System
open System.IO
open System.IO.Compression
open System.Text.Json
open System.Text.RegularExpressions
open System.Xml.Linq
open Expecto
open Research.Abstractions
open Research.Tests.TestSupport

let private contract = sprintf "%d.%d.0" ContractVersion.Major ContractVersion.Minor

let private package (id: string) = Path.Combine(packagesDir, sprintf "%s.%s.nupkg" id contract)

let private entries (nupkg: string) =
    use zip = ZipFile.OpenRead nupkg
    zip.Entries |> Seq.map (fun e -> e.FullName) |> List.ofSeq

let private nuspec (nupkg: string) =
    use zip = ZipFile.OpenRead nupkg
    let entry = zip.Entries |> Seq.find (fun e -> e.FullName.EndsWith ".nuspec")
    use stream = entry.Open()
    XDocument.Load stream

let private roles = [ "regularizer"; "schedule"; "metric"; "data"; "source"; "model" ]
let private languages = [ "C#", "Cs"; "F#", "Fs" ]

/// `dotnet new` with a template cache of the test's own (the user's installed templates are left alone).
let private dotnetNew (hive: string) (workDir: string) (args: string list) =
    runProcess workDir "dotnet" ("new" :: args @ [ "--debug:custom-hive"; hive ])

/// One study config that uses a language's four plugins by name: its schedule, its regularizer and data role as
/// methods, its metric beside the default ones. Two permuted tasks of synthetic data, a checkpoint every 4 updates;
/// runs under DIR/PREFIX/runs.
let private studyConfig (dir: string) (prefix: string) =
    let own = Path.Combine(dir, prefix)
    Directory.CreateDirectory own |> ignore
    syntheticStudy own (prefix + "-templates") (sprintf """
[optimizer]
lr = 0.01
[schedule]
name = "%s-schedule"
warmup_steps = 2
halve_every = 20
[[methods]]
name = "%s-regularizer"
strength = 0.5
[[methods]]
name = "%s-data"
items_per_task = 40
mix_ratio = 0.5
[[metrics]]
name = "%s-metric"
[[metrics]]
name = "average-accuracy"
[checkpoint]
every = 4
""" prefix prefix prefix prefix)

/// A config that uses a language's data source and model kind by name, with its regularizer as the method: two
/// split-class tasks of its rings, the CKA probe and the Hessian decomposition; runs under DIR/PREFIX-open/runs.
let private openStudyConfig (dir: string) (prefix: string) =
    let own = Path.Combine(dir, prefix + "-open")
    Directory.CreateDirectory own |> ignore
    let path = Path.Combine(own, "open.toml")
    File.WriteAllText(path, sprintf """
[run]
name = "%s-open"
seed = 3
threads = 1
output_dir = "%s"
[data]
dataset = "%s-source"
ring_items = 1200
batch_size = 32
[model]
kind = "%s-model"
width = 24
[optimizer]
lr = 0.03
[train]
epochs = 8
[[methods]]
name = "%s-regularizer"
strength = 0.002
[probes]
cka = true
items = 64
[study]
benchmark = "split-class"
hessian = { samples = 150, top_k = 3, trace_probes = 0, fisher = ["empirical"] }
""" prefix (Path.Combine(own, "runs").Replace("\\", "/")) prefix prefix prefix)
    path

/// The tensor names of a safetensors file: its JSON header (8-byte little-endian length, then the header).
let private safetensorNames (file: string) =
    use stream = File.OpenRead file
    use reader = new BinaryReader(stream)
    let length = reader.ReadUInt64()
    let header = Text.Encoding.UTF8.GetString(reader.ReadBytes(int length))
    use doc = JsonDocument.Parse header
    doc.RootElement.EnumerateObject() |> Seq.map (fun p -> p.Name) |> Seq.filter (fun n -> n <> "__metadata__") |> Set.ofSeq

let tests =
    testList "templates" [
        test "the contract's package has the contract's version, its XML docs and README, and TorchSharp as a compile-only dependency" {
            let nupkg = package "Research.Abstractions"
            Expect.isTrue (File.Exists nupkg) (sprintf "the build wrote %s" nupkg)
            let files = entries nupkg
            for expected in [ "lib/net10.0/Research.Abstractions.dll"; "lib/net10.0/Research.Abstractions.xml"; "README.md"
                              "build/Research.Abstractions.props"; "buildTransitive/Research.Abstractions.props" ] do
                Expect.contains files expected (sprintf "the package holds %s" expected)
            let spec = nuspec nupkg
            let ns = spec.Root.Name.Namespace
            Expect.equal (spec.Descendants(ns + "version") |> Seq.head).Value contract "the package version is the contract version"
            let attribute (e: XElement) (name: string) = match e.Attribute(XName.Get name) with | null -> "" | a -> a.Value
            let torch = spec.Descendants(ns + "dependency") |> Seq.find (fun d -> attribute d "id" = "TorchSharp")
            let excluded = (attribute torch "exclude").Split(',') |> Set.ofArray
            Expect.isTrue (Set.isSubset (set [ "Runtime"; "Native" ]) excluded) (sprintf "TorchSharp's runtime and natives are excluded: %A" excluded)
            Expect.equal (typeof<ISchedule>.Assembly.GetName().Version.ToString(2)) contract[.. contract.Length - 3] "the assembly version is ContractVersion's"
        }

        test "every template's default contract version is the contract's" {
            for dir in Directory.GetDirectories(Path.Combine(repoRoot, "templates", "content")) do
                let json = File.ReadAllText(Path.Combine(dir, ".template.config", "template.json"))
                use doc = JsonDocument.Parse json
                let value = doc.RootElement.GetProperty("symbols").GetProperty("contract").GetProperty("defaultValue").GetString()
                Expect.equal value contract (sprintf "%s's template.json" (Path.GetFileName dir))
        }

        test "dotnet new makes all twelve plugins; each builds against the packed contract alone, loads, and runs in a study; the source and model kind of each language train a split-class study with its regularizer, the probes and the Hessian decomposition" {
            let dir = tempDir "templates"
            let hive = Path.Combine(dir, "hive")
            let install = dotnetNew hive dir [ "install"; package "Research.Templates" ]
            Expect.equal install.ExitCode 0 (sprintf "installs:\n%s%s" install.Out install.Err)
            packageConfig dir
            let names =
                [ for language, prefix in languages do
                    for role in roles do
                        let name = sprintf "%s%s" prefix (string (Char.ToUpperInvariant role[0]) + role[1..])
                        let created = dotnetNew hive dir [ sprintf "research-%s" role; "-lang"; language; "-n"; name; "-o"; Path.Combine(dir, name) ]
                        Expect.equal created.ExitCode 0 (sprintf "dotnet new research-%s -lang %s:\n%s%s" role language created.Out created.Err)
                        name ]
            // One build of the twelve (a solution), as fast as the machine allows; each still lands in its own bin folder.
            let sln = runProcess dir "dotnet" [ "new"; "sln"; "-n"; "Plugins"; "--format"; "slnx" ]
            Expect.equal sln.ExitCode 0 sln.Err
            let added = runProcess dir "dotnet" ([ "sln"; "Plugins.slnx"; "add" ] @ [ for n in names -> Directory.GetFiles(Path.Combine(dir, n), "*.*proj") |> Array.exactlyOne ])
            Expect.equal added.ExitCode 0 (added.Out + added.Err)
            let build = runProcess dir "dotnet" [ "build"; "Plugins.slnx"; "-c"; "Release"; "-nologo"; "-v:q"; "-clp:NoSummary" ]
            Expect.equal build.ExitCode 0 (sprintf "the twelve build:\n%s%s" build.Out build.Err)
            Expect.isFalse (Regex.IsMatch(build.Out + build.Err, @"warning [A-Z]+\d+")) (sprintf "they build without a warning:\n%s" build.Out)
            let outputs =
                [ for name in names ->
                    let output = Path.Combine(dir, name, "bin", "Release", "net10.0")
                    let files = Directory.GetFiles(output, "*", SearchOption.AllDirectories) |> Array.map (fun f -> Path.GetRelativePath(output, f))
                    for f in files do
                        Expect.isFalse (f.StartsWith "Research.Abstractions" || f.StartsWith "TorchSharp" || f.Contains "libtorch" || f.Contains "LibTorchSharp" || f.Contains(string Path.DirectorySeparatorChar))
                            (sprintf "%s: %s is not the plugin's to ship" name f)
                    output ]
            let plugins = outputs |> List.collect (fun o -> [ "--plugins"; o ])
            let list = research dir ([ "plugins"; "list" ] @ plugins)
            Expect.equal list.ExitCode 0 list.Err
            for _, prefix in languages do
                for role in roles do
                    Expect.stringContains list.Out (sprintf "%s-%s" (prefix.ToLowerInvariant()) role) "listed under its kebab-case name"
            Expect.isFalse (list.Err.Contains "warning") (sprintf "no plugin folder draws a warning:\n%s" list.Err)

            for _, prefix in languages do
                let p = prefix.ToLowerInvariant()
                // The schedule: warmup over 2 updates, then halving every 3.
                let csv = research dir ([ "plot"; "schedule"; p + "-schedule"; "--steps"; "9"; "--warmup"; "2"; "--lr"; "1"; "--set"; p + "-schedule.halve_every=3"; "--csv" ] @ plugins)
                Expect.equal csv.ExitCode 0 csv.Err
                let values = csv.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries) |> Array.skip 1 |> Array.map (fun l -> float (l.Split(',')[1]))
                Expect.equal values [| 0.0; 0.5; 1.0; 1.0; 1.0; 0.5; 0.5; 0.5; 0.25; 0.25 |] (sprintf "%s-schedule, t = 0…9" p)

                let study = research dir ([ "study"; studyConfig dir p ] @ plugins)
                Expect.equal study.ExitCode 0 (sprintf "the %s study runs:\n%s%s" prefix study.Out study.Err)
                let runDir = onlyRunDir (Path.Combine(dir, p))
                let rows sql = Research.Tests.TrainingTests.storeRows runDir sql
                // The metric: the largest drop, here task 0's from after task 0 to after task 1.
                let accuracy = rows "SELECT after_task, on_task, accuracy FROM study_matrix WHERE split = 'test' ORDER BY after_task, on_task"
                let at i j = accuracy |> List.pick (fun r -> if string r[0] = string i && string r[1] = string j then Some(Convert.ToDouble r[2]) else None)
                let metric = rows (sprintf "SELECT value FROM study_values WHERE kind = 'metric' AND name = '%s-metric'" p) |> List.exactlyOne
                Expect.floatClose Accuracy.high (Convert.ToDouble metric[0]) (at 0 0 - at 1 0) "the metric is R[0][0] − R[1][0]"
                // The stateful plugins' state is in the checkpoints: the regularizer's anchor (method 0) and the data
                // role's memory of both tasks (method 1).
                let newest = Directory.GetDirectories(Path.Combine(runDir, "checkpoints")) |> Array.filter (fun d -> not ((Path.GetFileName d).StartsWith ".")) |> Array.max
                let names = safetensorNames (Path.Combine(newest, "methods.safetensors"))
                Expect.isTrue (names |> Set.exists (fun n -> n.StartsWith "0/")) (sprintf "the anchor is checkpointed: %A" names)
                for expected in [ "1/0/targets"; "1/1/targets" ] do
                    Expect.contains names expected "the memory of each task is checkpointed"

                // The source and the model kind: a split-class study of the source's rings on the kind's network.
                let openStudy = research dir ([ "study"; openStudyConfig dir p ] @ plugins)
                Expect.equal openStudy.ExitCode 0 (sprintf "the %s source-and-model study runs:\n%s%s" prefix openStudy.Out openStudy.Err)
                let openRun = onlyRunDir (Path.Combine(dir, p + "-open"))
                let openRows sql = Research.Tests.TrainingTests.storeRows openRun sql
                let diagonal = openRows "SELECT accuracy FROM study_matrix WHERE split = 'test' AND after_task = on_task ORDER BY on_task" |> List.map (fun r -> Convert.ToDouble r[0])
                Expect.equal diagonal.Length 2 "two tasks"
                for a in diagonal do Expect.isGreaterThan a 0.65 (sprintf "%s: each task learned (chance 0.5 over its two rings)" prefix)
                let probes = openRows "SELECT name FROM study_values WHERE kind = 'probe'" |> List.map (fun r -> string r[0]) |> Set.ofList
                for probe in [ "probe_cka"; ProbeNames.QuadraticLossIncrease; ProbeNames.MeasuredTestLossIncrease ] do
                    Expect.contains probes probe (sprintf "%s: probe %s stored" prefix probe)
        }
    ]
