module Research.Tests.PluginHostTests

open System
open System.IO
open Expecto
open Research.Abstractions
open Research.Core.Plugins
open Research.Core.Tracking
open Research.Tests.TestSupport

let allSchedules =
    [ "constant"; "linear"; "cosine"; "cosine-restarts"; "step"; "exponential"; "polynomial"
      "inverse-sqrt"; "warmup-stable-decay"; "one-cycle"; "reduce-on-plateau" ]

/// Runs `research train` on a small synthetic config with the given TOML and plugin folders.
let trainWith (toml: string) (pluginDirs: string list) =
    let dir = tempDir "host"
    let path = syntheticConfig dir toml
    let args = [ "train"; path ] @ (pluginDirs |> List.collect (fun d -> [ "--plugins"; d ]))
    dir, research dir args

/// The error a run that needs the plugin must end with: exit 2, one line naming the DLL and the reason.
let expectRefused (r: ProcessResult) (dll: string) (reason: string) =
    Expect.equal r.ExitCode 2 (sprintf "exit code 2; stderr: %s" r.Err)
    let line = r.Err.Split('\n') |> Array.tryFind (fun l -> l.StartsWith "error:" && l.Contains dll)
    Expect.isSome line (sprintf "an error line names %s; stderr: %s" dll r.Err)
    Expect.stringContains line.Value reason "the reason"
    Expect.isFalse (r.Err.Contains "   at ") "no stack trace"

/// The error line says first why the DLL that declares `name` cannot be used — not that no plugin has the name.
let expectCauseFirst (r: ProcessResult) (name: string) =
    let line = r.Err.Split('\n') |> Array.find (fun l -> l.StartsWith "error:")
    Expect.stringContains line (sprintf "schedule '%s' cannot be used: " name) "the name, then why it cannot be used"
    Expect.isLessThan (line.IndexOf "cannot be used") (line.IndexOf "built against plugin contract") "the mismatch right after the name"
    Expect.isFalse (line.Contains "no schedule named") (sprintf "no misleading 'no schedule named': %s" line)

let tests =
    testList "plugin host" [
        test "the built-in folder holds every schedule, each named with its DLL" {
            let host = PluginHost.Load([])
            let names = host.Plugins |> Seq.filter (fun p -> p.Role = PluginRole.Schedule) |> Seq.map (fun p -> p.Name) |> Set
            Expect.equal names (Set allSchedules) "the eleven schedules"
            Expect.isEmpty host.Problems "no problems"
        }
        test "research plugins list shows every schedule with its DLL" {
            let r = research (tempDir "list") [ "plugins"; "list" ]
            Expect.equal r.ExitCode 0 r.Err
            for name in allSchedules do
                Expect.stringContains r.Out (sprintf "  %s " name) name
            Expect.stringContains r.Out "Research.Plugins.Schedules.dll" "DLL"
        }
        test "research plugins list shows every built-in method with the roles it plays" {
            let r = research (tempDir "list-methods") [ "plugins"; "list" ]
            Expect.equal r.ExitCode 0 r.Err
            let lines = r.Out.Split('\n')
            let rolesOf name =
                let at = lines |> Array.findIndex (fun l -> l.StartsWith(sprintf "  %s " name))
                lines[at + 1 .. at + 3] |> Array.find (fun l -> l.Contains "roles:")
            for name, roles in [ "ewc", "penalty, task hooks, stateful"; "l2", "penalty"; "l2-sp", "penalty, task hooks, stateful"
                                 "si", "penalty, step observer, task hooks, stateful"; "mas", "penalty, task hooks, stateful"
                                 "lwf", "loss term, task hooks, stateful"; "a-gem", "gradient hook, task hooks, data, stateful"
                                 "replay", "task hooks, data, stateful" ] do
                Expect.stringContains (rolesOf name) ("roles: " + roles) name
            Expect.stringContains r.Out "Research.Plugins.Methods.dll" "DLL"
        }
        test "research plugins list prints each default as a config writes it: enums in kebab case, and every default read back through the binder is the default" {
            let r = research (tempDir "list-defaults") [ "plugins"; "list" ]
            Expect.equal r.ExitCode 0 r.Err
            let optionsOf name =
                let lines = r.Out.Split('\n')
                let at = lines |> Array.findIndex (fun l -> l.StartsWith(sprintf "  %s " name))
                lines[at + 1] |> fun l -> Expect.stringContains l "options:" name; l
            Expect.stringContains (optionsOf "si") "gradient = \"task\"" "SI's gradient as a config writes it"
            Expect.stringContains (optionsOf "replay") "selection = \"class-balanced\"" "replay's selection"
            Expect.stringContains (optionsOf "a-gem") "selection = \"class-balanced\"" "A-GEM's selection"
            Expect.isFalse (r.Out.Contains "ClassBalanced" || r.Out.Contains "= Task") "no C# spelling of an enum"
            // What is printed is what a config may write: each default, read as TOML and converted by the binder to its
            // option's type, is the default again.
            let describe (v: obj) = Research.Core.Config.ConfigValue.Text v
            let host = PluginHost.Load([])
            for p in host.Plugins |> Seq.filter (fun p -> not (isNull p.OptionsType)) do
                let keys = Research.Core.Config.OptionsBinder.Keys(nonNull p.OptionsType)
                for struct (key, value) in PluginHost.OptionDefaults p |> Seq.filter (fun struct (_, v) -> not (isNull v)) do
                    let written = (Tomlyn.TomlSerializer.Deserialize<Tomlyn.Model.TomlTable>("v = " + describe value)).["v"]
                    let ok, back, why = Research.Core.Config.OptionsBinder.TryConvert(written, keys[key].PropertyType)
                    Expect.isTrue ok (sprintf "%s.%s = %s: %s" p.Name key (describe value) why)
                    Expect.equal (describe back) (describe value) (sprintf "%s.%s" p.Name key)
        }
        test "a missing plugin folder: one error line naming the folder, exit 2" {
            let _, r = trainWith "" [ "/no/such/folder" ]
            expectRefused r "/no/such/folder" "plugin folder does not exist"
        }
        test "a file that is not a .NET assembly is named with the reason when the run needs a plugin" {
            let junk = tempDir "junk"
            File.WriteAllBytes(Path.Combine(junk, "junk.dll"), Array.init 4096 byte)
            let _, r = trainWith "[schedule]\nname = \"junk-schedule\"\n" [ junk ]
            expectRefused r "junk.dll" "not a .NET assembly"
            Expect.stringContains r.Err "no schedule named 'junk-schedule'" "what was asked for"
        }
        test "a .NET assembly without plugin types: no plugin type found" {
            let folder = tempDir "noplugin"
            File.Copy(Path.Combine(binDir, "Tomlyn.dll"), Path.Combine(folder, "Tomlyn.dll"))
            let _, r = trainWith "[schedule]\nname = \"absent\"\n" [ folder ]
            expectRefused r "Tomlyn.dll" "no plugin type found"
        }
        test "a plugin built against a future contract (4.0) is refused, naming the DLL and both versions; asked for by its alias, the mismatch is the first thing said" {
            for name in [ "future-constant"; "future-flat" ] do
                let _, r = trainWith (sprintf "[schedule]\nname = \"%s\"\n" name) [ fixtureDir "Plugin.FutureContract" ]
                expectRefused r "Plugin.FutureContract.dll" (sprintf "built against plugin contract 4.0; this host provides %d.%d" ContractVersion.Major ContractVersion.Minor)
                expectCauseFirst r name
        }
        test "a plugin built against contract 1.1 (before the method roles) is refused, naming the DLL and both versions, before anything else is said about the name" {
            let _, r = trainWith "[schedule]\nname = \"past-constant\"\n" [ fixtureDir "Plugin.PastContract" ]
            expectRefused r "Plugin.PastContract.dll" (sprintf "built against plugin contract 1.1; this host provides %d.%d" ContractVersion.Major ContractVersion.Minor)
            expectCauseFirst r "past-constant"
        }
        test "a plugin that carries its own contract copy is reported, not silently ignored" {
            let _, r = trainWith "[schedule]\nname = \"own-constant\"\n" [ fixtureDir "Plugin.OwnContract" ]
            expectRefused r "Plugin.OwnContract.dll" (sprintf "carries its own Research.Abstractions %d.%d.99.0" ContractVersion.Major ContractVersion.Minor)
            Expect.stringContains r.Err "schedule 'own-constant' cannot be used: " "said first, for the name asked for"
        }
        test "two plugins claiming one name: asking for it names both DLLs" {
            let _, r = trainWith "[schedule]\nname = \"cosine\"\n" [ fixtureDir "Plugin.Faulty" ]
            expectRefused r "Plugin.Faulty.dll" "schedule 'cosine' is claimed by two plugins"
            Expect.stringContains r.Err "Research.Plugins.Schedules.dll" "the other claimant"
        }
        test "a duplicate name the run does not use is only a warning" {
            let _, r = trainWith "[schedule]\nname = \"linear\"\n" [ fixtureDir "Plugin.Faulty" ]
            Expect.equal r.ExitCode 0 r.Err
            Expect.stringContains r.Err "warning:" "warned"
        }
        test "a constructor that throws is reported with the DLL, the plugin and the exception" {
            let _, r = trainWith "[schedule]\nname = \"ctor-throws\"\nvalue = 4.0\n" [ fixtureDir "Plugin.Faulty" ]
            expectRefused r "Plugin.Faulty.dll" "the constructor of schedule 'ctor-throws'"
            Expect.stringContains r.Err "InvalidOperationException: cannot start with value 4" "inner message"
        }
        test "an F# plugin works: its schedule sets the learning rate of each step" {
            // The synthetic config ends inside [train]: the first line belongs to it.
            let toml = "log_every = 1\n[optimizer]\nlr = 0.01\n[schedule]\nname = \"fs-step-down\"\nfactor = 0.5\nat = 4\n"
            let dir, r = trainWith toml [ fixtureDir "Plugin.FSharp" ]
            Expect.equal r.ExitCode 0 r.Err
            use store = new RunStore(Path.Combine(onlyRunDir dir, RunStore.FileName))
            let lrs = store.Query("SELECT step, value FROM metrics WHERE key = 'lr' ORDER BY step") |> List.ofSeq
            for row in lrs do
                let step = row[0] :?> int64
                let expected = if step - 1L < 4L then 0.01 else 0.005
                Expect.floatClose Accuracy.veryHigh (row[1] :?> float) expected (sprintf "lr of update %d" step)
        }
        test "plugin folders listed in the config's [plugins] dirs are loaded, relative to the config file" {
            let dir = tempDir "cfgdirs"
            let relative = Path.GetRelativePath(dir, fixtureDir "Plugin.FSharp").Replace("\\", "/")
            let path = syntheticConfig dir (sprintf "[plugins]\ndirs = [\"%s\"]\n[schedule]\nname = \"fs-step-down\"\nfactor = 0.5\nat = 2\n" relative)
            let r = research (tempDir "elsewhere") [ "train"; path ]
            Expect.equal r.ExitCode 0 r.Err
        }
        test "a penalty that is NaN, an integer or not a scalar fails the run naming the plugin and what it returned (exit 1, recorded as failed)" {
            for kind, says in [ "nan", "non-finite penalty (NaN)"; "int", "Int64 tensor of shape []"; "vector", "tensor of shape [3]" ] do
                let dir, r = trainWith (sprintf "[[methods]]\nname = \"fs-bad-penalty\"\nkind = \"%s\"\n" kind) [ fixtureDir "Plugin.FSharp" ]
                Expect.equal r.ExitCode 1 (sprintf "%s: %s" kind r.Err)
                Expect.stringContains r.Err "run failed: method 'fs-bad-penalty'" (sprintf "%s: names the plugin" kind)
                Expect.stringContains r.Err says kind
                Expect.isFalse (r.Err.Contains "   at ") "no stack trace"
                let status = Research.Tests.TrainingTests.storeRows (onlyRunDir dir) "SELECT status FROM runs" |> List.exactlyOne
                Expect.equal status[0] (box "failed") (sprintf "%s: recorded as failed" kind)
        }
        test "a plugin that throws during training stops the run, names the plugin, and the run is recorded as failed" {
            let dir, r = trainWith "[[methods]]\nname = \"fs-throws\"\nat_step = 3\n" [ fixtureDir "Plugin.FSharp" ]
            Expect.equal r.ExitCode 1 (sprintf "exit 1; stderr: %s" r.Err)
            Expect.stringContains r.Err "run failed: method 'fs-throws'" "names the plugin"
            Expect.stringContains r.Err "Plugin.FSharp.dll" "names the DLL"
            Expect.stringContains r.Err "fixture failure at step 3" "the plugin's message"
            Expect.isFalse (r.Err.Contains "   at ") "no stack trace"
            use store = new RunStore(Path.Combine(onlyRunDir dir, RunStore.FileName))
            let row = store.Query("SELECT status, error FROM runs") |> Seq.exactlyOne
            Expect.equal row[0] (box "failed") "status"
            Expect.stringContains (string row[1]) "fs-throws" "error recorded"
        }
        test "research plot schedule writes a PNG, and --csv prints lr for t = 0…T" {
            let dir = tempDir "plot"
            let r = research dir [ "plot"; "schedule"; "cosine"; "linear"; "step"; "--steps"; "1000"; "--warmup"; "100"
                                   "--set"; "step.step_size=300"; "-o"; "schedules.png" ]
            Expect.equal r.ExitCode 0 r.Err
            let png = File.ReadAllBytes(Path.Combine(dir, "schedules.png"))
            Expect.equal png[0..3] [| 0x89uy; byte 'P'; byte 'N'; byte 'G' |] "PNG signature"
            let csv = research dir [ "plot"; "schedule"; "cosine"; "--steps"; "10"; "--warmup"; "2"; "--lr"; "1"; "--csv" ]
            let lines = csv.Out.Trim().Split('\n')
            Expect.equal lines[0] "step,cosine" "header"
            Expect.equal lines.Length 12 "header + 11 steps"
            Expect.equal (lines[1].Split(',')[1] |> float) 0.0 "warmup starts at 0"
            Expect.equal (lines[3].Split(',')[1] |> float) 1.0 "peak at the end of warmup"
        }
    ]
