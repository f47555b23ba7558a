/// Contract 3.0's data role and state (issue 29, point 6): replay's loss weight w and separate replay batches, memory items
/// carrying tensors the task's batches do not have (DER's stored logits), which reach loss terms and never the model, and
/// plugin state kept as JSON values beside the tensors, which survives SIGKILL and resume bit for bit.
/// Comparisons state their tolerance; the step computes in fp32, the hand-written references in float64.
module Research.Tests.ReplayContractTests

open System
open System.Collections.Generic
open System.IO
open System.Text.Json
open Expecto
open FsCheck
open TorchSharp
open Research.Abstractions
open Research.Core
open Research.Core.Config
open Research.Core.Models
open Research.Core.Plugins
open Research.Core.Precision
open Research.Core.Training
open Research.Core.Tracking
open Research.Plugins.Methods
open Research.Tests.TestSupport

type private Tensor = torch.Tensor

/// n items of 8 features, labels in {0, 1, 2}, about a fifth ignored (−100; the first always counts).
let private items (gen: torch.Generator) (n: int64) =
    let x = torch.randn([| n; 8L |], generator = gen)
    let y = torch.randint(0L, 3L, [| n |], generator = gen)
    let ignored = torch.rand([| n |], generator = gen).lt(torch.tensor 0.2f)
    y.masked_fill_(ignored, Batch.IgnoreIndex) |> ignore
    y[0] <- torch.tensor 0L
    Batch(x, y)

/// Every element equal, shapes equal.
let private same (a: Tensor) (b: Tensor) = a.shape = b.shape && torch.eq(a, b).all().item<bool>()

let private noExtras = Dictionary<string, Tensor>() :> IReadOnlyDictionary<_, _>

/// Rows [start, start + length) of a batch, as new tensors (they outlive the batch they came from).
let private rows (b: Batch) (start: int64) (length: int64) =
    Batch(b |> Seq.map (fun kv -> KeyValuePair(kv.Key, kv.Value.narrow(0L, start, length).clone())))

/// Cuts [0, n) into k parts of random, uneven sizes ≥ 1.
let private cuts (rng: Random) (n: int) (k: int) =
    let points = Seq.initInfinite (fun _ -> rng.Next(1, n)) |> Seq.distinct |> Seq.take (k - 1) |> Seq.sort |> List.ofSeq
    0 :: points @ [ n ] |> List.pairwise |> List.map (fun (a, b) -> int64 a, int64 (b - a))

/// A window whose micro-batch j holds current items `current[j]` and memory items `memory[j]`: appended to it (Append)
/// or as its replay batch (Separate), with weight w.
let private mixedWindow (mode: ReplayMode) (w: float) (current: Batch list) (memory: Batch list) =
    let pairs = List.zip current memory
    let batches =
        [| for c, m in pairs -> if mode = ReplayMode.Append then Batch.Concat([| c; m |]) else c |]
    let parts =
        [| for c, m in pairs ->
               if mode = ReplayMode.Append then MemoryPart(c.Size, m.Size, null, noExtras)
               else MemoryPart(0L, m.Size, m, noExtras) |]
    MixedWindow(batches, WindowMemory(mode, w, parts))

/// One SGD step at learning rate 1 of a fresh seed-11 MLP 8-16-3: θ_before − θ_after (the gradient the update used) by
/// parameter name, and the step's outcome.
let private step (methods: MethodSet) (window: MixedWindow) =
    use m = TrainStepTests.mlp 11L
    use o = TrainStepTests.sgd m
    let before = [ for struct (n, p) in m.named_parameters() -> n, p.detach().clone() ]
    let outcome = TrainStep(m, o, PrecisionPolicy.Fp32, methods, 0.0).Run(window, 1.0)
    let after = dict [ for struct (n, p) in m.named_parameters() -> n, p.detach().clone() ]
    [ for n, b in before -> n, (b - after[n]).double() ], outcome

/// ‖a − b‖ / ‖b‖ over every parameter, matched by name.
let private relativeError (a: (string * Tensor) list) (b: (string * Tensor) list) =
    let byName = dict b
    let diff = a |> List.sumBy (fun (n, t) -> (t.double() - byName[n].double()).square().sum().item<float>())
    let norm = b |> List.sumBy (fun (_, t) -> t.double().square().sum().item<float>())
    sqrt diff / sqrt norm

/// The same MLP in float64: the loss a function of it computes, and its gradient by parameter name.
let private float64Reference (loss: torch.nn.Module<Tensor, Tensor> -> Tensor) =
    use m = TrainStepTests.mlp 11L
    m.``to``(torch.ScalarType.Float64) |> ignore
    let l = loss m
    l.backward()
    l.item<float>(), [ for struct (n, p) in m.named_parameters() -> n, p.grad.detach().clone() ]

/// Σℓ of a batch under a float64 model (cross-entropy, ignored targets excluded).
let private lossSum (m: torch.nn.Module<Tensor, Tensor>) (b: Batch) =
    torch.nn.functional.cross_entropy(m.forward(b[Batch.Input].double()), b.TargetsTensor, ignore_index = Batch.IgnoreIndex, reduction = torch.nn.Reduction.Sum)

/// A loss term on memory items only: 0.05·Σ over the memory rows of ‖logits‖² (null on batches without memory items).
let private memoryTerm () =
    { new ILossTerm with
        member _.Loss c =
            match c.Memory with
            | null -> null
            | memory -> memory.Logits.square().sum().mul(torch.tensor 0.05f) }

/// A model that notes the names of every batch it reads (an IBatchModule, so the core hands it the batch itself).
type private Recording(inner: torch.nn.Module<Tensor, Tensor>) as this =
    inherit torch.nn.Module<Tensor, Tensor>("recording")
    do this.register_module("inner", inner)
    member val Seen = ResizeArray<string list>()
    override _.forward x = inner.forward x
    interface IBatchModule with
        member this.Logits b =
            this.Seen.Add(b.Keys |> Seq.sort |> List.ofSeq)
            inner.forward b[Batch.Input]

/// A data role over fixed items whose memory carries an extra tensor 'stored' = 10 × the item's first feature, so a row
/// of the extras can be matched to the item it belongs to.
type private TaggedMemory(mode: ReplayMode, memory: Batch) =
    interface IMemory with
        member _.Count = memory.Size
        member _.Sample(n, random) =
            use order = torch.randperm(memory.Size, generator = random)
            use chosen = order.narrow(0L, 0L, min (int64 n) memory.Size)
            let picked = memory.Select chosen
            Batch(Seq.append picked [ KeyValuePair("stored", picked[Batch.Input].narrow(1L, 0L, 1L).mul(torch.tensor 10.0f)) ])
    interface IDataRole with
        member _.MixRatio = 0.5
        member _.Mode = mode

/// What a loss term saw of the memory items, computed during its call (the tensors are valid only then).
type private Seen = { Mode: ReplayMode; Offset: int64; Rows: int64; BatchRows: int64; Extras: string list; Aligned: bool; LogitsAreRows: bool; BatchHasStored: bool }

let private observingTerm (seen: ResizeArray<Seen>) =
    { new ILossTerm with
        member _.Loss c =
            match c.Memory with
            | null -> ()
            | m ->
                let stored = m.Extras["stored"]
                let expected = m.Items[Batch.Input].narrow(1L, 0L, 1L).mul(torch.tensor 10.0f)
                seen.Add
                    { Mode = m.Mode; Offset = m.Offset; Rows = m.Items.Size; BatchRows = c.Batch.Size
                      Extras = m.Extras.Keys |> Seq.sort |> List.ofSeq
                      Aligned = same stored expected
                      LogitsAreRows = same m.Logits (c.Logits.narrow(0L, m.Offset, m.Items.Size))
                      BatchHasStored = c.Batch.ContainsKey "stored" }
            null }

// ---------------------------------------------------------------------------------------------------------------------
// Command-line runs with the fixture plugin (scalar state)

let private fixture = fixtureDir "Plugin.Replay"

/// Final weights (by name, every bit) and the study's matrices (every digit).
let private studyResult (runDir: string) =
    let weights =
        TorchSharp.PyBridge.Safetensors.LoadStateDict(Path.Combine(runDir, "checkpoints", "final", "model.safetensors"))
        |> Seq.sortBy (fun kv -> kv.Key) |> Seq.map (fun kv -> kv.Key, kv.Value.data<float32>().ToArray()) |> List.ofSeq
    use store = new RunStore(Path.Combine(runDir, RunStore.FileName))
    let matrix =
        store.Query("SELECT after_task, on_task, split, loss, accuracy FROM study_matrix ORDER BY after_task, on_task, split")
        |> Seq.map (fun r -> r |> Array.map string |> String.concat " ") |> List.ofSeq
    weights, matrix

/// The values a checkpoint's state holds for the method at `index` in the config.
let private valuesIn (checkpoint: string) (index: string) =
    use doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(checkpoint, "state.json")))
    doc.RootElement.GetProperty("MethodValues").GetProperty(index).Clone()

/// A 2-task permuted study on the synthetic clusters: 540 training items per task in micro-batches of 32 → 17
/// micro-batches, windows of 2 → 9 steps per epoch, 2 epochs: 18 steps and 34 micro-batches per task; a checkpoint
/// every 3 steps. Replay draws a separate batch of 12 memory items per micro-batch at w = 0.5, and scalar-state keeps
/// its strength as JSON values.
let private studyConfigWith (methods: string) (dir: string) =
    let path = Path.Combine(dir, "study.toml")
    File.WriteAllText(path, sprintf """
[run]
name = "replay-state"
seed = 11
threads = 1
output_dir = "%s"
[data]
dataset = "synthetic"
synthetic_samples = 600
synthetic_features = 8
synthetic_classes = 3
batch_size = 32
eval_batch_size = 50
[model]
hidden = [16]
[checkpoint]
every = 3
at_epoch_end = false
[train]
epochs = 2
grad_accum = 2
log_every = 1
[study]
benchmark = "permuted"
tasks = 2
%s
""" (Path.Combine(dir, "runs").Replace("\\", "/")) methods)
    path

let private replayAndScalarState =
    "[[methods]]\nname = \"replay\"\nbudget = 60\nmix_ratio = 0.5\nselection = \"reservoir\"\nmode = \"separate\"\nreplay_batch_size = 12\nloss_weight = 0.5\n" +
    "[[methods]]\nname = \"scalar-state\"\nlambda = 0.01\n"

let private derPlusPlus = "[[methods]]\nname = \"der\"\nbudget = 60\nalpha = 0.3\nbeta = 0.5\nreplay_batch_size = 12\n"

/// Kills the study of `methods` after each of `points` micro-batches (SIGKILL), resumes it, and checks its final weights
/// and matrices bitwise against an uninterrupted run; `check` reads each finished run folder (the uninterrupted one first).
let private killAndResumeBitwise (methods: string) (points: int list) (check: string -> unit) =
    let run (dir: string) (environment: (string * string) list) (extra: string list) =
        runProcessWith environment dir "dotnet" ([ Path.Combine(binDir, "research.dll"); "study"; studyConfigWith methods dir; "--plugins"; fixture ] @ extra)
    let referenceDir = tempDir "replay-contract-ref"
    let r = run referenceDir [] []
    Expect.equal r.ExitCode 0 (sprintf "the uninterrupted study: %s" r.Err)
    let reference = studyResult (onlyRunDir referenceDir)
    check (onlyRunDir referenceDir)
    for n in points do
        let dir = tempDir "replay-contract"
        let killed = run dir [ "RESEARCH_KILL_AFTER_MICROBATCHES", string n ] []
        Expect.equal killed.ExitCode 137 (sprintf "killed by SIGKILL after micro-batch %d" n)
        let runDir = onlyRunDir dir
        let resumed = run dir [] [ "--resume"; runDir ]
        Expect.equal resumed.ExitCode 0 (sprintf "resume after micro-batch %d: %s" n resumed.Err)
        let weights, matrix = studyResult runDir
        Expect.equal weights (fst reference) (sprintf "final weights bitwise equal after micro-batch %d" n)
        Expect.equal matrix (snd reference) (sprintf "the matrices after micro-batch %d" n)
        check runDir

let private host = lazy (PluginHost.Load([]))

let tests =
    testList "replay contract" [
        test "replay with w = 1 in append mode trains bitwise as 2.x did: the window WithMemory mixes steps to the same weights as micro-batches with round(r·B) drawn items concatenated, at the plain Σℓ/N" {
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(21UL)
            let seed = 5L
            let task0 = [ for _ in 1 .. 4 -> items gen 16L ]
            let task1 = [ for _ in 1 .. 6 -> items gen 16L ]
            let replay () = Replay(ReplayOptions(Budget = 40, MixRatio = 0.5, Selection = MemorySelection.Reservoir))
            // The 3.0 path: WithMemory (which observes) and the step over the mixed window.
            let now = MethodSet.Of(replay ())
            // 2.x's path, written out: observe, draw round(r·B) items from the same stream, concatenate, plain step.
            let before = MethodSet.Of(replay ())
            let role = before.All[0]
            for phase, data in [ 0, task0; 1, task1 ] do
                for s, window in data |> List.chunkBySize 2 |> List.indexed do
                    let stepIndex = int64 (phase * 10 + s)
                    let mixed = now.WithMemory(Array.ofList window, phase, stepIndex, seed)
                    let old =
                        [| for i, b in List.indexed window ->
                               (use observe = Seeds.Generator(seed, $"methods/step-{stepIndex}/observe-0-{i}")
                                role.Observe(b, phase, stepIndex, observe))
                               let m = role.MixedItems b.Size
                               if m = 0 || role.MemoryCount stepIndex = 0L then b
                               else
                                   use draw = Seeds.Generator(seed, $"methods/step-{stepIndex}/mix-{i}")
                                   Batch.Concat([| b; role.Sample(m, stepIndex, draw, b) |]) |]
                    if phase = 1 then
                        Expect.isNotNull (box mixed.Memory) "task 1's windows carry memory items"
                        let g, outcome = step now mixed
                        let g0, outcome0 = step MethodSet.None (MixedWindow(old))
                        Expect.equal outcome.Loss outcome0.Loss "the loss, every bit"
                        Expect.equal outcome.Items outcome0.Items "N: current and memory items"
                        for (n, a), (_, b) in List.zip g g0 do
                            Expect.isTrue (same a b) $"the update of {n}, every bit"
        }

        test "the loss with weight w equals the hand-written weighted loss of a float64 model: append (Σ_cur ℓ + w·Σ_mem ℓ)/N, separate Σ_cur ℓ/N_cur + w·Σ_mem ℓ/N_mem; loss and gradient within 1e-5 relative (the step is fp32)" {
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(7UL)
            let current = items gen 10L
            let memory = items gen 6L
            let nCur, nMem = float current.Items, float memory.Items
            for mode in [ ReplayMode.Append; ReplayMode.Separate ] do
                for w in [ 0.0; 0.5; 3.0 ] do
                    let g, outcome = step MethodSet.None (mixedWindow mode w [ current ] [ memory ])
                    let expected, reference =
                        float64Reference (fun m ->
                            let c, r = lossSum m current, lossSum m memory
                            if mode = ReplayMode.Append then (c + r * w) / (nCur + nMem) else c / nCur + r * w / nMem)
                    let lossError = abs (outcome.Loss - expected) / (1.0 + abs expected)
                    Expect.isLessThanOrEqual lossError 1e-5 $"{mode}, w = {w}: loss {outcome.Loss} against {expected}"
                    Expect.isLessThanOrEqual (relativeError g reference) 1e-5 $"{mode}, w = {w}: the gradient"
                    Expect.equal outcome.Items (int64 (nCur + nMem)) "the step counts current and memory items"
        }

        testPropertyWithConfig propConfig "in both modes, with w = 0.5 and a loss term on the memory items, a window of k uneven micro-batches (and k replay batches) equals one batch of the same current and memory items: ‖Δ‖/‖g‖ ≤ 1e-5 (float32)"
          <| fun (seed: int) (sizeSeed: PositiveInt) (kSeed: PositiveInt) (separate: bool) ->
            use _ = torch.NewDisposeScope()
            let rng = Random(seed)
            let nCur = 8 + sizeSeed.Get % 41
            let nMem = 8 + (sizeSeed.Get / 41) % 25
            let k = 2 + kSeed.Get % 5
            use gen = new torch.Generator(uint64 (uint32 seed))
            let current, memory = items gen (int64 nCur), items gen (int64 nMem)
            let mode = if separate then ReplayMode.Separate else ReplayMode.Append
            let methods () = MethodSet.Of(memoryTerm ())
            let full, outFull = step (methods ()) (mixedWindow mode 0.5 [ current ] [ memory ])
            let parts (b: Batch) n = [ for start, len in cuts rng n k -> rows b start len ]
            let split, outSplit = step (methods ()) (mixedWindow mode 0.5 (parts current nCur) (parts memory nMem))
            Expect.equal outSplit.Items outFull.Items "the same items counted"
            let error = relativeError split full
            if not (error <= 1e-5) then failtestf "%A: ‖Δ‖/‖g‖ = %g with k = %d, %d current and %d memory items" mode error k nCur nMem

        test "a memory's extra tensors reach the loss terms (aligned with their rows) and never the model, in both modes; a gradient hook's memory and the model's batches hold the task's tensors only" {
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(3UL)
            let memory = items gen 20L
            for mode in [ ReplayMode.Append; ReplayMode.Separate ] do
                let seen = ResizeArray<Seen>()
                let methods = MethodSet.Of(TaggedMemory(mode, memory), observingTerm seen)
                let window = [| items gen 8L; items gen 6L |]
                let mixed = methods.WithMemory(window, 1, 0L, 9L)
                use model = new Recording(TrainStepTests.mlp 11L)
                use o = TrainStepTests.sgd model
                TrainStep(model, o, PrecisionPolicy.Fp32, methods, 0.0).Run(mixed, 0.1) |> ignore
                let taskNames = [ Batch.Input; Batch.Targets ] |> List.sort
                Expect.isNonEmpty model.Seen "the model read batches"
                for names in model.Seen do Expect.equal names taskNames $"{mode}: the model reads the task's tensors only"
                Expect.equal seen.Count 2 $"{mode}: the loss term saw the memory items of both micro-batches"
                for s in seen do
                    Expect.equal s.Extras [ "stored" ] $"{mode}: the extra tensor reached the loss term"
                    Expect.isTrue s.Aligned $"{mode}: row j of the extras belongs to memory item j"
                    Expect.isTrue s.LogitsAreRows $"{mode}: the memory's logits are its rows of the batch's logits"
                    Expect.isFalse s.BatchHasStored $"{mode}: the batch a loss term sees is the model's"
                let expected =
                    if mode = ReplayMode.Append then [ 8L, 4L, 12L; 6L, 3L, 9L ] else [ 0L, 4L, 4L; 0L, 3L, 3L ]
                Expect.equal [ for s in seen -> s.Offset, s.Rows, s.BatchRows ] expected $"{mode}: offsets and rows of the memory items"
                use draw = new torch.Generator(1UL)
                let hookMemory = (nonNull methods.Mixer).AsMemory(0L, window[0]).Sample(5, draw)
                Expect.equal (hookMemory.Keys |> Seq.sort |> List.ofSeq) taskNames "a gradient hook's memory holds the task's tensors"
        }

        test "a memory that leaves out a tensor of the task is still refused, naming the plugin, Sample and both sets of names" {
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(4UL)
            let memory = items gen 10L
            let without =
                { new IDataRole with
                    member _.MixRatio = 0.5
                    member _.Count = memory.Size
                    member _.Sample(n, _) =
                        let picked = rows memory 0L (min (int64 n) memory.Size)
                        Batch([ KeyValuePair(Batch.Targets, picked.TargetsTensor); KeyValuePair("stored", picked[Batch.Input]) ]) }
            try
                MethodSet.Of(without).WithMemory([| items gen 8L |], 1, 0L, 1L) |> ignore
                failtest "a memory without 'input' was accepted"
            with :? PluginFailureException as e ->
                for part in [ "returned a batch of [stored, targets] from Sample at step 0"; "the task's batches hold [input, targets]" ] do
                    Expect.stringContains e.Message part "the line names it"
        }

        test "a mixing data role's wrong declarations (loss weight NaN or −1, a mode that is neither Append nor Separate, a replay batch of −2) are refused before anything trains, naming the plugin, the member and the value" {
            let role (weight: float) (mode: ReplayMode) (size: int) =
                { new IDataRole with
                    member _.MixRatio = 0.5
                    member _.LossWeight = weight
                    member _.Mode = mode
                    member _.ReplayBatchSize = size
                    member _.Count = 0L
                    member _.Sample(_, _) = failwith "not drawn" }
            for weight, mode, size, parts in
                [ nan, ReplayMode.Append, 0, [ "returned NaN from LossWeight"; "finite and ≥ 0" ]
                  -1.0, ReplayMode.Append, 0, [ "returned -1 from LossWeight" ]
                  1.0, enum<ReplayMode> 7, 0, [ "returned the mode 7 from Mode"; "Append or Separate" ]
                  1.0, ReplayMode.Separate, -2, [ "returned -2 from ReplayBatchSize"; "≥ 0" ] ] do
                let mixer = nonNull (MethodSet.Of(role weight mode size)).Mixer
                try
                    mixer.CheckReplay()
                    failtestf "%A accepted" parts
                with :? PluginFailureException as e ->
                    for part in "method '" :: parts do Expect.stringContains e.Message part "the line names it"
        }

        test "replay's options added in 3.0 (loss_weight, mode, replay_batch_size) are left out of the identity at their defaults (a stored replay run keeps its identity) and count when set; replay_batch_size is refused in append mode" {
            let text = "[study]\nbenchmark = \"permuted\"\n[[methods]]\nname = \"replay\"\n"
            let canonical overrides = ResolvedConfig.Canonical(ConfigLoader.Parse(text, "c.toml", overrides), host.Value, "study")
            let identity overrides = ResolvedConfig.Identity(canonical overrides, host.Value)
            let c = canonical []
            let table = (c["methods"].AsArray()[0]).AsObject()
            for key in [ "loss_weight"; "mode"; "replay_batch_size" ] do
                Expect.isTrue (table.ContainsKey key) $"the canonical config writes {key} out"
            let stored = c.DeepClone().AsObject()
            let storedTable = (stored["methods"].AsArray()[0]).AsObject()
            for key in [ "loss_weight"; "mode"; "replay_batch_size" ] do storedTable.Remove key |> ignore
            Expect.equal (ResolvedConfig.Identity(c, host.Value)) (ResolvedConfig.Identity(stored, host.Value)) "the identity of the same config stored before 3.0"
            Expect.equal (identity [ "methods.0.loss_weight=1.0"; "methods.0.mode=\"append\"" ]) (identity []) "the defaults written out are the same run"
            for set in [ [ "methods.0.loss_weight=0.5" ]; [ "methods.0.mode=\"separate\"" ]; [ "methods.0.mode=\"separate\""; "methods.0.replay_batch_size=8" ] ] do
                Expect.notEqual (identity set) (identity []) $"{set} is another run"
            try
                canonical [ "methods.0.replay_batch_size=8" ] |> ignore
                failtest "replay_batch_size was accepted in append mode"
            with :? ConfigException as e -> Expect.stringContains e.Message "replay_batch_size" "names the key"
        }

        test "plugin state kept as JSON values (a counter, a double, a string, a record) and a separate replay batch at w = 0.5: a study killed with SIGKILL at 2 points resumes to weights and matrices bitwise equal to an uninterrupted one, and the counter counts every step once" {
            killAndResumeBitwise replayAndScalarState [ 23; 55 ] (fun runDir ->
                let values = valuesIn (Path.Combine(runDir, "checkpoints", "final")) "1"
                Expect.equal (values.GetProperty("calls").GetInt64()) 36L "one penalty call per step (2 tasks × 18 steps): none lost, none twice"
                Expect.equal (values.GetProperty("phase").GetString()) "task-1" "the string"
                Expect.equal (values.GetProperty("seen").GetProperty("Calls").GetInt64()) 36L "the record")
        }

        test "a state value JSON cannot hold exactly (a NaN, a System.Type) fails the run when a checkpoint is written: one line naming the plugin, its DLL, StateValues, the step and the value; recorded as failed" {
            for fault, parts in [ "nan", [ "'strength' = NaN"; "finite numbers" ]; "type", [ "'seen' = a System.RuntimeType"; "NotSupportedException" ] ] do
                let dir = tempDir "replay-bad-value"
                let config = syntheticConfig dir (sprintf "\n[checkpoint]\nevery = 4\n[[methods]]\nname = \"scalar-state\"\nfault = \"%s\"\n" fault)
                let r = researchInProcess [ "train"; config; "--plugins"; fixture ]
                Expect.equal r.ExitCode 1 (sprintf "%s: the run failed (exit 1); stderr %s" fault r.Err)
                Expect.isFalse (r.Err.Contains "   at ") "no stack trace"
                let line =
                    match r.Err.Split('\n') |> Array.tryFind (fun l -> l.Contains "method 'scalar-state' (") with
                    | Some line -> line
                    | None -> failtestf "no line names the plugin: %s" r.Err
                for part in [ "Plugin.Replay.dll"; "from StateValues at step 4" ] @ parts do
                    Expect.stringContains line part $"{fault}: the line names it"
                use reader = RunReader.Open(Path.Combine(onlyRunDir dir, RunStore.FileName))
                let stored = reader.Runs() |> Seq.exactlyOne
                Expect.equal stored.Status "failed" "recorded as failed"
                Expect.stringContains (nonNull stored.Error) "StateValues" "with the reason"
        }

        test "DER++ stores each item with the logits of the model at insertion (bitwise), and its step's loss is Σ_cur ℓ/N_cur + α·Σ_mem mean_c (h − z)²/N_mem + β·Σ_mem ℓ/N_mem of a float64 model: loss and gradient within 1e-5 relative" {
            use _ = torch.NewDisposeScope()
            use gen = new torch.Generator(13UL)
            let alpha, beta = 0.3, 0.5
            let der = Der(DerOptions(Budget = 100, Alpha = alpha, Beta = beta, MixRatio = 0.5))
            let methods = MethodSet.Of(der)
            use m = TrainStepTests.mlp 11L
            use o = TrainStepTests.sgd m
            let trainStep = TrainStep(m, o, PrecisionPolicy.Fp32, methods, 0.0)
            // Step 0: an empty memory, nothing replayed; all 30 items enter (budget 100), with the logits of the step's model.
            let first = [| items gen 16L; items gen 14L |]
            let logitsNow (b: Batch) =
                use _ = torch.no_grad()
                m.forward(b[Batch.Input])
            let atInsertion = torch.cat([| for b in first -> logitsNow b |], 0L)
            let mixed0 = methods.WithMemory(first, 0, 0L, 3L)
            Expect.isNull (box mixed0.Memory) "nothing to replay yet"
            trainStep.Run(mixed0, 1.0) |> ignore
            let state = der.StateDict()
            Expect.isTrue (same state["memory/logits"] atInsertion) "the stored logits are the model's at insertion, every bit"
            Expect.isTrue (same state["memory/input"] (torch.cat([| for b in first -> b[Batch.Input] |], 0L))) "beside their items, in order"
            // Step 1: one micro-batch of 12 with a replay batch of round(0.5 · 12) = 6 items and their stored logits.
            let current = items gen 12L
            let mixed1 = methods.WithMemory([| current |], 0, 1L, 3L)
            let part = (nonNull mixed1.Memory).Parts[0]
            let replay, stored = part.Replay, part.Extras[Der.LogitsKey].clone()
            Expect.equal replay.Size 6L "m = round(r·B)"
            let replayCopy = rows replay 0L replay.Size
            let expected, reference =
                use m64 = TrainStepTests.mlp 11L
                do
                    use _ = torch.no_grad()
                    let now = dict [ for struct (n, p) in m.named_parameters() -> n, p ]
                    for struct (n, p) in m64.named_parameters() do p.copy_(now[n]) |> ignore
                m64.``to``(torch.ScalarType.Float64) |> ignore
                let nCur, nMem = float current.Items, float replayCopy.Items
                let memLogits = m64.forward(replayCopy[Batch.Input].double())
                let matching = ((memLogits - stored.double()).square().mean([| -1L |]) * replayCopy.ItemMask().double()).sum()
                let l = lossSum m64 current / nCur + matching * alpha / nMem + lossSum m64 replayCopy * beta / nMem
                l.backward()
                l.item<float>(), [ for struct (n, p) in m64.named_parameters() -> n, p.grad.detach().clone() ]
            let before = [ for struct (n, p) in m.named_parameters() -> n, p.detach().clone() ]
            let outcome = trainStep.Run(mixed1, 1.0)
            let after = dict [ for struct (n, p) in m.named_parameters() -> n, p.detach().clone() ]
            let g = [ for n, b in before -> n, (b - after[n]).double() ]
            Expect.isLessThanOrEqual (abs (outcome.Loss - expected) / (1.0 + abs expected)) 1e-5 $"loss {outcome.Loss} against {expected}"
            Expect.isLessThanOrEqual (relativeError g reference) 1e-5 "the gradient"
        }

        test "DER++ in a study killed with SIGKILL at 2 points resumes to weights and matrices bitwise equal to an uninterrupted one; its count of offered micro-batches is a state value" {
            killAndResumeBitwise derPlusPlus [ 29; 47 ] (fun runDir ->
                let values = valuesIn (Path.Combine(runDir, "checkpoints", "final")) "0"
                Expect.equal (values.GetProperty("offered").GetInt64()) 68L "every training micro-batch (2 tasks × 34) offered once")
        }
    ]
