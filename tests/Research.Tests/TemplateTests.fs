/// The contract's NuGet package and the dotnet new templates, as a plugin author meets them: install the templates from
/// the folder the build writes with the contract README's offline commands, create every role in C# and F#, build each
/// against the packed contract outside the solution, and run them through the host in studies (issue 29's acceptance
/// among them).
module Research.Tests.TemplateTests

open System
open System.IO
open System.IO.Compression
open System.Text.Json
open System.Text.RegularExpressions
open System.Xml.Linq
open Expecto
open Research.Abstractions
open Research.Core.Checkpoints
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

let private roles = [ "regularizer"; "schedule"; "metric"; "data"; "source"; "model"; "callback" ]
let private languages = [ "C#", "Cs"; "F#", "Fs" ]

/// `dotnet new` with a template cache of the test's own (the user's installed templates are left alone).
let private dotnetNew (hive: string) (workDir: string) (args: string list) =
    runProcess workDir "dotnet" ("new" :: args @ [ "--debug:custom-hive"; hive ])

/// One study config that uses a language's five plugins by name: its schedule, its regularizer and data role as
/// methods, its metric beside the default ones, its callback (logging only). Two permuted tasks of synthetic data, a
/// checkpoint every 4 updates; runs under DIR/PREFIX/runs.
let private studyConfig (dir: string) (prefix: string) (callback: string) =
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
[[callbacks]]
name = "%s"
""" prefix prefix prefix prefix callback)

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

/// A project's name in kebab case: its plugin's name in configs (the templates derive it so).
let private kebab (name: string) = Regex.Replace(name, "(?<!^)([A-Z])", "-$1").ToLowerInvariant()

/// The offline commands of the contract's README (src/Research.Abstractions/README.md: the bash block under "Start from a
/// template, offline"), without the line that sets PACKAGES.
let private offlineCommands () =
    let lines = File.ReadAllLines(Path.Combine(repoRoot, "src", "Research.Abstractions", "README.md"))
    let start = lines |> Array.findIndex (fun l -> l.StartsWith "## Start from a template, offline")
    lines |> Array.skip start |> Array.skipWhile (fun l -> l <> "```bash") |> Array.skip 1 |> Array.takeWhile (fun l -> l <> "```")
    |> Array.filter (fun l -> not (Regex.IsMatch(l, "^[A-Z_]+="))) |> List.ofArray

/// One command line of that block through bash, PACKAGES the folder the build writes the packages to (as the README's
/// reader sets it to their own); `dotnet new` gets the test's own template cache (the user's installed templates are
/// left alone), the only change to a line.
let private shell (hive: string) (dir: string) (line: string) =
    let line = if line.StartsWith "dotnet new " then sprintf "%s --debug:custom-hive '%s'" line hive else line
    runProcessWith [ "PACKAGES", packagesDir ] dir "bash" [ "-c"; line ]

/// The fourteen plugins, made and built once for the tests that run them, with the README's offline commands: its
/// install line; its `dotnet new research-callback -n MyCallback` line as written (the C# callback, `my-callback`) and,
/// with the role, name and language changed, for the other thirteen; its restore (`--source` the packages folder alone)
/// and `--no-restore` build lines on a solution of all fourteen (one build, as fast as the machine allows; each still
/// lands in its own bin folder). Restores go to the test's own package folder (packageConfig).
type private Built = { Dir: string; Names: string list; Outputs: string list; Plugins: string list; BuildLog: string }

let private built =
    lazy (
        let dir = tempDir "templates"
        let hive = Path.Combine(dir, "hive")
        packageConfig dir
        let commands = offlineCommands ()
        let find (prefix: string) =
            match commands |> List.filter (fun c -> c.StartsWith prefix) with
            | [ c ] -> c
            | cs -> failtestf "the README's offline block has one '%s…' line, not %A" prefix cs
        let install, create, restore, build = find "dotnet new install ", find "dotnet new research-callback ", find "dotnet restore ", find "dotnet build "
        Expect.equal commands [ install; create; restore; build ] "the README's offline block is these four commands after PACKAGES="
        let run (line: string) =
            let r = shell hive dir line
            Expect.equal r.ExitCode 0 (sprintf "%s:\n%s%s" line r.Out r.Err)
            r
        run install |> ignore
        let names =
            [ for language, prefix in languages do
                for role in roles do
                    if language = "C#" && role = "callback" then
                        run create |> ignore
                        "MyCallback"
                    else
                        let name = sprintf "%s%s" prefix (string (Char.ToUpperInvariant role[0]) + role[1..])
                        let line = create.Replace("research-callback", "research-" + role).Replace("MyCallback", name)
                        run (if language = "F#" then line + " -lang F#" else line) |> ignore
                        name ]
        let sln = runProcess dir "dotnet" [ "new"; "sln"; "-n"; "Plugins"; "--format"; "slnx" ]
        Expect.equal sln.ExitCode 0 sln.Err
        let added = runProcess dir "dotnet" ([ "sln"; "Plugins.slnx"; "add" ] @ [ for n in names -> Directory.GetFiles(Path.Combine(dir, n), "*.*proj") |> Array.exactlyOne ])
        Expect.equal added.ExitCode 0 (added.Out + added.Err)
        let onSolution (line: string) =
            let changed = line.Replace(" MyCallback ", " Plugins.slnx ")
            Expect.notEqual changed line (sprintf "'%s' names the project MyCallback" line)
            changed
        run (onSolution restore) |> ignore
        let log = run (onSolution build)
        let outputs = [ for name in names -> Path.Combine(dir, name, "bin", "Release", "net10.0") ]
        { Dir = dir; Names = names; Outputs = outputs; Plugins = outputs |> List.collect (fun o -> [ "--plugins"; o ]); BuildLog = log.Out + log.Err })

/// Issue 29's acceptance study: cs-source's rings on fs-model's network, two split-class tasks, EWC, the CKA probe and the
/// Hessian decomposition, the C# callback (stopping after STOP steps when STOP > 0) and the F# one (logging only); a
/// checkpoint every 4 updates, every step's loss stored; runs under DIR/runs.
let private acceptanceConfig (dir: string) (stop: int) =
    let path = Path.Combine(dir, "acceptance.toml")
    File.WriteAllText(path, sprintf """
[run]
name = "acceptance"
seed = 5
threads = 1
output_dir = "%s"
[data]
dataset = "cs-source"
ring_items = 480
batch_size = 32
[model]
kind = "fs-model"
width = 16
[optimizer]
lr = 0.05
[train]
epochs = 6
log_every = 1
[checkpoint]
every = 4
[[methods]]
name = "ewc"
lambda = 1.0
[[callbacks]]
name = "my-callback"
stop_after_steps = %d
[[callbacks]]
name = "fs-callback"
[probes]
cka = true
items = 64
[study]
benchmark = "split-class"
hessian = { samples = 100, top_k = 2, trace_probes = 0, fisher = ["empirical"] }
""" (Path.Combine(dir, "runs").Replace("\\", "/")) stop)
    path

/// What a study leaves that must not depend on an interruption: the final weights (bitwise), every value the plugins
/// logged, both matrices, the probes and metrics, and how it ended.
let private studyResult (runDir: string) =
    let text sql = Research.Tests.TrainingTests.storeRows runDir sql |> List.map (fun r -> r |> Array.map string |> String.concat " ")
    let weights =
        let d = TorchSharp.PyBridge.Safetensors.LoadStateDict(Path.Combine(runDir, "checkpoints", "final", Checkpoint.Model))
        d |> Seq.sortBy (fun kv -> kv.Key) |> Seq.map (fun kv -> kv.Key, kv.Value.data<float32>().ToArray()) |> List.ofSeq
    {| Weights = weights
       Logged = text "SELECT step, key, value FROM metrics WHERE key LIKE 'plugin/%' ORDER BY step, key, rowid"
       Matrix = text "SELECT after_task, on_task, split, loss, accuracy FROM study_matrix ORDER BY after_task, on_task, split"
       Values = text "SELECT kind, name, value, json FROM study_values ORDER BY kind, name"
       Ending = text "SELECT status, stop_reason FROM runs" |}

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

        test "README.md and docs/plugins.md show the contract README's offline commands, which the template test runs" {
            let commands = offlineCommands ()
            Expect.equal commands.Length 4 "install, new, restore, build"
            for page in [ "README.md"; Path.Combine("docs", "plugins.md") ] do
                let lines = File.ReadAllLines(Path.Combine(repoRoot, page)) |> Array.map (fun l -> l.Trim())
                Expect.contains lines "PACKAGES=$PWD/artifacts/packages" (sprintf "%s sets PACKAGES to the build's folder" page)
                for command in commands do
                    Expect.isTrue (lines |> Array.exists (fun l -> l = command || l.StartsWith(command + " "))) (sprintf "%s shows '%s'" page command)
        }

        test "dotnet new makes all fourteen plugins with the contract README's offline commands; each builds against the packed contract alone, restored from that folder, loads, and runs in a study; the source and model kind of each language train a split-class study with its regularizer, the probes and the Hessian decomposition" {
            let b = built.Force()
            let dir, plugins = b.Dir, b.Plugins
            Expect.isFalse (Regex.IsMatch(b.BuildLog, @"warning [A-Z]+\d+")) (sprintf "they build without a warning:\n%s" b.BuildLog)
            for name, output in List.zip b.Names b.Outputs do
                let files = Directory.GetFiles(output, "*", SearchOption.AllDirectories) |> Array.map (fun f -> Path.GetRelativePath(output, f))
                for f in files do
                    Expect.isFalse (f.StartsWith "Research.Abstractions" || f.StartsWith "TorchSharp" || f.Contains "libtorch" || f.Contains "LibTorchSharp" || f.Contains(string Path.DirectorySeparatorChar))
                        (sprintf "%s: %s is not the plugin's to ship" name f)
            let list = research dir ([ "plugins"; "list" ] @ plugins)
            Expect.equal list.ExitCode 0 list.Err
            for name in b.Names do
                Expect.stringContains list.Out (kebab name) "listed under its kebab-case name"
            Expect.isFalse (list.Err.Contains "warning") (sprintf "no plugin folder draws a warning:\n%s" list.Err)
            // The C# callback is the README's MyCallback.
            let callbackOf prefix = if prefix = "Cs" then "my-callback" else "fs-callback"
            for _, prefix in languages do
                let schema = research dir ([ "config"; "schema"; callbackOf prefix ] @ plugins)
                Expect.equal schema.ExitCode 0 schema.Err
                for part in [ "stop_after_steps"; "Asks the run to stop once it has taken this many steps"; "logs mean_loss" ] do
                    Expect.stringContains schema.Out part (sprintf "config schema %s documents its option and what it logs" (callbackOf prefix))

            for _, prefix in languages do
                let p = prefix.ToLowerInvariant()
                // The schedule: warmup over 2 updates, then halving every 3.
                let csv = research dir ([ "plot"; "schedule"; p + "-schedule"; "--steps"; "9"; "--warmup"; "2"; "--lr"; "1"; "--set"; p + "-schedule.halve_every=3"; "--csv" ] @ plugins)
                Expect.equal csv.ExitCode 0 csv.Err
                let values = csv.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries) |> Array.skip 1 |> Array.map (fun l -> float (l.Split(',')[1]))
                Expect.equal values [| 0.0; 0.5; 1.0; 1.0; 1.0; 0.5; 0.5; 0.5; 0.25; 0.25 |] (sprintf "%s-schedule, t = 0…9" p)

                let study = research dir ([ "study"; studyConfig dir p (callbackOf prefix) ] @ plugins)
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
                // The callback logged its mean at every step of the study.
                let count sql = (rows sql |> List.exactlyOne)[0] :?> int64
                Expect.equal (count (sprintf "SELECT COUNT(*) FROM metrics WHERE key = 'plugin/%s/mean_loss'" (callbackOf prefix)))
                    (count "SELECT COUNT(*) FROM metrics WHERE key = 'grad_norm'") (sprintf "%s logs mean_loss once per step" (callbackOf prefix))

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

        test "acceptance of issue 29: a data source, a model kind and two callbacks made from the templates train a 2-task EWC study with the probes and the Hessian decomposition, by name from --plugins; the C# and F# callbacks log the same running mean, which is the running mean of the stored loss; killed with SIGKILL after a checkpoint before the callback's stop and resumed, the study ends with the same stop, logged values, matrices and weights, bitwise" {
            let b = built.Force()
            let study (dir: string) (stop: int) = [ Path.Combine(binDir, "research.dll"); "study"; acceptanceConfig dir stop ] @ b.Plugins
            // The whole study, the callbacks only logging.
            let whole = tempDir "acceptance-whole"
            let r = runProcess whole "dotnet" (study whole 0)
            Expect.equal r.ExitCode 0 (sprintf "the study runs:\n%s%s" r.Out r.Err)
            let wholeRun = onlyRunDir whole
            let rows sql = Research.Tests.TrainingTests.storeRows wholeRun sql
            let w = studyResult wholeRun
            Expect.equal w.Ending [ "finished " ] "finished, not stopped"
            let diagonal = rows "SELECT accuracy FROM study_matrix WHERE split = 'test' AND after_task = on_task ORDER BY on_task" |> List.map (fun r -> Convert.ToDouble r[0])
            Expect.equal diagonal.Length 2 "two tasks"
            // Rings k = 2, 3 of the uniform disc hold 5/16 and 7/16 of it: the larger alone is 7/12 ≈ 0.58 of task 1.
            Expect.isGreaterThan diagonal[1] 0.7 "task 1 learned beyond its larger ring"
            let kinds = rows "SELECT DISTINCT kind || ':' || name FROM study_values" |> List.map (fun r -> string r[0]) |> Set.ofList
            for expected in [ "probe:probe_cka"; "probe:" + ProbeNames.QuadraticLossIncrease; "probe:" + ProbeNames.MeasuredTestLossIncrease; "metric:average-accuracy" ] do
                Expect.contains kinds expected (sprintf "%s stored" expected)
            let series (key: string) = rows (sprintf "SELECT step, value FROM metrics WHERE key = '%s' ORDER BY step" key) |> List.map (fun r -> r[0] :?> int64, r[1] :?> float)
            let cs, fs = series "plugin/my-callback/mean_loss", series "plugin/fs-callback/mean_loss"
            let steps = series "grad_norm" |> List.map fst
            Expect.equal (cs |> List.map fst) steps "the C# callback logs at every step"
            Expect.equal fs cs "the F# and C# callbacks log the same means, bitwise"
            // Task 0 has no penalty (EWC's Fisher comes at its end), so the loss the backward pass sees is the stored loss:
            // mean_loss(s) = (1/s) Σ_{t ≤ s} train_loss(t), within 1e-12 relative.
            let task0 = rows "SELECT MAX(step) FROM metrics WHERE key = 'task' AND value = 0" |> List.exactlyOne |> fun r -> r[0] :?> int64
            let losses = series "train_loss" |> List.filter (fun (s, _) -> s <= task0) |> List.map snd
            let expected = losses |> List.scan (+) 0.0 |> List.tail |> List.mapi (fun i total -> total / float (i + 1))
            let logged = cs |> List.filter (fun (s, _) -> s <= task0) |> List.map snd
            Expect.equal logged.Length expected.Length (sprintf "one mean per step of task 0 (%d steps)" task0)
            for e, l in List.zip expected logged do Expect.floatClose { absolute = 0.0; relative = 1e-12 } l e "mean_loss is the running mean of train_loss"

            // The stop: 6 steps into task 1; the uninterrupted study, then one killed after a checkpoint of task 1 before it.
            let stop = int task0 + 6
            let stopped = tempDir "acceptance-stop"
            let r = runProcess stopped "dotnet" (study stopped stop)
            Expect.equal r.ExitCode 0 (sprintf "the stopped study:\n%s%s" r.Out r.Err)
            let reference = studyResult (onlyRunDir stopped)
            Expect.equal reference.Ending [ sprintf "finished task 1: stopped by method 'my-callback' at step %d: %d steps taken (stop_after_steps)" stop stop ] "stopped by the C# callback in task 1, with its reason"
            Expect.equal reference.Logged (w.Logged |> List.filter (fun l -> int64 (l.Split(' ')[0]) <= int64 stop)) "until the stop, the same logged values as the whole study"
            let killedDir = tempDir "acceptance-killed"
            // Killed inside step stop − 1 (after its micro-batch, before its update): the last checkpoint is the periodic one
            // (every 4 updates) at or before step stop − 2, inside task 1.
            let checkpoint = (stop - 2) / 4 * 4
            Expect.isGreaterThan checkpoint (int task0) "a checkpoint of task 1 comes before the stop"
            let killed = runProcessWith [ "RESEARCH_KILL_AFTER_MICROBATCHES", string (stop - 1) ] killedDir "dotnet" (study killedDir stop)
            Expect.equal killed.ExitCode 137 (sprintf "killed by SIGKILL after micro-batch %d" (stop - 1))
            let runDir = onlyRunDir killedDir
            let latest = Checkpoint.ReadState(Directory.GetDirectories(Path.Combine(runDir, "checkpoints")) |> Array.filter (fun d -> not ((Path.GetFileName d).StartsWith ".")) |> Array.max)
            Expect.equal latest.Step (int64 checkpoint) (sprintf "the resume starts at step %d, after task 0 and before the stop at %d" checkpoint stop)
            let resumed = research killedDir ([ "study"; acceptanceConfig killedDir stop; "--resume"; runDir ] @ b.Plugins)
            Expect.equal resumed.ExitCode 0 (sprintf "the resume:\n%s%s" resumed.Out resumed.Err)
            let after = studyResult runDir
            Expect.equal after.Ending reference.Ending "the same stop, at the same step"
            Expect.equal after.Logged reference.Logged "the same logged values, one row per step and name"
            Expect.equal after.Matrix reference.Matrix "the same matrices (task 0's row and the stopped task's), every digit"
            Expect.equal after.Values reference.Values "the same stored values"
            Expect.equal after.Weights reference.Weights "final weights bitwise equal"
        }
    ]
