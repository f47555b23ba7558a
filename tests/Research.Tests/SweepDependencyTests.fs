/// Sweeps whose arms start from another arm's result (`Arm.from`) and arms with a command of their own
/// (`Arm.command`): the checks, the order trials run in, what a dependent starts from, and a failing source.
module Research.Tests.SweepDependencyTests

open System
open System.IO
open Expecto
open Research.Sweeps
open Research.Sweeps.SweepStore
open Research.Tests.TestSupport
open Research.Tests.SweepTests

/// One config for both commands: `research train` trains on all 10 synthetic classes, `research study` on two tasks of
/// five; the model (16 → 32 → 10) is the same, so a study loads a training run's weights strictly. About a second a trial.
let private config (dir: string) =
    let path = Path.Combine(dir, "base.toml")
    let text = """
[run]
name = "base"
seed = 5
[data]
dataset = "synthetic"
synthetic_samples = 600
synthetic_features = 16
synthetic_classes = 10
batch_size = 20
[model]
hidden = [32]
[optimizer]
lr = 0.01
[train]
epochs = 1
[study]
benchmark = "split-task"
tasks = 2
"""
    File.WriteAllText(path, text)
    path

/// A study sweep in DIR with the given seeds and arms (F# lines of `|> Sweep.arm (…)`).
let private script (dir: string) (name: string) (seeds: int list) (arms: string) =
    let path = Path.Combine(dir, "sweep.fsx")
    File.WriteAllText(path, sprintf """
#r "%s"
open Research.Sweeps
let sweep =
    Sweep.create "%s" Study
    |> Sweep.seeds %A
    |> Sweep.output "out"
    %s
exit (Sweep.run fsi.CommandLineArgs sweep)
""" (Path.Combine(binDir, "Research.Sweeps.dll").Replace("\\", "/")) name seeds arms)
    path

/// The expanded trials of a sweep with these arms (no process: what the driver checks first).
let private planOf (arms: Arm list) =
    arms |> List.fold (fun s a -> Sweep.arm a s) (Sweep.create "p" Study |> Sweep.seeds [ 1; 2 ]) |> Sweep.expand |> fun s -> Dependencies.plan s.Trials

let private errorsOf arms =
    match planOf arms with
    | Error lines -> String.Join("\n", lines)
    | Ok _ -> failtest "the plan was accepted"

let private utc (v: obj) = DateTime.Parse(string v, Globalization.CultureInfo.InvariantCulture, Globalization.DateTimeStyles.RoundtripKind)

let tests =
    testList "sweep dependencies" [
        testList "description" [
            test "Arm.command and Arm.from reach each trial; other arms keep the sweep's command and no source" {
                let s =
                    Sweep.create "d" Study
                    |> Sweep.seeds [ 1; 2 ]
                    |> Sweep.arm (Arm.create "pre" "x.toml" |> Arm.command Train)
                    |> Sweep.arm (Arm.create "post" "x.toml" |> Arm.from "pre")
                    |> Sweep.expand
                Expect.equal [ for t in s.Trials -> t.Arm, t.Seed, t.Command, t.From ]
                    [ "pre", 1, "train", null; "pre", 2, "train", null; "post", 1, "study", "pre"; "post", 2, "study", "pre" ] "per trial"
                Expect.equal s.Command "study" "the sweep's command stays the default"
            }
            test "Arm.fromInto gives the source's weights to its key, in the identity and in the run; Arm.from to model.init_from" {
                let s =
                    Sweep.create "d" Study
                    |> Sweep.seeds [ 1 ]
                    |> Sweep.arm (Arm.create "lm" "x.toml" |> Arm.command Train)
                    |> Sweep.arm (Arm.create "vlm" "x.toml" |> Arm.fromInto "lm" "model.language_model_init_from")
                    |> Sweep.arm (Arm.create "post" "x.toml" |> Arm.from "vlm")
                    |> Sweep.expand
                let byArm = dict [ for t in s.Trials -> t.Arm, t ]
                Expect.equal (byArm["vlm"].From, Dependencies.fromKey byArm["vlm"]) ("lm", "model.language_model_init_from") "fromInto"
                Expect.equal (Dependencies.fromKey byArm["post"]) "model.init_from" "from"
                Expect.equal (Dependencies.runOverride byArm["vlm"] "/w/model.safetensors") "model.language_model_init_from=\"/w/model.safetensors\"" "the run's override"
                Expect.stringStarts (Dependencies.identityOverride byArm["vlm"] "abc") "model.language_model_init_from=\"sweep-trial:abc" "the identity's"
                let json = Text.Json.JsonSerializer.Serialize byArm["vlm"]
                Expect.equal (Text.Json.JsonSerializer.Deserialize<TrialSpec> json).FromKey "model.language_model_init_from" "kept in the saved spec"
            }
            test "the plan puts each source before its dependents and pairs trials by seed" {
                match planOf [ Arm.create "post" "x.toml" |> Arm.from "pre"; Arm.create "pre" "x.toml"; Arm.create "other" "x.toml" ] with
                | Ok(order, source) ->
                    // Trials: post s1, post s2, pre s1, pre s2, other s1, other s2.
                    Expect.equal order [ 2; 3; 4; 5; 0; 1 ] "sources first, otherwise the sweep's order"
                    Expect.equal source [| Some 2; Some 3; None; None; None; None |] "post s1 from pre s1, post s2 from pre s2"
                | Error e -> failtestf "refused: %A" e
            }
            test "a spec written before trials had a command or a source reads them as null (the sweep's command, no source)" {
                let json = """{ "Arm": "a", "Labels": [], "Numbers": [], "Seed": 1, "Config": "c.toml", "Overrides": [ "run.seed=1" ] }"""
                let t = Text.Json.JsonSerializer.Deserialize<TrialSpec> json
                Expect.equal (t.Command, t.From) (null, null) "absent fields"
                Expect.equal (Dependencies.sourceArm t) None "no source"
            }
            test "a sweep store of an earlier version gains the command and source columns, its rows kept" {
                let dir = tempDir "sweep-store-migrate"
                let db = Path.Combine(dir, "run.sqlite")
                do
                    use c = new Microsoft.Data.Sqlite.SqliteConnection(sprintf "Data Source=%s;Pooling=false" db)
                    c.Open()
                    use cmd = c.CreateCommand()
                    cmd.CommandText <- """
                        CREATE TABLE trials (
                          id TEXT PRIMARY KEY, name TEXT NOT NULL, arm TEXT NOT NULL, labels TEXT NOT NULL, numbers TEXT NOT NULL, seed INTEGER NOT NULL,
                          config TEXT NOT NULL, overrides TEXT NOT NULL, canonical TEXT NOT NULL, state TEXT NOT NULL,
                          attempts INTEGER NOT NULL DEFAULT 0, exit_code INTEGER, log TEXT, executor TEXT, job TEXT, pid INTEGER,
                          updated_utc TEXT NOT NULL);
                        INSERT INTO trials (id, name, arm, labels, numbers, seed, config, overrides, canonical, state, updated_utc)
                        VALUES ('abc', 'a-s1', 'a', '[]', '[]', 1, 'c.toml', '[]', '{}', 'finished', '2026-01-01');"""
                    cmd.ExecuteNonQuery() |> ignore
                use store = new Store(db)
                let all = store.All(dir, "train")
                Expect.equal [ for t in all -> t.Name, t.State, t.Spec.Command ] [ "a-s1", "finished", "train" ] "the old row, with the sweep's command"
            }
            test "Arm.from naming an unknown arm, an arm with axes, or a cycle of arms is refused with both arms named" {
                let unknown = errorsOf [ Arm.create "post" "x.toml" |> Arm.from "nosuch" ]
                Expect.stringContains unknown "arm 'post' starts from arm 'nosuch'" "unknown"
                Expect.stringContains unknown "has no arm 'nosuch'" "says why"
                let axes = errorsOf [ Arm.create "pre" "x.toml" |> Arm.axis (Axis.grid "optimizer.lr" [ 0.1; 0.01 ]); Arm.create "post" "x.toml" |> Arm.from "pre" ]
                Expect.stringContains axes "arm 'post' starts from arm 'pre'" "axes"
                Expect.stringContains axes "2 trials for seed 1 (axes optimizer.lr)" "says why"
                let cycle = errorsOf [ Arm.create "a" "x.toml" |> Arm.from "b"; Arm.create "b" "x.toml" |> Arm.from "a"; Arm.create "c" "x.toml" |> Arm.from "c" ]
                Expect.stringContains cycle "arms a → b → a start from each other in a cycle" "a two-arm cycle, once"
                Expect.stringContains cycle "arms c → c" "an arm starting from itself"
                Expect.equal (cycle.Split('\n').Length) 2 "each cycle reported once"
            }
        ]
        testSequenced <| testList "end to end" [
            test "a study arm from a training arm, 2 seeds, --parallel 2: each study starts from its seed's trained weights, after that run ended; a rerun runs nothing" {
                let dir = tempDir "sweep-deps"
                config dir |> ignore
                let s =
                    script dir "deps" [ 1; 2 ] """
    |> Sweep.arm (Arm.create "pre" "base.toml" |> Arm.command Train)
    |> Sweep.arm (Arm.create "post" "base.toml" |> Arm.from "pre" |> Arm.set "optimizer.lr" 0.005)"""
                let r = research dir [ "sweep"; s; "--parallel"; "2" ]
                Expect.equal r.ExitCode 0 (sprintf "sweep ran\n%s\n%s" r.Out r.Err)
                Expect.stringContains r.Out "4 to run, 2 of them after their source trial" "dependents wait"
                let db = Path.Combine(dir, "out", "run.sqlite")
                let trials = trialRuns db
                for KeyValue(name, v) in trials do
                    Expect.equal v ("finished", 1, 1, 1) (sprintf "%s: finished once" name)
                Expect.equal (trials |> Map.keys |> List.ofSeq) [ "post-s1"; "post-s2"; "pre-s1"; "pre-s2" ] "2 arms × 2 seeds"
                // Per trial: its id, command, source, canonical config, and its run's id, config, start and end.
                let rows =
                    query db """
                        SELECT t.name, t.id, t.command, t.source, t.canonical, r.id, r.config_toml, r.started_utc, r.ended_utc
                        FROM trials t JOIN trial_runs x ON x.trial_id = t.id JOIN runs r ON r.id = x.run_id"""
                    |> List.map (fun r -> string r[0], r)
                    |> Map.ofList
                for seed in [ 1; 2 ] do
                    let pre = rows[sprintf "pre-s%d" seed]
                    let post = rows[sprintf "post-s%d" seed]
                    Expect.equal (string pre[2], string post[2]) ("train", "study") "each arm's command"
                    Expect.equal (string post[3]) (string pre[1]) "the source recorded is the same seed's pre trial"
                    Expect.stringContains (string post[4]) ("sweep-trial:" + string pre[1]) "the identity includes the source's identity"
                    let weights = Path.Combine(dir, "out", "trials", (string pre[1])[..15], string pre[5], "checkpoints", "final", "model.safetensors")
                    Expect.isTrue (File.Exists weights) weights
                    Expect.stringContains (string post[6]) (sprintf "init_from = \"%s\"" weights) "the study's recorded config starts from the pre run's final weights"
                    Expect.isTrue (utc post[7] >= utc pre[8]) (sprintf "post-s%d started (%O) after pre-s%d ended (%O)\n%s" seed post[7] seed pre[8] r.Out)
                    let configToml = File.ReadAllText(Path.Combine(dir, "out", "trials", (string post[1])[..15], string post[5], "config.toml"))
                    Expect.stringContains configToml weights "the run folder's config.toml too"
                // The driver's log: both pre trials were started before either ended (a run's own record is too short
                // to show the overlap: its process spends most of its time starting).
                let line (text: string) = r.Out.Split('\n') |> Array.findIndex (fun l -> l.Contains text)
                Expect.isTrue (max (line "running   pre-s1") (line "running   pre-s2") < min (line "finished  pre-s1") (line "finished  pre-s2"))
                    (sprintf "--parallel 2: the two independent pre trials ran at the same time\n%s" r.Out)
                let studies = query db "SELECT DISTINCT t.arm FROM study_matrix m JOIN trial_runs x ON x.run_id = m.run_id JOIN trials t ON t.id = x.trial_id"
                Expect.equal (studies |> List.map (fun r -> string r[0])) [ "post" ] "only the study arm has a study matrix"
                // Default summaries: the study metric (of the study arm), the test accuracy (of both).
                let csv name = File.ReadAllLines(Path.Combine(dir, "out", "summary", name)) |> Array.map (fun l -> l.Split(',')[0])
                Expect.equal (csv "average-accuracy.csv") [| "arm"; "post" |] "a training arm has no average accuracy"
                Expect.equal (csv "test_accuracy.csv") [| "arm"; "pre"; "post" |] "both have a test accuracy"
                let again = research dir [ "sweep"; s; "--parallel"; "2" ]
                Expect.equal again.ExitCode 0 again.Err
                Expect.stringContains again.Out "4 finished before" "skips finished trials, dependents included"
                Expect.stringContains again.Out "0 to run" "runs nothing"
                Expect.equal (trialRuns db) trials "nothing ran again"
            }
            test "a source trial that fails at run time leaves its dependents not run, and the sweep exits non-zero" {
                let dir = tempDir "sweep-deps-failed"
                config dir |> ignore
                // Data that is not there passes the config check and fails the trial when it starts (exit 2). The whole
                // [data] table is replaced: Fashion-MNIST takes none of the base's synthetic keys.
                let s =
                    script dir "deps-failed" [ 1 ] """
    |> Sweep.arm (Arm.create "pre" "base.toml" |> Arm.command Train |> Arm.set "data" (Toml.table [ "dataset", box "fashion-mnist"; "path", box "/nonexistent" ]))
    |> Sweep.arm (Arm.create "post" "base.toml" |> Arm.from "pre")
    |> Sweep.arm (Arm.create "last" "base.toml" |> Arm.from "post")"""
                let r = research dir [ "sweep"; s ]
                Expect.equal r.ExitCode 1 (sprintf "the sweep fails\n%s\n%s" r.Out r.Err)
                Expect.stringContains r.Out "not run   post-s1" "names the dependent"
                Expect.stringContains r.Out "source trial pre-s1 failed" "says why"
                Expect.stringContains r.Out "not run   last-s1" "and down the chain"
                Expect.stringContains r.Out "its source trial post-s1 was not run" "says why"
                let db = Path.Combine(dir, "out", "run.sqlite")
                let states = query db "SELECT arm, state, attempts FROM trials ORDER BY arm" |> List.map (fun r -> string r[0], string r[1], Convert.ToInt32 r[2]) |> List.distinct
                Expect.equal states [ "last", "pending", 0; "post", "pending", 0; "pre", "failed", 1 ] "dependents never started"
                let again = research dir [ "sweep"; s ]
                Expect.equal again.ExitCode 1 again.Out
                Expect.stringContains again.Out "source trial pre-s1 failed (kept; --retry-failed reruns it)" "a rerun says why it still does not run them"
            }
            test "through the local Slurm cluster: the dependents go in later arrays once their sources finished, each from its seed's weights" {
                requireSlurm ()
                let dir = tempDir "sweep-deps-slurm"
                config dir |> ignore
                let s =
                    script dir "deps-slurm" [ 1; 2 ] """
    |> Sweep.arm (Arm.create "pre" "base.toml" |> Arm.command Train)
    |> Sweep.arm (Arm.create "post" "base.toml" |> Arm.from "pre")"""
                let r = research dir [ "sweep"; s; "--executor"; "slurm" ]
                Expect.equal r.ExitCode 0 (sprintf "sweep ran\n%s\n%s" r.Out r.Err)
                let db = Path.Combine(dir, "out", "run.sqlite")
                let jobs = query db "SELECT arm, job FROM trials" |> List.map (fun r -> string r[0], (string r[1]).Split('_').[0]) |> List.distinct
                let arrays arm = jobs |> List.filter (fun (a, _) -> a = arm) |> List.map snd |> List.distinct
                Expect.equal (arrays "pre").Length 1 "the sources go in one array"
                // Dependents are submitted as their sources finish: one further array when both finish between two polls
                // of the driver, one each otherwise (a loaded machine spreads the sources' ends).
                Expect.isTrue ((arrays "post").Length >= 1 && (arrays "post").Length <= 2) (sprintf "the dependents in one or two later arrays: %A" jobs)
                Expect.isTrue (Set.intersect (set (arrays "pre")) (set (arrays "post"))).IsEmpty "never in their sources' array"
                let rows =
                    query db "SELECT t.name, r.started_utc, r.ended_utc, r.config_toml FROM trials t JOIN trial_runs x ON x.trial_id = t.id JOIN runs r ON r.id = x.run_id"
                    |> List.map (fun r -> string r[0], r) |> Map.ofList
                for seed in [ 1; 2 ] do
                    let pre, post = rows[sprintf "pre-s%d" seed], rows[sprintf "post-s%d" seed]
                    Expect.isTrue (utc post[1] >= utc pre[2]) "after its source"
                    Expect.stringContains (string post[3]) "checkpoints/final/model.safetensors" "from the source's final weights"
            }
        ]
    ]
