/// Issue 28's bad files, each through the `research` command as a real process on real files: no output path destroys
/// what is there (one writer, Research.Core.Files.OutputFile), no reader hangs on a FIFO (one reader guard, InputFile),
/// `models list` says when a fetched model is damaged, and a config that is not UTF-8 is refused.
module Research.Tests.BadFilesTests

open System
open System.Diagnostics
open System.IO
open System.Text
open Expecto
open Research.Tests.TestSupport

/// `research ARGS` as a process, killed when it has not ended within `seconds` (exit −1 and a note in its error
/// stream): a reader that blocks fails its test instead of hanging the suite. Also returns how long it ran.
let private within (seconds: float) (workDir: string) (args: string list) =
    let psi = ProcessStartInfo("dotnet", WorkingDirectory = workDir, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    psi.ArgumentList.Add(Path.Combine(binDir, "research.dll"))
    for a in args do psi.ArgumentList.Add a
    psi.Environment["TERM"] <- "dumb"
    let watch = Stopwatch.StartNew()
    use p = Process.Start psi
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    if p.WaitForExit(TimeSpan.FromSeconds seconds) then
        p.WaitForExit()
        { ExitCode = p.ExitCode; Out = out.Result; Err = err.Result }, watch.Elapsed
    else
        p.Kill true
        p.WaitForExit()
        { ExitCode = -1; Out = out.Result; Err = err.Result + sprintf "\n(hung: killed after %.0f s)" seconds }, watch.Elapsed

/// Jobs two at a time (the machine has two cores), results in order.
let private twoAtATime (jobs: (unit -> 'T) list) : 'T list =
    jobs |> List.map (fun job -> async { return job () }) |> fun xs -> Async.Parallel(xs, 2) |> Async.RunSynchronously |> List.ofArray

/// What coreutils' `stat` says of the entry itself (a link is not followed): its type, inode and device numbers.
let private statOf (path: string) =
    let r = runProcess "/" "stat" [ "-c"; "%F inode %i device %t:%T"; path ]
    if r.ExitCode <> 0 then failtestf "stat %s: %s" path r.Err
    r.Out.Trim()

let private errorLines (r: ProcessResult) = r.Err.Split('\n') |> Array.map (fun l -> l.TrimEnd()) |> Array.filter (fun l -> l <> "")

/// Exit 2 and exactly one error line, holding each of `says`.
let private refusedInOneLine (label: string) (r: ProcessResult) (says: string list) =
    Expect.equal r.ExitCode 2 (sprintf "%s: exit code (stderr: %s)" label r.Err)
    let lines = errorLines r
    Expect.equal lines.Length 1 (sprintf "%s: one error line, got:\n%s" label r.Err)
    for s in says do Expect.stringContains lines[0] s (sprintf "%s: the line names it" label)

/// The runs every writer starts from: a training run with its loss curve, a 2-task study, and a small GPT (for
/// `research export`), under one folder. Built once for the tests that share it.
let private fixture =
    lazy (
        let dir = tempDir "bad-files"
        let train = research dir [ "train"; syntheticConfig dir "log_every = 1" ]
        if train.ExitCode <> 0 then failtestf "the training run failed: %s" train.Err
        let study = research dir [ "study"; syntheticStudy dir "study" "" ]
        if study.ExitCode <> 0 then failtestf "the study failed: %s" study.Err
        let gptDir = Path.Combine(dir, "gpt")
        Directory.CreateDirectory gptDir |> ignore
        let gpt = research gptDir [ "train"; fortunesGptConfig gptDir "" ]
        if gpt.ExitCode <> 0 then failtestf "the GPT run failed: %s" gpt.Err
        let runs = Path.Combine(dir, "runs")
        let named (prefix: string) = Directory.GetDirectories runs |> Array.find (fun d -> Path.GetFileName(d).StartsWith(prefix + "-"))
        {| Dir = dir; Runs = runs; Train = named "t"; Study = named "study"; Gpt = onlyRunDir gptDir |})

/// Every command with `-o FILE`, writing to `target`.
let private writers (target: string) =
    let f = fixture.Force()
    [ "runs export -o", [ "runs"; "export"; f.Runs; "-o"; target ]
      "export -o", [ "export"; f.Gpt; "--checkpoint"; "best"; "-o"; target ]
      "plot schedule -o", [ "plot"; "schedule"; "cosine"; "-o"; target ]
      "plot matrix -o", [ "plot"; "matrix"; f.Study; "-o"; target ]
      "plot curves -o", [ "plot"; "curves"; f.Train; "-o"; target ] ]

/// The names in a folder, for "nothing else was left there" (a temporary file of the writer, say).
let private names (dir: string) = Directory.GetFileSystemEntries dir |> Array.map Path.GetFileName |> Array.sort

let tests =
    testList "bad files" [
        test "data lost: every -o writer (runs export, export, plot schedule, matrix, curves) refuses a private character device node, a FIFO and a link to the device with exit 2 and one line naming the path and its kind; each node keeps its type, inode and device numbers, and nothing is left beside them" {
            let f = fixture.Force()
            let dir = Path.Combine(f.Dir, "nodes")
            Directory.CreateDirectory dir |> ignore
            let node, fifo, link = Path.Combine(dir, "dev-null"), Path.Combine(dir, "fifo"), Path.Combine(dir, "link-to-dev-null")
            let made = runProcess dir "mknod" [ node; "c"; "1"; "3" ]
            if made.ExitCode <> 0 then skiptestf "mknod cannot make a character device here (%s); the FIFO and link cases need it too" (made.Err.Trim())
            let fifoMade = runProcess dir "mkfifo" [ fifo ]
            Expect.equal fifoMade.ExitCode 0 (sprintf "mkfifo: %s" fifoMade.Err)
            File.CreateSymbolicLink(link, node) |> ignore
            let targets = [ node, "is a character device"; fifo, "is a FIFO"; link, "is a symbolic link to a character device" ]
            let before = targets |> List.map (fun (t, _) -> statOf t)
            let listed = names dir
            let cases = [ for target, kind in targets do for label, args in writers target -> label, target, kind, args ]
            let results = twoAtATime [ for _, _, _, args in cases -> fun () -> within 120.0 f.Dir args ]
            for (label, target, kind, _), (r, _) in List.zip cases results do
                refusedInOneLine (sprintf "%s %s" label target) r [ target; kind; "not a file: choose a file path" ]
            Expect.equal (targets |> List.map (fun (t, _) -> statOf t)) before "each node is what it was: type, inode, device numbers"
            Expect.equal (File.ResolveLinkTarget(link, false) |> Option.ofObj |> Option.map (fun i -> i.FullName)) (Some node) "the link still leads to the node"
            Expect.equal (names dir) listed "no file was left beside the nodes"
            Expect.isGreaterThanOrEqual cases.Length 15 "5 writers × 3 targets"
        }

        test "data lost: every -o writer writes through a link to a regular file (the link stays a link, its target gets the whole new file) and replaces a regular file whole; no temporary file is left" {
            let f = fixture.Force()
            let dir = Path.Combine(f.Dir, "links")
            Directory.CreateDirectory dir |> ignore
            let cases = writers "" |> List.mapi (fun i (label, _) -> i, label)
            let jobs =
                [ for i, label in cases ->
                    fun () ->
                        let target, link = Path.Combine(dir, sprintf "out-%d" i), Path.Combine(dir, sprintf "link-%d" i)
                        File.WriteAllText(target, "old contents")
                        File.CreateSymbolicLink(link, target) |> ignore
                        let args = writers link |> List.find (fun (l, _) -> l = label) |> snd
                        let r, _ = within 300.0 f.Dir args
                        label, target, link, r ]
            for label, target, link, r in twoAtATime jobs do
                Expect.equal r.ExitCode 0 (sprintf "%s to a link: exit code (stderr: %s)" label r.Err)
                Expect.isTrue (File.GetAttributes(link).HasFlag FileAttributes.ReparsePoint) (sprintf "%s: the link is still a link" label)
                let written = File.ReadAllBytes target
                Expect.isGreaterThan written.Length 100 (sprintf "%s: the link's target holds the new file" label)
                Expect.notEqual (Encoding.UTF8.GetString written) "old contents" (sprintf "%s: the old contents are replaced" label)
            let again, _ = within 120.0 f.Dir [ "runs"; "export"; f.Runs; "-o"; Path.Combine(dir, "out-0") ]
            Expect.equal again.ExitCode 0 "runs export over the regular file it wrote"
            Expect.stringStarts (File.ReadAllText(Path.Combine(dir, "out-0"))) "run,kind,step,key,value" "replaced by a whole CSV"
            Expect.isEmpty (names dir |> Array.filter (fun n -> n.EndsWith ".tmp")) "no temporary file left"
        }

        test "hangs: runs list, show, export, metrics and plot curves with a FIFO run.sqlite end within 30 s with exit 2 and one line naming the FIFO" {
            let dir = tempDir "fifo-store"
            let run = Path.Combine(dir, "runs", "r1")
            Directory.CreateDirectory run |> ignore
            let store = Path.Combine(run, "run.sqlite")
            let r = runProcess run "mkfifo" [ store ]
            Expect.equal r.ExitCode 0 (sprintf "mkfifo: %s" r.Err)
            let runs = Path.Combine(dir, "runs")
            let commands =
                [ [ "runs"; "list"; runs ]; [ "runs"; "show"; run ]; [ "runs"; "export"; runs ]; [ "metrics"; run ]; [ "plot"; "curves"; run; "-o"; Path.Combine(dir, "c.png") ] ]
            for args, (r, took) in List.zip commands (twoAtATime [ for args in commands -> fun () -> within 60.0 dir args ]) do
                let label = String.Join(" ", args |> List.truncate 2)
                Expect.isLessThan took.TotalSeconds 30.0 (sprintf "%s ends within seconds (%s)" label r.Err)
                refusedInOneLine label r [ store; "is a FIFO (named pipe), not a regular file" ]
            Expect.stringStarts (statOf store) "fifo" "the FIFO is left as it was"
        }

        test "hangs: the reader guard refuses a FIFO in place of a config, a checkpoint's weights and its manifest within 30 s, with exit 2 and one line naming it; a FIFO among plugin DLLs is reported, not opened" {
            let f = fixture.Force()
            let dir = tempDir "fifo-readers"
            let fifo (path: string) =
                if File.Exists path then File.Delete path
                let r = runProcess "/" "mkfifo" [ path ]
                Expect.equal r.ExitCode 0 (sprintf "mkfifo: %s" r.Err)
                path
            let copy (name: string) =
                let target = Path.Combine(dir, name)
                let r = runProcess "/" "cp" [ "-r"; f.Train; target ]
                Expect.equal r.ExitCode 0 (sprintf "cp: %s" r.Err)
                target
            let config = fifo (Path.Combine(dir, "config.toml"))
            let weightsRun, manifestRun = copy "weights", copy "manifest"
            let weights = fifo (Path.Combine(weightsRun, "checkpoints", "best", "model.safetensors"))
            let manifest = fifo (Path.Combine(manifestRun, "checkpoints", "best", "manifest.json"))
            let plugins = Path.Combine(dir, "plugins")
            Directory.CreateDirectory plugins |> ignore
            let dll = fifo (Path.Combine(plugins, "Plugin.Fifo.dll"))
            let cases =
                [ "a config", [ "train"; config; "--dry-run" ], config
                  "a checkpoint's weights", [ "eval"; Path.Combine(weightsRun, "checkpoints", "best") ], weights
                  "a checkpoint's manifest", [ "eval"; Path.Combine(manifestRun, "checkpoints", "best") ], manifest ]
            let results = twoAtATime [ for _, args, _ in cases -> fun () -> within 60.0 dir args ]
            for (label, _, path), (r, took) in List.zip cases results do
                Expect.isLessThan took.TotalSeconds 30.0 (sprintf "%s: ends within seconds (%s)" label r.Err)
                refusedInOneLine label r [ path; "is a FIFO (named pipe), not a regular file" ]
            let listed, took = within 60.0 dir [ "plugins"; "list"; "--plugins"; plugins ]
            Expect.isLessThan took.TotalSeconds 30.0 (sprintf "plugins list ends within seconds (%s)" listed.Err)
            Expect.stringContains listed.Err (dll + ": is a FIFO (named pipe), not a regular file") "the FIFO among the DLLs is named"
        }

        test "untrue message: models list says damaged, not fetched, naming the file and what is wrong, for a truncated and for a deleted file of an extracted model; models fetch extracts exactly those again, then it says fetched" {
            let dir = tempDir "models"
            let models = Path.Combine(dir, "models")
            let line (r: ProcessResult) = r.Out.Split('\n') |> Array.find (fun l -> l.StartsWith "resnet18-imagenet")
            let fetch, _ = within 300.0 dir [ "models"; "fetch"; "resnet18-imagenet"; "--dir"; models ]
            Expect.equal fetch.ExitCode 0 (sprintf "models fetch: %s" fetch.Err)
            let folder = Path.Combine(models, "resnet18-imagenet")
            let listed, _ = within 120.0 dir [ "models"; "list"; "--dir"; models ]
            Expect.stringEnds (line listed) "  fetched" "an intact copy is fetched"
            Expect.stringContains listed.Out "all-MiniLM-L6-v2" "every model is listed"
            Expect.stringContains (listed.Out.Split('\n') |> Array.find (fun l -> l.StartsWith "all-MiniLM-L6-v2")) "not fetched" "a model never fetched is not fetched"
            let preprocess = Path.Combine(folder, "ResNetPreprocess.onnx")
            File.WriteAllBytes(preprocess, (File.ReadAllBytes preprocess)[.. 999])
            let truncated, _ = within 120.0 dir [ "models"; "list"; "--dir"; models ]
            Expect.stringContains (line truncated) "damaged: ResNetPreprocess.onnx holds 1000 bytes that do not match its pinned SHA-256 (truncated or changed)" "a truncated file"
            Expect.isFalse ((line truncated).EndsWith " fetched") "not said to be fetched"
            File.Delete(Path.Combine(folder, "ResNet18.onnx"))
            let deleted, _ = within 120.0 dir [ "models"; "list"; "--dir"; models ]
            Expect.stringContains (line deleted) "ResNet18.onnx is missing" "a deleted file"
            Expect.stringContains (line deleted) "research models fetch resnet18-imagenet" "says how to repair it"
            let again, _ = within 300.0 dir [ "models"; "fetch"; "resnet18-imagenet"; "--dir"; models ]
            Expect.stringContains again.Out "wrote ResNet18.onnx, ResNetPreprocess.onnx" "both damaged files are extracted again"
            let repaired, _ = within 120.0 dir [ "models"; "list"; "--dir"; models ]
            Expect.stringEnds (line repaired) "  fetched" "fetched again"
        }

        test "non-UTF-8 config: UTF-16 (either byte order, with a byte-order mark or without) and UTF-32 configs and Latin-1 bytes are refused with exit 2 and one line naming the file; UTF-8 with a byte-order mark is read" {
            let dir = tempDir "encodings"
            let text = File.ReadAllText(syntheticConfig dir "")
            let write name (bytes: byte[]) =
                let path = Path.Combine(dir, name)
                File.WriteAllBytes(path, bytes)
                path
            let withMark (encoding: Encoding) = Array.append (encoding.GetPreamble()) (encoding.GetBytes text)
            let cases =
                [ "utf16le.toml", withMark (UnicodeEncoding(false, true)), "is UTF-16 (little-endian) text, not UTF-8"
                  "utf16be.toml", withMark (UnicodeEncoding(true, true)), "is UTF-16 (big-endian) text, not UTF-8"
                  "utf16-no-mark.toml", UnicodeEncoding(false, false).GetBytes text, "holds a NUL character at byte 1"
                  "utf32le.toml", withMark (UTF32Encoding(false, true)), "is UTF-32 (little-endian) text, not UTF-8"
                  "latin1.toml", Array.append (Encoding.Latin1.GetBytes "# Größe\n") (Encoding.ASCII.GetBytes text), "is not UTF-8 text (invalid bytes at offset" ]
            for name, bytes, says in cases do
                let path = write name bytes
                let r = researchInProcess [ "train"; path; "--dry-run" ]
                refusedInOneLine name r [ path; says ]
            let bom = write "utf8-bom.toml" (withMark (UTF8Encoding true))
            let r = researchInProcess [ "train"; bom; "--dry-run" ]
            Expect.equal r.ExitCode 0 (sprintf "UTF-8 with a byte-order mark is read (stderr: %s)" r.Err)
        }
    ]
