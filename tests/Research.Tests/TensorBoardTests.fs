/// The TensorBoard event files a run writes, read back by a reader of the tests' own: TFRecord framing checked with a
/// table-driven CRC-32C written here (not the writer's hardware one), Event and Summary messages decoded field by field
/// with Google.Protobuf's CodedInputStream, and TensorBoard's rule for a restarted run (a SessionLog START at step s
/// drops the events at steps ≥ s read before it). What it finds must be what the run store has.
module Research.Tests.TensorBoardTests

open System
open System.Buffers.Binary
open System.IO
open Expecto
open Google.Protobuf
open Research.Core.Tracking
open Research.Tests.TestSupport

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), one byte at a time from a 256-entry table.
let private crcTable =
    Array.init 256 (fun n ->
        let mutable c = uint32 n
        for _ in 1 .. 8 do c <- if c &&& 1u <> 0u then (c >>> 1) ^^^ 0x82F63B78u else c >>> 1
        c)

let private crc32c (bytes: ReadOnlySpan<byte>) =
    let mutable c = 0xFFFFFFFFu
    for i in 0 .. bytes.Length - 1 do c <- crcTable[int ((c ^^^ uint32 bytes[i]) &&& 0xFFu)] ^^^ (c >>> 8)
    ~~~c

let private masked (crc: uint32) = ((crc >>> 15) ||| (crc <<< 17)) + 0xa282ead8u

type private Value =
    | Scalar of float32
    | Histogram of min: float * max: float * num: float * sum: float * sumSquares: float * limits: float[] * counts: float[]
    | Image of width: int * height: int * png: byte[]

type private Event =
    { Step: int64
      FileVersion: string option
      Start: bool
      Values: (string * Value) list }

/// Every field of a message: (field number, wire type, the reader positioned at its value).
let private fields (bytes: byte[]) (onField: int -> WireFormat.WireType -> CodedInputStream -> bool) =
    use input = new CodedInputStream(bytes)
    let mutable tag = input.ReadTag()
    while tag <> 0u do
        if not (onField (WireFormat.GetTagFieldNumber tag) (WireFormat.GetTagWireType tag) input) then input.SkipLastField()
        tag <- input.ReadTag()

let private doubles (bytes: byte[]) = Array.init (bytes.Length / 8) (fun i -> BitConverter.ToDouble(bytes, 8 * i))

let private decodeValue (bytes: byte[]) =
    let mutable tag = ""
    let mutable value = None
    fields bytes (fun field wire input ->
        match field, wire with
        | 1, WireFormat.WireType.LengthDelimited -> tag <- input.ReadString(); true
        | 2, WireFormat.WireType.Fixed32 -> value <- Some(Scalar(input.ReadFloat())); true
        | 4, WireFormat.WireType.LengthDelimited ->
            let mutable w, h, png = 0, 0, [||]
            fields (input.ReadBytes().ToByteArray()) (fun f _ i ->
                match f with
                | 1 -> h <- i.ReadInt32(); true
                | 2 -> w <- i.ReadInt32(); true
                | 4 -> png <- i.ReadBytes().ToByteArray(); true
                | _ -> false)
            value <- Some(Image(w, h, png)); true
        | 5, WireFormat.WireType.LengthDelimited ->
            let numbers = Collections.Generic.Dictionary<int, float>()
            let mutable limits, counts = [||], [||]
            fields (input.ReadBytes().ToByteArray()) (fun f _ i ->
                match f with
                | 1 | 2 | 3 | 4 | 5 -> numbers[f] <- i.ReadDouble(); true
                | 6 -> limits <- doubles (i.ReadBytes().ToByteArray()); true
                | 7 -> counts <- doubles (i.ReadBytes().ToByteArray()); true
                | _ -> false)
            let n k = match numbers.TryGetValue k with | true, v -> v | _ -> 0.0
            value <- Some(Histogram(n 1, n 2, n 3, n 4, n 5, limits, counts)); true
        | _ -> false)
    tag, value

let private decodeEvent (bytes: byte[]) =
    let mutable event = { Step = 0L; FileVersion = None; Start = false; Values = [] }
    fields bytes (fun field wire input ->
        match field, wire with
        | 2, WireFormat.WireType.Varint -> event <- { event with Step = input.ReadInt64() }; true
        | 3, WireFormat.WireType.LengthDelimited -> event <- { event with FileVersion = Some(input.ReadString()) }; true
        | 5, WireFormat.WireType.LengthDelimited ->
            let values = ResizeArray()
            fields (input.ReadBytes().ToByteArray()) (fun f _ i ->
                if f = 1 then
                    match decodeValue (i.ReadBytes().ToByteArray()) with
                    | tag, Some v -> values.Add(tag, v)
                    | _ -> ()
                    true
                else false)
            event <- { event with Values = List.ofSeq values }; true
        | 6, WireFormat.WireType.LengthDelimited ->
            let mutable status = 0
            fields (input.ReadBytes().ToByteArray()) (fun f _ i -> if f = 1 then status <- i.ReadInt32(); true else false)
            event <- { event with Start = (status = 1) }; true
        | _ -> false)
    event

/// The events of one file, each record's two CRCs checked.
let private readFile (path: string) =
    let bytes = File.ReadAllBytes path
    let events = ResizeArray()
    let mutable at = 0
    // A killed writer may leave a record cut short at the end of its file; TensorBoard reads up to it, so does this.
    let complete at = at + 12 <= bytes.Length && at + 16 + int (BinaryPrimitives.ReadUInt64LittleEndian(ReadOnlySpan(bytes).Slice(at, 8))) <= bytes.Length
    while at < bytes.Length && complete at do
        let span = ReadOnlySpan(bytes)
        let length = int (BinaryPrimitives.ReadUInt64LittleEndian(span.Slice(at, 8)))
        Expect.equal (BinaryPrimitives.ReadUInt32LittleEndian(span.Slice(at + 8, 4))) (masked (crc32c (span.Slice(at, 8)))) (sprintf "%s: length CRC at %d" path at)
        let data = span.Slice(at + 12, length)
        Expect.equal (BinaryPrimitives.ReadUInt32LittleEndian(span.Slice(at + 12 + length, 4))) (masked (crc32c data)) (sprintf "%s: data CRC at %d" path at)
        events.Add(decodeEvent (data.ToArray()))
        at <- at + 12 + length + 4
    List.ofSeq events

/// What TensorBoard shows for a folder: its event files in name order, each starting with its version; a START at
/// step s drops the values read so far at steps ≥ s. By (tag, step), the last value written.
let private readFolder (dir: string) =
    let files = Directory.GetFiles(dir, "events.out.tfevents.*") |> Array.sort
    Expect.isNonEmpty files (sprintf "an event file in %s" dir)
    let mutable seen : ((string * int64) * Value) list = []
    for f in files do
        let events = readFile f
        Expect.equal events.Head.FileVersion (Some "brain.Event:2") (sprintf "%s starts with its version" f)
        for e in events do
            if e.Start then seen <- seen |> List.filter (fun ((_, step), _) -> step < e.Step)
            for tag, v in e.Values do seen <- ((tag, e.Step), v) :: (seen |> List.filter (fun (key, _) -> key <> (tag, e.Step)))
    seen |> Map.ofList

let private scalarsOf (board: Map<string * int64, Value>) =
    board |> Map.toList |> List.choose (fun (key, v) -> match v with Scalar x -> Some(key, x) | _ -> None) |> Map.ofList

/// The store's values as the event file must hold them: metrics and evaluations by (tag, step), float32, NULLs left out.
let private storeScalars (runDir: string) =
    let rows sql = Research.Tests.TrainingTests.storeRows runDir sql
    [ for r in rows "SELECT step, key, value FROM metrics WHERE value IS NOT NULL" ->
          (TensorBoardWriter.MetricTag(string r[1]), Convert.ToInt64 r[0]), float32 (Convert.ToDouble r[2])
      for r in rows "SELECT step, split, loss, accuracy FROM evaluations" do
          if not (isNull r[2]) then yield ($"{r[1]}/loss", Convert.ToInt64 r[0]), float32 (Convert.ToDouble r[2])
          if not (isNull r[3]) then yield ($"{r[1]}/accuracy", Convert.ToInt64 r[0]), float32 (Convert.ToDouble r[3]) ]
    |> Map.ofList

let tests =
    testList "tensorboard" [
        test "a run's event file holds every metric and evaluation of its store, at the same steps, as float32, and nothing else" {
            let dir = tempDir "tb-run"
            let config = syntheticConfig dir "log_every = 1\neval_every = 4\n"
            let r = research dir [ "train"; config ]
            Expect.equal r.ExitCode 0 r.Err
            let runDir = onlyRunDir dir
            let board = scalarsOf (readFolder runDir)
            let store = storeScalars runDir
            Expect.isGreaterThan store.Count 20 "the run recorded values"
            Expect.equal board store "the event file and the store hold the same (tag, step) → value"
            Expect.isTrue (board |> Map.exists (fun (tag, _) _ -> tag = "train/loss")) "train/loss is there"
        }

        test "the demo's two runs on real Fashion-MNIST (research demo --no-study): each event file holds what its store has, the halves' accuracies included" {
            let dir = tempDir "tb-demo"
            let r = research dir [ "demo"; "--no-study" ]
            Expect.equal r.ExitCode 0 r.Err
            let runs = Directory.GetDirectories(Path.Combine(dir, "runs")) |> Array.filter (fun d -> File.Exists(Path.Combine(d, "run.sqlite")))
            Expect.equal runs.Length 2 "pre-training and fine-tuning"
            for runDir in runs do
                let board = scalarsOf (readFolder runDir)
                Expect.equal board (storeScalars runDir) (sprintf "%s: the event file and the store hold the same values" runDir)
                Expect.isTrue (board |> Map.exists (fun (tag, _) _ -> tag = "test_0_4/accuracy")) "classes 0–4's accuracy, the forgetting the demo shows"
        }

        test "a language model on real text (English fortunes): the event file has its perplexity and bits per byte under the split, as the store has them" {
            let dir = tempDir "tb-text"
            let config = fortunesGptConfig dir "eval_every = 10"
            let r = research dir [ "train"; config ]
            Expect.equal r.ExitCode 0 r.Err
            let runDir = onlyRunDir dir
            let board = scalarsOf (readFolder runDir)
            Expect.equal board (storeScalars runDir) "the event file and the store hold the same values"
            for tag in [ "val/perplexity"; "val/bits_per_byte"; "test/perplexity"; "train/loss" ] do
                Expect.isTrue (board |> Map.exists (fun (t, _) _ -> t = tag)) (sprintf "%s is there" tag)
        }

        test "a study adds Δθ histograms per parameter group and the accuracy matrix as an image at each task end; its squares sum to ‖Δθ‖²" {
            let dir = tempDir "tb-study"
            let r = research dir [ "study"; syntheticStudy dir "tb-study" "[checkpoint]\nevery = 3\nat_epoch_end = false\n" ]
            Expect.equal r.ExitCode 0 r.Err
            let runDir = onlyRunDir dir
            let board = readFolder runDir
            let rows sql = Research.Tests.TrainingTests.storeRows runDir sql
            let histograms = board |> Map.toList |> List.choose (fun ((tag, step), v) -> match v with Histogram(a, b, n, s, q, l, c) when tag.StartsWith "delta_theta/" -> Some(step, (tag, a, b, n, q, l, c)) | _ -> None)
            let steps = histograms |> List.map fst |> List.distinct |> List.sort
            Expect.equal steps.Length 2 (sprintf "histograms at the two task ends: %A" steps)
            let norms = rows "SELECT json FROM study_values WHERE kind = 'probe' AND name = 'parameter_change_norm'" |> List.exactlyOne
            let change = Text.Json.JsonSerializer.Deserialize<float[][]>(string norms[0])
            for i, step in List.indexed steps do
                let groups = histograms |> List.filter (fun (s, _) -> s = step) |> List.map snd
                for tag, lo, hi, n, _, limits, counts in groups do
                    Expect.equal (Array.sum counts) n (sprintf "%s: the buckets hold every value" tag)
                    Expect.isTrue (lo <= hi && limits |> Array.pairwise |> Array.forall (fun (a, b) -> a < b)) (sprintf "%s: ordered limits" tag)
                    Expect.floatClose Accuracy.high limits[limits.Length - 1] hi (sprintf "%s: the last limit is the maximum" tag)
                let squares = groups |> List.sumBy (fun (_, _, _, _, q, _, _) -> q)
                Expect.floatClose { absolute = 1e-9; relative = 1e-4 } (sqrt squares) (change[i][0]) (sprintf "after task %d: √Σ squares = parameter_change_norm" i)
            let images = board |> Map.toList |> List.choose (fun ((tag, step), v) -> match v with Image(w, h, png) when tag = "study/accuracy_matrix" -> Some(step, w, h, png) | _ -> None)
            Expect.equal (images |> List.map (fun (s, _, _, _) -> s)) steps "one matrix image per task end"
            for _, w, h, png in images do
                Expect.equal (w, h) (560, 480) "its size"
                Expect.equal png[0..3] [| 0x89uy; 0x50uy; 0x4Euy; 0x47uy |] "a PNG"
        }

        test "a killed and resumed run's event files, read as TensorBoard reads them, hold exactly what its store has" {
            let dir = tempDir "tb-resume"
            let config = syntheticConfig dir "log_every = 1\neval_every = 4\n[checkpoint]\nevery = 3\nat_epoch_end = false\n"
            let killed = researchKilledAfter 10 dir [ "train"; config ]
            Expect.equal killed.ExitCode 137 (sprintf "killed:\n%s" killed.Err)
            let runDir = onlyRunDir dir
            let resumed = research dir [ "train"; config; "--resume"; runDir ]
            Expect.equal resumed.ExitCode 0 resumed.Err
            Expect.equal (Directory.GetFiles(runDir, "events.out.tfevents.*").Length) 2 "one file per process"
            let board = scalarsOf (readFolder runDir)
            Expect.equal board (storeScalars runDir) "the same values after the restart rule"
        }
    ]
