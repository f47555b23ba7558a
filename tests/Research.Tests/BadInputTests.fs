/// Bad input never crashes: each mistake a user (or a buggy plugin) can make ends with one line naming what was wrong,
/// exit 1 (the run failed) or 2 (a user mistake), never .NET's unhandled-exception abort (134) or a stack trace.
module Research.Tests.BadInputTests

open System
open System.IO
open Expecto
open Research.Tests.TestSupport

/// One error line on stderr, no trace, not the runtime's unhandled-exception report.
let private expectOneLine (r: ProcessResult) (code: int) (names: string) =
    Expect.equal r.ExitCode code (sprintf "exit %d; stderr: %s" code r.Err)
    Expect.stringContains r.Err names "names what was wrong"
    Expect.isFalse (r.Err.Contains "Unhandled exception") "not an unhandled exception"
    Expect.isFalse (r.Err.Contains "   at ") "no stack trace"

/// gzip of bytes, as the dataset's files are.
let private writeGz (path: string) (bytes: byte[]) =
    use file = File.Create path
    use gz = new System.IO.Compression.GZipStream(file, System.IO.Compression.CompressionLevel.Fastest)
    gz.Write(bytes, 0, bytes.Length)

/// An IDX file: magic (unsigned bytes, rank), big-endian sizes, then the data.
let private idx (magic: int) (dims: int list) (data: byte[]) =
    let be (v: int) = [| byte (v >>> 24); byte (v >>> 16); byte (v >>> 8); byte v |]
    Array.concat [ be magic; yield! dims |> List.map be; data ]

/// A Fashion-MNIST folder of 3 training and 2 test items in the real format, then `damage` applied to it.
let private dataFolder (damage: string -> unit) =
    let dir = tempDir "bad-data"
    let write name (n: int) (labels: byte[]) =
        writeGz (Path.Combine(dir, name + "-images-idx3-ubyte.gz")) (idx 2051 [ n; 28; 28 ] (Array.create (n * 784) 128uy))
        writeGz (Path.Combine(dir, name + "-labels-idx1-ubyte.gz")) (idx 2049 [ n ] labels)
    write "train" 3 [| 0uy; 1uy; 2uy |]
    write "t10k" 2 [| 3uy; 4uy |]
    damage dir
    dir

/// `research train --dry-run` on Fashion-MNIST read from a folder.
let private dryRun (data: string) =
    let dir = tempDir "bad-data-run"
    let path = Path.Combine(dir, "run.toml")
    File.WriteAllText(path, sprintf "[run]\nname = \"d\"\n[data]\npath = \"%s\"\nvalidation_fraction = 0.34\n" data)
    research dir [ "train"; path; "--dry-run" ]

/// A small run checkpointed every 2 steps and killed (SIGKILL) after its 9th micro-batch: (folder, config, run, newest
/// periodic checkpoint).
let private killedRun (prefix: string) =
    let dir = tempDir prefix
    let path = syntheticConfig dir "[checkpoint]\nevery = 2\n"
    Expect.equal (researchKilledAfter 9 dir [ "train"; path ]).ExitCode 137 "killed"
    let run = onlyRunDir dir
    dir, path, run, Directory.GetDirectories(Path.Combine(run, "checkpoints"), "step-*") |> Array.max

let tests =
    testList "bad input" [
        test "a small folder in the real format is read (the damaged cases below differ from it in one file)" {
            let r = dryRun (dataFolder ignore)
            Expect.equal r.ExitCode 0 r.Err
            Expect.stringContains r.Out "1 training items, 2 validation, 2 test" "3 training items, ⌈0.34 · 3⌉ = 2 held out"
        }
        test "damaged Fashion-MNIST files exit 2 with one line naming the file: empty, a gzip cut in half, wrong magic, a header promising more bytes than follow, counts that differ, a label out of range, a FIFO" {
            let images = "train-images-idx3-ubyte.gz"
            let labels = "t10k-labels-idx1-ubyte.gz"
            let cases =
                [ "empty", images, (fun dir -> File.WriteAllBytes(Path.Combine(dir, images), [||])), "is empty"
                  "truncated", images, (fun dir ->
                      let f = Path.Combine(dir, images)
                      let b = File.ReadAllBytes f
                      File.WriteAllBytes(f, b[.. b.Length / 2])), "the IDX header promises 2352 bytes of data"
                  "magic", images, (fun dir -> writeGz (Path.Combine(dir, images)) (idx 2049 [ 3; 28; 28 ] (Array.zeroCreate (3 * 784)))), "IDX magic 2049, expected 2051"
                  "promises more", images, (fun dir -> writeGz (Path.Combine(dir, images)) (idx 2051 [ 1000; 28; 28 ] (Array.zeroCreate (3 * 784)))), "promises 784000 bytes"
                  "counts", labels, (fun dir -> writeGz (Path.Combine(dir, labels)) (idx 2049 [ 3 ] [| 1uy; 2uy; 3uy |])), "holds 2 images and"
                  "label", labels, (fun dir -> writeGz (Path.Combine(dir, labels)) (idx 2049 [ 2 ] [| 3uy; 12uy |])), "label 12 of item 1 is not a class"
                  "fifo", labels, (fun dir ->
                      let f = Path.Combine(dir, labels)
                      File.Delete f
                      runProcess dir "mkfifo" [ f ] |> ignore), "is a FIFO (named pipe), not a regular file" ]
            for name, file, damage, says in cases do
                let r = dryRun (dataFolder damage)
                Expect.equal r.ExitCode 2 (sprintf "%s: exit 2, stderr %s" name r.Err)
                Expect.stringContains r.Err file (sprintf "%s: names the file" name)
                Expect.stringContains r.Err says name
                Expect.isFalse (r.Err.Contains "   at ") (sprintf "%s: no stack trace" name)
        }
        test "a plugin whose options type's static constructor throws: plugins list still lists everything and says why; a run that asks for it exits 2 naming the DLL" {
            let dir = tempDir "bad-static"
            let list = research dir [ "plugins"; "list"; "--plugins"; fixtureDir "Plugin.Faulty" ]
            Expect.equal list.ExitCode 0 list.Err
            Expect.stringContains list.Out "static-throws" "listed"
            Expect.stringContains list.Out "cannot be read: its options type StaticThrowsOptions cannot be created: InvalidOperationException: its static setup failed" "says why"
            Expect.stringContains list.Out "  warmup-stable-decay " "the plugins after it are listed too"
            let path = syntheticConfig dir "[schedule]\nname = \"static-throws\"\n"
            expectOneLine (research dir [ "train"; path; "--plugins"; fixtureDir "Plugin.Faulty" ]) 2 "Plugin.Faulty.dll: the options type StaticThrowsOptions of schedule 'static-throws' cannot be created"
        }
        test "a plugin call that exceeds [plugins] call_timeout_s fails the run (exit 1) naming the plugin, the call and the step; what was logged before is in the store" {
            let dir = tempDir "bad-stuck"
            let path = syntheticConfig dir "log_every = 1\n[plugins]\ncall_timeout_s = 1.5\n[[methods]]\nname = \"stuck\"\nat_step = 3\n"
            let clock = Diagnostics.Stopwatch.StartNew()
            let r = research dir [ "train"; path; "--plugins"; fixtureDir "Plugin.Faulty" ]
            expectOneLine r 1 "method 'stuck' ("
            Expect.stringContains r.Err "Plugin.Faulty.dll) did not return from Penalty at step 3 within 1.5 s ([plugins] call_timeout_s)" "names the call"
            Expect.isLessThan clock.Elapsed.TotalSeconds 60.0 "the run did not hang"
            let rows = Research.Tests.TrainingTests.storeRows (onlyRunDir dir)
            let row = rows "SELECT status, error FROM runs" |> List.exactlyOne
            Expect.equal row[0] (box "failed") "recorded as failed"
            Expect.stringContains (string row[1]) "did not return from Penalty" "with the reason"
            let steps = rows "SELECT step FROM metrics WHERE key = 'train_loss' ORDER BY step" |> List.map (fun r -> r[0] :?> int64)
            Expect.equal steps [ 1L; 2L; 3L ] "the three updates before the stuck call (the 4th, t = 3) were flushed"
        }
        test "a plugin that calls Environment.Exit mid-run leaves the run recorded as failed with its logged rows flushed, not running" {
            let dir = tempDir "bad-exit"
            let path = syntheticConfig dir "log_every = 1\n[[methods]]\nname = \"stuck\"\nkind = \"exit\"\nat_step = 3\n"
            let r = research dir [ "train"; path; "--plugins"; fixtureDir "Plugin.Faulty" ]
            Expect.isFalse (r.Err.Contains "Unhandled exception") r.Err
            Expect.stringContains r.Err "run failed: the process exited during the run" "one line says so (the exit code is the plugin's)"
            let rows = Research.Tests.TrainingTests.storeRows (onlyRunDir dir)
            let row = rows "SELECT status, error FROM runs" |> List.exactlyOne
            Expect.equal row[0] (box "failed") (sprintf "recorded as failed (exit %d)" r.ExitCode)
            Expect.stringContains (string row[1]) "the process exited during the run" "with the reason"
            let steps = rows "SELECT step FROM metrics WHERE key = 'train_loss' ORDER BY step" |> List.map (fun r -> r[0] :?> int64)
            Expect.equal steps [ 1L; 2L; 3L ] "the rows logged before the exit are in the store"
        }
        test "metric rows reach the store within seconds while a run is alive, so a SIGKILL loses at most the last two seconds" {
            let dir = tempDir "bad-flush"
            // No watchdog: the plugin holds the run at step 3 until the test kills it.
            let path = syntheticConfig dir "log_every = 1\n[plugins]\ncall_timeout_s = 0\n[[methods]]\nname = \"stuck\"\nat_step = 3\n"
            let psi = Diagnostics.ProcessStartInfo("dotnet", WorkingDirectory = dir, RedirectStandardOutput = true, RedirectStandardError = true)
            for a in [ Path.Combine(binDir, "research.dll"); "train"; path; "--plugins"; fixtureDir "Plugin.Faulty" ] do psi.ArgumentList.Add a
            use p = Diagnostics.Process.Start psi
            let rows () =
                try
                    let runs = Path.Combine(dir, "runs")
                    match (if Directory.Exists runs then Directory.GetDirectories runs else [||]) with
                    | [| run |] when File.Exists(Path.Combine(run, "run.sqlite")) ->
                        use store = Research.Core.Tracking.RunStore.OpenReadOnly(Path.Combine(run, "run.sqlite"))
                        store.Query("SELECT step FROM metrics WHERE key = 'train_loss' ORDER BY step") |> Seq.map (fun r -> r[0] :?> int64) |> List.ofSeq
                    | _ -> []
                with _ -> []
            let clock = Diagnostics.Stopwatch.StartNew()
            while rows () <> [ 1L; 2L; 3L ] && clock.Elapsed.TotalSeconds < 60.0 do Threading.Thread.Sleep 250
            p.Kill()
            p.WaitForExit()
            Expect.equal (rows ()) [ 1L; 2L; 3L ] "steps 1 to 3 were on disk before the kill (fewer than 256 rows: the timer flushed them)"
        }
        test "a full disk fails the run (exit 1) with one line naming the file it could not write; the run is recorded as failed and its last good checkpoint kept" {
            // A 6 MB file system: the store and the first checkpoint (~3 MB: weights and Adam's moments) fit, the second does not.
            let mountPoint = tempDir "bad-full-disk"
            let mounted = runProcess mountPoint "mount" [ "-t"; "tmpfs"; "-o"; "size=6M"; "tmpfs"; mountPoint ]
            Expect.equal mounted.ExitCode 0 (sprintf "mounting a small tmpfs needs root: %s" mounted.Err)
            try
                let dir = tempDir "bad-full-disk-config"
                let path = Path.Combine(dir, "full.toml")
                File.WriteAllText(path, sprintf "[run]\nname = \"full\"\nthreads = 1\noutput_dir = \"%s\"\n[data]\ndataset = \"synthetic\"\nsynthetic_samples = 512\nsynthetic_features = 8\nsynthetic_classes = 3\nbatch_size = 64\n[model]\nhidden = [512, 512]\n[train]\nepochs = 6\n[checkpoint]\nevery = 2\nkeep_last = 3\n" (Path.Combine(mountPoint, "runs")))
                let r = research dir [ "train"; path ]
                expectOneLine r 1 "No space left on device"
                Expect.stringContains r.Err (Path.Combine(mountPoint, "runs")) "names the file"
                let run = Directory.GetDirectories(Path.Combine(mountPoint, "runs")) |> Array.exactlyOne
                do
                    use store = Research.Core.Tracking.RunStore.OpenReadOnly(Path.Combine(run, Research.Core.Tracking.RunStore.FileName))
                    let row = store.Query("SELECT status FROM runs") |> Seq.exactlyOne
                    Expect.equal row[0] (box "failed") "recorded as failed, not left running"
                let kept = Directory.GetDirectories(Path.Combine(run, "checkpoints")) |> Array.map Path.GetFileName
                Expect.equal kept [| "step-000000002" |] "the good checkpoint kept, the half-written one removed"
                Expect.isTrue (Research.Core.Checkpoints.Checkpoint.LatestValid(Path.Combine(run, "checkpoints"), ignore).HasValue) "and it verifies"
            finally
                runProcess mountPoint "umount" [ mountPoint ] |> ignore
        }
        test "one writer per run: a --resume while the run is still being written is refused (exit 2) naming the writer's pid, and adds no run" {
            let dir = tempDir "locked"
            let path = syntheticConfig dir "log_every = 1\n[checkpoint]\nevery = 2\n"
            let psi = Diagnostics.ProcessStartInfo("dotnet", WorkingDirectory = dir, RedirectStandardOutput = true, RedirectStandardError = true)
            for a in [ Path.Combine(binDir, "research.dll"); "train"; path; "--set"; "train.epochs=100000" ] do psi.ArgumentList.Add a
            use first = Diagnostics.Process.Start psi
            // Drain its output, so it never blocks on a full pipe.
            first.OutputDataReceived.Add ignore
            first.ErrorDataReceived.Add ignore
            first.BeginOutputReadLine()
            first.BeginErrorReadLine()
            try
                let runs = Path.Combine(dir, "runs")
                let deadline = DateTime.UtcNow.AddSeconds 60.0
                let checkpointed () =
                    Directory.Exists runs && Directory.GetDirectories runs |> Array.exists (fun r ->
                        let c = Path.Combine(r, "checkpoints")
                        Directory.Exists c && Directory.GetDirectories c |> Array.exists (fun d -> Path.GetFileName(d).StartsWith "step-"))
                while not (checkpointed ()) && DateTime.UtcNow < deadline do Threading.Thread.Sleep 200
                Expect.isTrue (checkpointed ()) "the first writer checkpointed"
                let runDir = onlyRunDir dir
                let second = research dir [ "train"; path; "--set"; "train.epochs=100000"; "--resume"; runDir ]
                expectOneLine second 2 (sprintf "is being written by another process (pid %d)" first.Id)
                let rows = Research.Tests.TrainingTests.storeRows runDir "SELECT status FROM runs"
                Expect.equal rows.Length 1 "one run, still the first writer's"
            finally
                first.Kill true
                first.WaitForExit()
        }
        test "damaged weight files given to init_from (and a tampered checkpoint to eval) exit 2 naming the file: a header longer than the file, an unknown dtype, offsets past the data, /dev/null, a link to /dev/zero, a tampered checkpoint" {
            let dir = tempDir "bad-weights"
            let path = syntheticConfig dir ""
            let r = research dir [ "train"; path ]
            Expect.equal r.ExitCode 0 r.Err
            let final = Path.Combine(onlyRunDir dir, "checkpoints", "final")
            let good = File.ReadAllBytes(Path.Combine(final, "model.safetensors"))
            let headerLength = int (BitConverter.ToUInt64(good, 0))
            let header = Text.Encoding.UTF8.GetString(good, 8, headerLength)
            let withHeader (text: string) =
                let h = Text.Encoding.UTF8.GetBytes text
                Array.concat [ BitConverter.GetBytes(uint64 h.Length); h; good[8 + headerLength ..] ]
            let weights name (bytes: byte[]) =
                let f = Path.Combine(dir, name + ".safetensors")
                File.WriteAllBytes(f, bytes)
                f
            let linkToZero = Path.Combine(dir, "zero.safetensors")
            File.CreateSymbolicLink(linkToZero, "/dev/zero") |> ignore
            let tampered = Path.Combine(dir, "tampered")
            Directory.CreateDirectory tampered |> ignore
            for f in Directory.GetFiles final do File.Copy(f, Path.Combine(tampered, Path.GetFileName f))
            let model = Path.Combine(tampered, "model.safetensors")
            File.WriteAllBytes(model, Array.append good [| 0uy |])
            let cases =
                [ weights "long-header" (Array.concat [ BitConverter.GetBytes(uint64 good.Length); good[8..] ]), "safetensors header claims"
                  weights "dtype" (withHeader (header.Replace("\"F32\"", "\"F7\""))), "which is not one of"
                  weights "short-data" good[.. good.Length - 5], "outside the"
                  "/dev/null", "is a character device, not a regular file"
                  linkToZero, "is a symbolic link to a character device (/dev/zero), not a regular file"
                  model, "does not match its SHA-256 in the manifest" ]
            for file, says in cases do
                let r = research dir [ "train"; path; "--set"; sprintf "model.init_from=\"%s\"" file ]
                expectOneLine r 2 says
                Expect.stringContains r.Err file (sprintf "names %s" file)
            // eval reads a checkpoint through the same check.
            let e = research dir [ "eval"; tampered; "--config"; path ]
            expectOneLine e 2 "does not match its SHA-256 in the manifest"
            Expect.stringContains e.Err model "eval names the tampered file"
        }
        test "a checkpoint whose state.json (re-signed in its manifest) places the run outside itself is refused on resume, naming the file and the field" {
            let dir, path, run, newest = killedRun "bad-state"
            let state = Path.Combine(newest, "state.json")
            File.WriteAllText(state, Text.RegularExpressions.Regex.Replace(File.ReadAllText state, "\"Epoch\": \\d+", "\"Epoch\": 999"))
            // Re-sign it: the manifest proves the files belong together, not that they describe this run.
            let manifest = Path.Combine(newest, "manifest.json")
            let hash = Convert.ToHexStringLower(Security.Cryptography.SHA256.HashData(File.ReadAllBytes state))
            File.WriteAllText(manifest, Text.RegularExpressions.Regex.Replace(File.ReadAllText manifest, "(\"state.json\": \")[0-9a-f]+", "${1}" + hash))
            let r = research dir [ "train"; path; "--resume"; run ]
            expectOneLine r 2 (state + ": epoch 999 is outside [0, 2]")
            let status = Research.Tests.TrainingTests.storeRows run "SELECT status FROM runs" |> List.exactlyOne
            Expect.equal status[0] (box "running") "the run is not marked finished (it was killed; nothing was resumed)"
        }
        test "what a process killed inside a checkpoint write leaves is cleared on resume: a half-written folder is removed, a checkpoint moved aside is put back" {
            let dir, path, run, newest = killedRun "tidy"
            let checkpoints = Path.Combine(run, "checkpoints")
            let name = Path.GetFileName newest
            Directory.Move(newest, Path.Combine(checkpoints, sprintf ".%s.old-0123" name))
            Directory.CreateDirectory(Path.Combine(checkpoints, ".step-000000099.tmp-4567")) |> ignore
            let r = research dir [ "train"; path; "--resume"; run ]
            Expect.equal r.ExitCode 0 r.Err
            Expect.stringContains r.Out (sprintf "resumed %s from %s" (Path.GetFileName run) newest) "resumed from the checkpoint put back"
            Expect.isEmpty (Directory.GetDirectories(checkpoints, ".*")) "no hidden folder is left"
        }
        test "research eval of a path that does not exist exits 2 naming the path" {
            let dir = tempDir "bad-eval"
            expectOneLine (research dir [ "eval"; "/nonexistent" ]) 2 "no checkpoint at /nonexistent"
        }
        test "command-line numbers out of range exit 2 naming the option: plot schedule --steps 10¹¹, bench fisher --samples −1, --lr nan" {
            let dir = tempDir "bad-args"
            expectOneLine (research dir [ "plot"; "schedule"; "cosine"; "--steps"; "100000000000"; "--csv" ]) 2 "--steps must be between 1 and 10000000"
            expectOneLine (research dir [ "bench"; "fisher"; "--samples"; "-1" ]) 2 "--samples must be between 1 and 1000000"
            expectOneLine (research dir [ "plot"; "schedule"; "cosine"; "--lr"; "nan"; "--csv" ]) 2 "--lr must be a finite number"
        }
        test "bench step --workloads with an unknown name exits 2 naming it and the workloads there are" {
            let dir = tempDir "bad-workloads"
            expectOneLine (research dir [ "bench"; "step"; "--workloads"; "gpt,resnet" ]) 2
                "--workloads: unknown workload 'resnet' (known: gpt, gpt-8k, transformer, mlp, cnn, transformer+ewc, mlp+ewc, adamw)"
        }
        test "a diverged fp32 run fails with one line (exit 1) and is recorded as failed" {
            let dir = tempDir "bad-diverged"
            let path = syntheticConfig dir "[optimizer]\nname = \"sgd\"\nlr = 1e30\n"
            expectOneLine (research dir [ "train"; path ]) 1 "run failed: the loss or gradient is not finite"
            let status = Research.Tests.TrainingTests.storeRows (onlyRunDir dir) "SELECT status FROM runs" |> List.exactlyOne
            Expect.equal status[0] (box "failed") "recorded as failed"
        }
        test "an fp16 run whose every step the loss scaler skips fails (exit 1), not finished" {
            let dir = tempDir "bad-skipped"
            let path = syntheticConfig dir "[precision]\nmode = \"fp16\"\ninitial_scale = 1e38\n"
            expectOneLine (research dir [ "train"; path ]) 1 "skipped every step"
            let status = Research.Tests.TrainingTests.storeRows (onlyRunDir dir) "SELECT status FROM runs" |> List.exactlyOne
            Expect.equal status[0] (box "failed") "recorded as failed"
        }
        test "a run store that is not SQLite: runs show, list and metrics exit 2 with one line naming it; --verbose adds the trace" {
            let dir = tempDir "bad-store"
            let run = Path.Combine(dir, "runs", "r")
            Directory.CreateDirectory run |> ignore
            let store = Path.Combine(run, "run.sqlite")
            File.WriteAllText(store, "this is not a database")
            for args in [ [ "runs"; "show"; run ]; [ "runs"; "list"; Path.Combine(dir, "runs") ]; [ "metrics"; run ] ] do
                expectOneLine (research dir args) 2 (store + " is not a readable run store")
            Expect.equal (File.ReadAllText store) "this is not a database" "the file is left as it was"
            let verbose = research dir [ "runs"; "show"; run; "--verbose" ]
            Expect.stringContains verbose.Err "   at " "--verbose prints the trace"
        }
        test "readers open a store read-only: runs show, list, compare, export and metrics work on a read-only store and change nothing" {
            let dir = tempDir "ro-store"
            let path = syntheticConfig dir "[study]\ntasks = 2\n"
            let r = research dir [ "study"; path ]
            Expect.equal r.ExitCode 0 r.Err
            let run = onlyRunDir dir
            let store = Path.Combine(run, "run.sqlite")
            // A store copied elsewhere without its WAL files, made read-only: as an archive or another user's run is.
            let copy = Path.Combine(dir, "archive", Path.GetFileName run)
            Directory.CreateDirectory copy |> ignore
            let checkpoint = research dir [ "runs"; "show"; run ]
            Expect.equal checkpoint.ExitCode 0 checkpoint.Err
            File.Copy(store, Path.Combine(copy, "run.sqlite"))
            let before = File.ReadAllBytes(Path.Combine(copy, "run.sqlite"))
            File.SetUnixFileMode(Path.Combine(copy, "run.sqlite"), UnixFileMode.UserRead ||| UnixFileMode.GroupRead)
            File.SetUnixFileMode(copy, UnixFileMode.UserRead ||| UnixFileMode.UserExecute)
            try
                for args in [ [ "runs"; "show"; copy ]; [ "runs"; "list"; Path.Combine(dir, "archive") ]; [ "runs"; "compare"; Path.Combine(dir, "archive") ]
                              [ "runs"; "export"; Path.Combine(dir, "archive") ]; [ "metrics"; copy ] ] do
                    let r = research dir args
                    Expect.equal r.ExitCode 0 (sprintf "%A: %s" args r.Err)
                Expect.equal (File.ReadAllBytes(Path.Combine(copy, "run.sqlite"))) before "not a byte changed"
                Expect.sequenceEqual (Directory.GetFiles copy |> Array.map Path.GetFileName) [| "run.sqlite" |] "no journal or WAL file was created"
            finally
                File.SetUnixFileMode(copy, UnixFileMode.UserRead ||| UnixFileMode.UserWrite ||| UnixFileMode.UserExecute)
        }
    ]
