/// Issue 28, weights and numerics: weights are read only in their parameter's kind of dtype, from a layout whose tensors
/// tile the data, and from a checkpoint only when its manifest verifies; a run whose parameters or metric become
/// non-finite fails. Checkpoint surgery writes the safetensors header by hand (8-byte little-endian length, JSON, data).
module Research.Tests.BadWeightsTests

open System
open System.Buffers.Binary
open System.IO
open System.Security.Cryptography
open System.Text
open System.Text.Json.Nodes
open System.Text.RegularExpressions
open Expecto
open TorchSharp
open Research.Core.Checkpoints
open Research.Core.Optim
open Research.Core.Precision
open Research.Core.Tracking
open Research.Core.Training
open Research.Tests.TestSupport

/// A safetensors file as its header (JSON) and the data after it.
let private readSafetensors (path: string) =
    let bytes = File.ReadAllBytes path
    let n = int (BinaryPrimitives.ReadUInt64LittleEndian(ReadOnlySpan(bytes, 0, 8)))
    JsonNode.Parse(Encoding.UTF8.GetString(bytes, 8, n)).AsObject(), bytes[8 + n ..]

/// Writes a safetensors file by hand: the header's length (8 bytes, little-endian), the header, the data.
let private writeSafetensors (path: string) (header: JsonObject) (data: byte[]) =
    let h = Encoding.UTF8.GetBytes(header.ToJsonString())
    let length = Array.zeroCreate<byte> 8
    BinaryPrimitives.WriteUInt64LittleEndian(Span length, uint64 h.Length)
    File.WriteAllBytes(path, Array.concat [ length; h; data ])

/// The file with its header changed by `edit` and its data as it was.
let private editHeader (path: string) (edit: JsonObject -> unit) =
    let header, data = readSafetensors path
    edit header
    writeSafetensors path header data

/// Signs `file` of a checkpoint again in its manifest: the checkpoint verifies, whatever was done to the file.
let private resign (checkpoint: string) (file: string) =
    let manifestPath = Path.Combine(checkpoint, "manifest.json")
    let manifest = JsonNode.Parse(File.ReadAllText manifestPath).AsObject()
    manifest[file] <- JsonValue.Create(Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(Path.Combine(checkpoint, file)))))
    File.WriteAllText(manifestPath, manifest.ToJsonString())

/// Every F32 tensor of the header relabelled I32: the same 4 bytes per number, so sizes and offsets still agree.
let private relabelToI32 (header: JsonObject) =
    for KeyValue(_, tensor) in Seq.toList header do
        if tensor.["dtype"].GetValue<string>() = "F32" then tensor.["dtype"] <- JsonValue.Create "I32"

/// A tensor's entry in a header.
let private entry (header: JsonObject) (name: string) = header[name].AsObject()

let private offsets (header: JsonObject) (name: string) =
    let o = (entry header name).["data_offsets"].AsArray()
    let at (i: int) = o.[i].GetValue<int64>()
    at 0, at 1

/// `moved` is placed on the last bytes of `host` (both keep their sizes): two tensors share bytes, and the bytes `moved`
/// held belong to no tensor.
let private overlap (host: string) (moved: string) (header: JsonObject) =
    let _, hostEnd = offsets header host
    let b0, b1 = offsets header moved
    (entry header moved)["data_offsets"] <- JsonArray(JsonValue.Create(hostEnd - (b1 - b0)), JsonValue.Create hostEnd)

let private expectRefused (r: ProcessResult) (code: int) (parts: string list) =
    Expect.equal r.ExitCode code (sprintf "exit %d; stdout: %s\nstderr: %s" code r.Out r.Err)
    for part in parts do Expect.stringContains r.Err part (sprintf "the error names %s" part)
    Expect.isFalse (r.Err.Contains "Unhandled exception") "not an unhandled exception"
    Expect.isFalse (r.Err.Contains "   at ") "no stack trace"

/// init_from through `train --dry-run`, which builds the model and loads the weights, and trains nothing.
let private initFrom (config: string) (path: string) =
    researchInProcess [ "train"; config; "--dry-run"; "--set"; sprintf "model.init_from=\"%s\"" path ]

let private runRow (runDir: string) =
    Research.Tests.TrainingTests.storeRows runDir "SELECT status, error FROM runs" |> List.exactlyOne

let private expectFailedRun (runDir: string) (reason: string) =
    let row = runRow runDir
    Expect.equal row[0] (box "failed") "recorded as failed"
    Expect.stringContains (string row[1]) reason "with the reason"

/// A finished run of the small synthetic MLP (8 → 16 → 3): (folder, config, run folder).
let private finishedRun (prefix: string) (extra: string) =
    let dir = tempDir prefix
    let config = syntheticConfig dir extra
    let r = research dir [ "train"; config ]
    Expect.equal r.ExitCode 0 r.Err
    dir, config, onlyRunDir dir

let private sameTensors (a: string) (b: string) =
    let x, y = SafetensorsCheck.Load a, SafetensorsCheck.Load b
    try
        Expect.equal (Set.ofSeq x.Keys) (Set.ofSeq y.Keys) "the same tensors"
        for KeyValue(name, t) in x do
            Expect.isTrue (torch.eq(t, y[name]).all().item<bool>()) (sprintf "%s bitwise equal" name)
    finally
        for t in Seq.append x.Values y.Values do t.Dispose()

/// A small run checkpointed every 2 steps and killed (SIGKILL) after its 9th micro-batch: (folder, config, run folder,
/// periodic checkpoints oldest first).
let private killedRun (prefix: string) =
    let dir = tempDir prefix
    let config = syntheticConfig dir "[checkpoint]\nevery = 2\n"
    Expect.equal (researchKilledAfter 9 dir [ "train"; config ]).ExitCode 137 "killed"
    let run = onlyRunDir dir
    let periodic = Directory.GetDirectories(Path.Combine(run, "checkpoints"), "step-*") |> Array.sort
    Expect.isGreaterThanOrEqual periodic.Length 2 "two periodic checkpoints at least"
    dir, config, run, periodic

let private dtypeTests =
    test "weights relabelled F32 → I32 in the header (manifest re-signed) are refused by eval, init_from (folder, file, bare copy) and resume, naming the file, the tensor and both dtypes; an fp16 file of the same weights is read (a deliberate float conversion)" {
        let dir, config, run, periodic = killedRun "relabel"
        let newest = Array.last periodic
        let model = Path.Combine(newest, "model.safetensors")
        let weights = SafetensorsCheck.Load model
        let fp16 = Path.Combine(dir, "published-fp16.safetensors")
        WeightFile.Save(weights |> Seq.map (fun kv -> struct (kv.Key, kv.Value.to_type torch.ScalarType.Float16)), fp16)
        editHeader model relabelToI32
        resign newest "model.safetensors"
        Expect.isNull (Checkpoint.Verify newest) "the relabelled checkpoint verifies: its manifest was signed again"
        let says (file: string) = [ file + ": tensor '"; "' is stored as I32, where the model's tensor is F32" ]
        expectRefused (researchInProcess [ "eval"; newest ]) 2 (says model)
        expectRefused (initFrom config newest) 2 (says model)
        expectRefused (initFrom config model) 2 (says model)
        let bare = Path.Combine(dir, "bare-i32.safetensors")
        File.Copy(model, bare)
        expectRefused (initFrom config bare) 2 (says bare)
        // The resume reads it against the optimizer's fp32 master weights.
        expectRefused (research dir [ "train"; config; "--resume"; run ]) 2 (says model)
        // fp16 published weights into the fp32 model: the conversion is a rounding, not a reinterpretation.
        let accepted = initFrom config fp16
        Expect.equal accepted.ExitCode 0 accepted.Err
        use loaded = Research.Tests.TrainingTests.mlp 9L 3L
        let report = WeightFile.Load(loaded, fp16, true, [||])
        Expect.isTrue report.IsComplete "every tensor loaded"
        for KeyValue(name, t) in weights do
            let got = loaded.state_dict()[name]
            let gap = (got - t).abs().max().item<float32>() |> float
            let scale = t.abs().max().item<float32>() |> float
            Expect.isLessThanOrEqual gap (scale * 1e-3) (sprintf "%s equals the fp32 weights within fp16 rounding (2⁻¹¹ relative)" name)
    }

let private overlapTests =
    test "two tensors sharing bytes (manifest re-signed) are refused naming the file and both tensors: resume keeps the previous checkpoint and ends bitwise equal to an uninterrupted run; eval and init_from of a bare file refuse" {
        let dir, config, run, periodic = killedRun "overlap"
        let newest, previous = periodic[periodic.Length - 1], periodic[periodic.Length - 2]
        let model = Path.Combine(newest, "model.safetensors")
        let bare = Path.Combine(dir, "bare-overlap.safetensors")
        File.Copy(model, bare)
        editHeader model (overlap "layers.0.bias" "head.bias")
        resign newest "model.safetensors"
        editHeader bare (overlap "layers.0.bias" "head.bias")
        let names = [ "tensor 'head.bias'"; "overlaps tensor 'layers.0.bias'" ]
        expectRefused (initFrom config bare) 2 (bare :: names)
        expectRefused (researchInProcess [ "eval"; newest ]) 2 (model :: names)
        let resumed = research dir [ "train"; config; "--resume"; run ]
        Expect.equal resumed.ExitCode 0 resumed.Err
        let said = resumed.Out + resumed.Err
        for part in [ sprintf "checkpoint %s is refused: %s" newest model; "trying the previous one"; sprintf "from %s" previous ] @ names do
            Expect.stringContains said part (sprintf "the resume says %s" part)
        let whole = tempDir "overlap-whole"
        let r = research whole [ "train"; syntheticConfig whole "[checkpoint]\nevery = 2\n" ]
        Expect.equal r.ExitCode 0 r.Err
        sameTensors (Path.Combine(run, "checkpoints", "final", "model.safetensors")) (Path.Combine(onlyRunDir whole, "checkpoints", "final", "model.safetensors"))
    }

let private manifestTests =
    test "a checkpoint folder without manifest.json is refused by eval and init_from (the folder or its model.safetensors); the same weights copied out as a bare .safetensors file are read" {
        let dir, config, run = finishedRun "no-manifest" ""
        let final = Path.Combine(run, "checkpoints", "final")
        let model = Path.Combine(final, "model.safetensors")
        let bare = Path.Combine(dir, "bare.safetensors")
        File.Copy(model, bare)
        File.Delete(Path.Combine(final, "manifest.json"))
        let says = [ Path.Combine(final, "manifest.json") + " is missing"; "its checkpoint is refused" ]
        expectRefused (researchInProcess [ "eval"; final ]) 2 says
        expectRefused (initFrom config final) 2 says
        expectRefused (initFrom config model) 2 says
        let read = initFrom config bare
        Expect.equal read.ExitCode 0 read.Err
        Expect.stringContains read.Out (sprintf "init_from %s: loaded 4 tensors" bare) "the bare file is read by name"
        let evaluated = researchInProcess [ "eval"; bare; "--config"; config ]
        Expect.equal evaluated.ExitCode 0 evaluated.Err
        Expect.stringContains evaluated.Out "test   loss" "the bare file is evaluated"
    }

/// The first parameter in the buffer's order whose values are not all finite, and whether all before it are finite.
let private firstNonFinite (o: Optimizer) =
    let finite (s: Slot) = FlatBuffer.ViewOf(o.Buffer.Values, s).isfinite().all().item<bool>()
    o.Buffer.Slots |> Seq.tryFind (finite >> not) |> Option.map (fun s -> s.Name)

let private numericTests =
    testList "numerics" [
        test "an fp16 run at lr 1e6 whose weights overflow fails at that step naming the parameter (exit 1, recorded failed), not finished with NaN weights" {
            let dir = tempDir "fp16-diverges"
            let config = syntheticConfig dir "[precision]\nmode = \"fp16\"\n"
            let r = research dir [ "train"; config; "--set"; "optimizer.lr=1e6" ]
            let says = "the parameters are not finite after the update at step 0: 'layers.0.weight' has"
            expectRefused r 1 [ "run failed: " + says ]
            expectFailedRun (onlyRunDir dir) says
        }
        test "a GPT trained in fp16 at peak lr 1e6 fails at the step its weights overflow, naming the step and the parameter (exit 1, recorded failed)" {
            let dir = tempDir "gpt-diverges"
            let config = fortunesGptConfig dir "[precision]\nmode = \"fp16\"\n"
            let r = research dir [ "train"; config; "--set"; "optimizer.lr=1e6" ]
            // Warm-up starts the rate low: the weights overflow at the first step whose rate is high enough.
            expectRefused r 1 [ "run failed: the parameters are not finite after the update at step " ]
            let name = Regex.Match(r.Err, "after the update at step \\d+: '([^']+)' has (\\d+) of (\\d+) values inf or NaN")
            Expect.isTrue name.Success (sprintf "names the parameter and how many of its values: %s" r.Err)
            expectFailedRun (onlyRunDir dir) (sprintf "'%s' has" name.Groups[1].Value)
        }
        test "an fp32 run with grad_accum = 4 at lr 1e3 whose update overflows (decay λ = 1e36, gradient finite) fails at that step naming the first non-finite parameter; the step's own check names the first in buffer order" {
            let dir = tempDir "fp32-diverges"
            let config = syntheticConfig dir "grad_accum = 4\n"
            let r = research dir [ "train"; config; "--set"; "optimizer.lr=1e3"; "--set"; "optimizer.weight_decay=1e36" ]
            let says = "the parameters are not finite after the update at step 0: 'layers.0.weight'"
            expectRefused r 1 [ "run failed: " + says ]
            expectFailedRun (onlyRunDir dir) says
            // The same on one TrainStep: a window of 4 micro-batches, AdamW decaying the weights (rank ≥ 2) only.
            use _ = torch.NewDisposeScope()
            use m = Research.Tests.TrainStepTests.mlp 5L
            use o = Optimizer.AdamW(ParameterGroups.Assign(Research.Tests.TrainStepTests.named m, GroupRule.DecayByRank 1e36))
            use gen = new torch.Generator(7UL)
            let window = [| for _ in 1 .. 4 -> Research.Abstractions.Batch(torch.randn([| 16L; 8L |], generator = gen), torch.randint(0L, 3L, [| 16L |], generator = gen)) |]
            let e = Expect.throwsC (fun () -> TrainStep(m, o, PrecisionPolicy.Fp32, MethodSet.None, 0.0).Run(window, 1e3) |> ignore) id
            Expect.isTrue (e :? NonFiniteParametersException) (sprintf "the parameters' check, not another: %O" e)
            let named = Regex.Match(e.Message, "step 0: '([^']+)'").Groups[1].Value
            Expect.equal (Some named) (firstNonFinite o) "the message names the first parameter, in the buffer's order, that is not finite"
            let head = FlatBuffer.ViewOf(o.Buffer.Values, o.Buffer.Slots |> Seq.find (fun s -> s.Name = "head.bias"))
            Expect.isTrue (head.isfinite().all().item<bool>()) "a bias (no decay) stayed finite: the gradient and Adam's update were finite"
        }
        test "a forgetting metric that returns NaN fails the study like one that throws (exit 1, recorded failed naming the metric and its DLL); NaN per task, where bwt is undefined, is stored and is no failure" {
            let dir = tempDir "metric-nan"
            let path = Path.Combine(dir, "study.toml")
            File.WriteAllText(path, sprintf "[run]\nname = \"s\"\nthreads = 1\noutput_dir = \"%s\"\n[data]\ndataset = \"synthetic\"\nsynthetic_features = 8\n[model]\nhidden = [8]\n[study]\ntasks = 2\n[[metrics]]\nname = \"bwt\"\n[[metrics]]\nname = \"returns-nan\"\n" (Path.Combine(dir, "runs").Replace("\\", "/")))
            let r = research dir [ "study"; path; "--plugins"; fixtureDir "Plugin.Faulty" ]
            let says = [ "forgetting metric 'returns-nan'"; "Plugin.Faulty.dll"; "returned the value NaN from Compute" ]
            expectRefused r 1 says
            Expect.stringContains r.Out "Test accuracy R" "the matrices are printed first"
            let runDir = onlyRunDir dir
            for part in says do expectFailedRun runDir part
            use store = RunReader.Open(Path.Combine(runDir, RunStore.FileName))
            let run = store.Runs() |> Seq.exactlyOne
            let metrics = store.StudyMetrics run.Id |> Seq.map (fun m -> m.Name, m) |> Map.ofSeq
            Expect.isTrue metrics["bwt"].Value.HasValue "bwt's value is stored"
            let perTask = nonNull metrics["bwt"].PerTask
            Expect.isTrue (Double.IsNaN perTask[1]) "bwt's per-task NaN for the last task is kept"
            Expect.isFalse metrics["returns-nan"].Value.HasValue "the NaN metric has no value"
            Expect.stringContains (nonNull metrics["returns-nan"].Error) "returned the value NaN" "its reason is stored"
        }
    ]

let tests =
    testList "bad weights" [
        testList "weights" [ dtypeTests; overlapTests; manifestTests ]
        numericTests
    ]
