/// Contract 3.0's two new roles from outside: a data source and a model kind in a plugin DLL (tests/Fixtures/Plugin.Open),
/// loaded with --plugins, named by a config as the built-in ones are, train a study with a method, the probes and the
/// Hessian decomposition.
module Research.Tests.OpenRolesTests

open System
open System.IO
open Expecto
open Research.Abstractions
open Research.Core.Tracking
open Research.Tests.TestSupport

let private cli = researchInProcess
let private plugin = fixtureDir "Plugin.Open"

let private write (dir: string) (text: string) =
    let path = Path.Combine(dir, "open.toml")
    File.WriteAllText(path, text)
    path

let private studyConfig (dir: string) =
    write dir (sprintf "[run]\nname = \"open\"\nseed = 3\nthreads = 1\noutput_dir = \"%s\"\n[data]\ndataset = \"rings\"\nring_items = 1200\nbatch_size = 32\n[model]\nkind = \"open-mlp\"\nopen_width = 24\n[optimizer]\nlr = 0.02\n[train]\nepochs = 6\n[[methods]]\nname = \"ewc\"\nlambda = 10.0\n[probes]\ncka = true\nitems = 64\n[study]\nbenchmark = \"split-class\"\nhessian = { samples = 150, top_k = 3, trace_probes = 0, fisher = [\"empirical\"] }\n"
                   (Path.Combine(dir, "runs").Replace("\\", "/")))

let tests =
    testList "open roles" [
        test "plugins list shows the outside data source and model kind with their DLL" {
            let r = cli [ "plugins"; "list"; "--plugins"; plugin ]
            Expect.equal r.ExitCode 0 r.Err
            for name in [ "rings"; "open-mlp" ] do Expect.stringContains r.Out name (sprintf "%s listed" name)
            Expect.stringContains r.Out "Plugin.Open.dll" "with its DLL"
        }

        test "an outside data source and model kind, from --plugins, train a 2-task study with EWC, the probes and the Hessian decomposition: both tasks learned, CKA in (0, 1], the measured loss increase the matrix's within 1e-6" {
            let dir = tempDir "open-roles"
            let r = cli [ "study"; studyConfig dir; "--plugins"; plugin ]
            Expect.equal r.ExitCode 0 (sprintf "the study runs:\n%s%s" r.Out r.Err)
            let run = onlyRunDir dir
            use reader = RunReader.Open(Path.Combine(run, RunStore.FileName))
            let id = (reader.Runs() |> Seq.exactlyOne).Id
            let record = Research.Core.Studies.StudyRecord.Load(reader, id)
            Expect.isNotNull (box record) "a finished study"
            Expect.equal record.Tasks.Count 2 "two tasks"
            for i in 0 .. 1 do Expect.isGreaterThan (record.Accuracy[i][i]) 0.75 (sprintf "task %d learned (chance 0.5 over its two rings)" i)
            let probe name =
                match record.Probes.TryGetValue name with
                | true, m -> m
                | _ -> failtestf "the record has no probe %s (it has: %s)" name (String.Join(", ", record.Probes.Keys))
            let cka = probe "probe_cka" |> Array.concat |> Array.filter Double.IsFinite
            Expect.isNonEmpty cka "CKA read through the outside kind's representation (the head's input)"
            for v in cka do Expect.isTrue (v > 0.0 && v <= 1.0 + 1e-9) (sprintf "CKA %g in (0, 1]" v)
            Expect.floatClose { absolute = 1e-6; relative = 1e-6 } (probe ProbeNames.MeasuredTestLossIncrease).[1].[0]
                (record.Loss[1][0] - record.Loss[0][0]) "task 0's measured test-loss increase is the matrix's"
            Expect.isTrue (Double.IsFinite (probe ProbeNames.QuadraticLossIncrease).[1].[0]) "½ΔθᵀHΔθ of task 0 after task 1"
        }

        test "without --plugins the outside source is an unknown dataset: exit 2, naming the file and data.dataset (a process of its own: the registries are the process's)" {
            let dir = tempDir "open-roles-missing"
            let path = studyConfig dir
            let r = research dir [ "study"; path ]
            Expect.equal r.ExitCode 2 (sprintf "refused: %s%s" r.Out r.Err)
            Expect.stringContains r.Err "data.dataset" "names the key"
            Expect.stringContains r.Err path "names the file"
            Expect.isFalse (r.Err.Contains "   at ") "no stack trace"
        }

        test "a [plugins] dirs entry in the config loads the outside roles before [data] and [model] are bound" {
            let dir = tempDir "open-roles-dirs"
            let path = studyConfig dir
            File.AppendAllText(path, sprintf "[plugins]\ndirs = [\"%s\"]\n" (plugin.Replace("\\", "/")))
            let r = cli [ "study"; path; "--dry-run" ]
            Expect.equal r.ExitCode 0 (sprintf "dry-run: %s%s" r.Out r.Err)
        }
    ]
