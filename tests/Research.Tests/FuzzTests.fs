/// The fuzz suite. Seeded generators (FsCheck, fixed seeds: the same cases in every run) make configs, `--set` overrides,
/// damaged checkpoints, weight files and data folders; each case is labelled from the option schema (OptionSchema.Of over
/// ConfigLoader.SectionTypes, the built-in data sources' and plugins' options types) or from a documented rule, and goes through the
/// command line's entry point — in-process (Program.Main) or as a real `research` process. Every case: exit 0, 1 or 2; no
/// unhandled exception, no stack trace; a refusal is one "error:" line per problem naming the file and the key; a refused
/// input changes nothing on disk; a run's store holds no duplicated rows.
module Research.Tests.FuzzTests

open System
open System.Diagnostics
open System.Globalization
open System.IO
open System.Security.Cryptography
open System.Text
open System.Threading
open System.Threading.Tasks
open Expecto
open FsCheck
open FsCheck.FSharp
open Microsoft.Data.Sqlite
open Research.Core.Config
open Research.Core.Models
open Research.Core.Models.Kinds
open Research.Core.Plugins
open Research.Tests.TestSupport

// ---------------------------------------------------------------------------------------------------------------------
// Running the command line: in-process with its output captured, or as a process with a time limit.

/// `research ARGS` in this process (Program.Main), its output captured.
let private cli = researchInProcess

/// `research ARGS` as a process, killed (exit −1) when it has not ended within the limit.
let private researchWithin (seconds: float) (environment: (string * string) list) (workDir: string) (args: string list) =
    let psi = ProcessStartInfo("dotnet", WorkingDirectory = workDir, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false)
    psi.ArgumentList.Add(Path.Combine(binDir, "research.dll"))
    for a in args do psi.ArgumentList.Add a
    psi.Environment["TERM"] <- "dumb"
    for name, value in environment do psi.Environment[name] <- value
    use p = Process.Start psi
    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()
    if p.WaitForExit(TimeSpan.FromSeconds seconds) then
        p.WaitForExit()
        { ExitCode = p.ExitCode; Out = out.Result; Err = err.Result }
    else
        p.Kill true
        p.WaitForExit()
        { ExitCode = -1; Out = out.Result; Err = err.Result + sprintf "\n(hung: killed after %.0f s)" seconds }

/// Runs jobs two at a time (the machine has two cores), results in order.
let private twoAtATime (jobs: (unit -> 'T) list) : 'T list =
    jobs |> List.map (fun job -> async { return job () }) |> fun xs -> Async.Parallel(xs, 2) |> Async.RunSynchronously |> List.ofArray

// ---------------------------------------------------------------------------------------------------------------------
// What a case expects, and the tally of what happened.

/// What the command line must do with a case.
type Expected =
    /// Exit 0.
    | Accept
    /// Exit 2, every stderr line an "error:", naming each of these (the file, the key).
    | Refuse of names: string list
    /// Exit 0, or exit 2 as a refusal naming these (an input the format cannot tell from a valid one).
    | Either of names: string list

let private clip (s: string) =
    let s = s.Trim().Replace("\n", " ⏎ ")
    if s.Length > 400 then s.Substring(0, 400) + "…" else s

let private lines (s: string) = s.Split('\n') |> Array.map (fun l -> l.TrimEnd '\r') |> Array.filter (fun l -> l.Trim() <> "")

/// A crash: an exit code that is not 0, 1 or 2 (134: .NET's abort; −1: hung), the runtime's report, a stack trace.
let private crashed (r: ProcessResult) =
    (r.ExitCode <> 0 && r.ExitCode <> 1 && r.ExitCode <> 2)
    || r.Err.Contains "Unhandled exception" || r.Out.Contains "Unhandled exception"
    || (lines r.Err |> Array.exists (fun l -> l.StartsWith "   at "))

type private Tally() =
    let problems = ResizeArray<string>()
    member val Valid = 0 with get, set
    member val Invalid = 0 with get, set
    member val Crashes = 0 with get, set
    member val Silent = 0 with get, set
    member val Refused = 0 with get, set
    member val Processes = 0 with get, set
    member _.Problems = problems
    member this.Cases = this.Valid + this.Invalid
    member _.Problem (kind: string) (label: string) (r: ProcessResult) =
        problems.Add(sprintf "%s — %s\n      exit %d; stderr: %s" kind label r.ExitCode (clip r.Err))

/// Judges one case; true when it did what it must.
let private judge (t: Tally) (label: string) (expected: Expected) (r: ProcessResult) =
    match expected with
    | Accept -> t.Valid <- t.Valid + 1
    | _ -> t.Invalid <- t.Invalid + 1
    if crashed r then
        t.Crashes <- t.Crashes + 1
        t.Problem "CRASH" label r
        false
    else
        let refusal (names: string list) =
            if r.ExitCode <> 2 then t.Problem (sprintf "exit %d where a refusal exits 2" r.ExitCode) label r; false
            elif lines r.Err |> Array.isEmpty || lines r.Err |> Array.exists (fun l -> not (l.StartsWith "error:")) then
                t.Problem "not one \"error:\" line per problem" label r; false
            else
                match names |> List.tryFind (fun n -> not (r.Err.Contains n)) with
                | Some n -> t.Problem (sprintf "the error does not name %s" n) label r; false
                | None -> true
        match expected with
        | Accept when r.ExitCode = 0 -> true
        | Accept -> t.Refused <- t.Refused + 1; t.Problem "VALID INPUT REFUSED" label r; false
        | Refuse _ when r.ExitCode = 0 -> t.Silent <- t.Silent + 1; t.Problem "INVALID INPUT ACCEPTED" label r; false
        | Refuse names -> refusal names
        | Either _ when r.ExitCode = 0 -> true
        | Either names -> refusal names

/// The counts line, then a failure listing the cases that went wrong.
let private finishThen (after: unit -> unit) (t: Tally) (what: string) (elapsed: TimeSpan) =
    printfn "fuzz: %s; crashes %d, silent acceptances %d, valid inputs refused %d, other failures %d (%.1f s)"
        what t.Crashes t.Silent t.Refused (t.Problems.Count - t.Crashes - t.Silent - t.Refused) elapsed.TotalSeconds
    after ()
    if t.Problems.Count > 0 then
        failtestf "%d of %d cases failed:\n  %s" t.Problems.Count t.Cases (String.Join("\n  ", Seq.truncate 30 t.Problems))

let private finish t what elapsed = finishThen ignore t what elapsed

/// Files a run writer holds while it writes (RunLock): taken and released by every writer, refused or not.
let private lockFiles = set [ "run.lock"; "run.pid" ]

/// Not data: SQLite's shared-memory index of a store in WAL mode (what a killed writer leaves), which any connection
/// to the store, a read-only one too, may rebuild.
let private isShm (path: string) = path.EndsWith "-shm"

/// Every entry under a folder: name, size and SHA-256 of regular files; links, FIFOs and devices are listed, never opened.
let private snapshot (dir: string) =
    if not (Directory.Exists dir) then [||]
    else
        Directory.GetFileSystemEntries(dir, "*", SearchOption.AllDirectories)
        |> Array.filter (fun p -> not (lockFiles.Contains(Path.GetFileName p)) && not (isShm p))
        |> Array.sort
        |> Array.map (fun p ->
            let info = FileInfo p
            if not (isNull info.LinkTarget) then sprintf "%s -> %s" p info.LinkTarget
            elif Directory.Exists p then p + "/"
            elif info.Length > 0L then sprintf "%s %d %s" p info.Length (Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes p)))
            else sprintf "%s (empty or not a regular file)" p)

/// Records a change on disk made by a refused input.
let private unchanged (t: Tally) (label: string) (r: ProcessResult) (before: string[]) (after: string[]) =
    if before <> after then
        let added = Set.difference (Set after) (Set before) |> Seq.truncate 3 |> String.concat ", "
        let removed = Set.difference (Set before) (Set after) |> Seq.truncate 3 |> String.concat ", "
        t.Problem (sprintf "a refused input changed the disk (now: %s; was: %s)" added removed) label r

// ---------------------------------------------------------------------------------------------------------------------
// Seeded generation.

/// A stable seed from a text (string.GetHashCode is randomised per process).
let private seedOf (text: string) =
    text |> Seq.fold (fun (h: uint64) c -> (h ^^^ uint64 c) * 1099511628211UL) 14695981039346656037UL

/// One value of a generator, from a fixed seed.
let private draw (seed: uint64) (g: Gen<'T>) : 'T = (Gen.sampleWithSeed (Rnd seed) 30 1 g)[0]

/// TOML text of a string.
let private toml (s: string) =
    let sb = StringBuilder("\"")
    for c in s do
        match c with
        | '"' -> sb.Append "\\\"" |> ignore
        | '\\' -> sb.Append "\\\\" |> ignore
        | c when Char.IsControl c -> sb.AppendFormat("\\u{0:X4}", int c) |> ignore
        | c -> sb.Append c |> ignore
    sb.Append('"').ToString()

/// TOML text of a float (always with a fraction or an exponent, so it reads back as a float).
let private tomlFloat (d: float) =
    let s = d.ToString("R", CultureInfo.InvariantCulture).Replace("E", "e")
    if s.Contains "e" || s.Contains "." || s.Contains "n" then s else s + ".0"

/// TOML text of a value: integers, floats, booleans, strings, enums (by their option names) and arrays of them.
let rec private render (v: obj) : string =
    match v with
    | :? bool as b -> if b then "true" else "false"
    | :? int as i -> string i
    | :? int64 as i -> string i
    | :? float as d -> tomlFloat d
    | :? float32 as d -> tomlFloat (float d)
    | :? string as s -> toml s
    | :? Enum as e -> toml (OptionsBinder.SnakeCase(e.ToString()).Replace('_', '-'))
    | :? Array as a -> "[" + String.Join(", ", [| for x in a -> render x |]) + "]"
    | _ -> failwithf "no TOML for %O" v

/// A config: table headers with their keys and TOML values, in order.
type private Doc = (string * (string * string) list) list

let private renderDoc (doc: Doc) =
    let sb = StringBuilder()
    for header, keys in doc do
        sb.Append(header).Append('\n') |> ignore
        for k, v in keys do sb.Append(k).Append(" = ").Append(v).Append('\n') |> ignore
        sb.Append('\n') |> ignore
    string sb

/// Sets a key of the table with this header (adding the key, or the table at the end).
let private setKey (header: string) (key: string) (value: string) (doc: Doc) : Doc =
    if doc |> List.exists (fun (h, _) -> h = header) then
        doc |> List.map (fun (h, keys) ->
            if h <> header then h, keys
            elif keys |> List.exists (fun (k, _) -> k = key) then h, keys |> List.map (fun (k, v) -> k, (if k = key then value else v))
            else h, keys @ [ key, value ])
    else doc @ [ header, [ key, value ] ]

let private headerOf (section: string) = sprintf "[%s]" section

/// The base of every config case: synthetic data (256 items, 4 classes; 25 % held out: 192 training items, batches of
/// 32, 2 epochs = 12 optimizer steps), a tiny model.
let private baseDoc (dir: string) : Doc =
    [ "[run]", [ "name", "\"fuzz\""; "seed", "3"; "threads", "0"; "output_dir", toml (Path.Combine(dir, "runs")) ]
      "[data]", [ "dataset", "\"synthetic\""; "synthetic_samples", "256"
                  "synthetic_features", "8"; "synthetic_classes", "4"; "batch_size", "32"; "validation_fraction", "0.25" ]
      "[model]", [ "hidden", "[8]" ]
      "[optimizer]", [ "lr", "0.01" ]
      "[train]", [ "epochs", "2" ]
      "[study]", [ "tasks", "2" ] ]

let private baseSteps = 12L
let private baseSamples, baseFraction, baseClasses = 256L, 0.25, 4L

/// Training items after the validation holdout (TensorDataset.Holdout: ⌈fraction · n⌉ held out).
let private trainItems (samples: int64) (fraction: float) (limit: int64) =
    let n = if limit <= 0L || limit >= samples then samples else limit
    n - int64 (Math.Ceiling(fraction * float n))

// ---- The Fashion-MNIST format (as BadInputTests writes it).

let private writeGz (path: string) (bytes: byte[]) =
    use file = File.Create path
    use gz = new Compression.GZipStream(file, Compression.CompressionLevel.Fastest)
    gz.Write(bytes, 0, bytes.Length)

let private idx (magic: int) (dims: int list) (data: byte[]) =
    let be (v: int) = [| byte (v >>> 24); byte (v >>> 16); byte (v >>> 8); byte v |]
    Array.concat [ be magic; yield! dims |> List.map be; data ]

/// A Fashion-MNIST folder in the real format: `train` training and `test` test items, labels cycling through 0–9.
let private fashionFolder (dir: string) (train: int) (test: int) =
    Directory.CreateDirectory dir |> ignore
    let write name (n: int) =
        writeGz (Path.Combine(dir, name + "-images-idx3-ubyte.gz")) (idx 2051 [ n; 28; 28 ] (Array.init (n * 784) (fun i -> byte (i % 251))))
        writeGz (Path.Combine(dir, name + "-labels-idx1-ubyte.gz")) (idx 2049 [ n ] (Array.init n (fun i -> byte (i % 10))))
    write "train" train
    write "t10k" test

// ---------------------------------------------------------------------------------------------------------------------
// Values from the schema.

/// The range valid values are drawn from, inside the schema's bounds, for options whose large values cost memory or time
/// (a dry-run builds the data and the model). Outside these, valid values span the schema's whole range.
let private cheap : Map<string, int64 * int64> =
    Map [ "run.threads", (0L, 2L)                    // process-global: the suite restores it afterwards
          "data.synthetic_samples", (1L, 600L)
          "data.synthetic_features", (1L, 64L)
          "data.synthetic_classes", (2L, 64L)
          "model.hidden", (1L, 64L)
          "model.outputs", (0L, 1000L)
          "study.tasks", (2L, 5L)
          "data.classes", (0L, 6L) ]                 // 4 and 5 are past the 4 classes: a documented refusal

let private validRegexes = [ "^head\\."; "bias$"; "\\.(\\d+)\\."; "layers"; ".*"; "(a|b)+"; "[0-9]"; "" ]
let private invalidRegexes = [ "("; "[a-"; "*x"; "a{2,1}"; "(?<n"; "\\" ]

let private intIn (lo: int64) (hi: int64) : Gen<int64> =
    Gen.frequency [
        2, Gen.elements [ lo; hi ]
        3, Gen.choose (0, 10) |> Gen.map (fun d -> min hi (lo + int64 d))
        3, Gen.choose (0, 1_000_000) |> Gen.map (fun u ->
               let span = float hi - float lo + 1.0
               min hi (lo + int64 (Math.Pow(span, float u / 1e6)) - 1L)) ]

let private floatIn (lo: float) (loEx: bool) (hi: float) (hiEx: bool) : Gen<float> =
    let lo' = if loEx then Math.BitIncrement lo else lo
    let hi' = if hiEx then Math.BitDecrement hi else hi
    let candidates =
        [ lo'; hi'; 0.0; 5e-324; 1e-300; 1e-8; 1e-3; 0.1; 0.5; 0.9; 1.0; 2.0; 1e3; 1e300 ]
        |> List.filter (fun v -> v >= lo' && v <= hi')
    Gen.frequency [
        3, Gen.elements candidates
        3, Gen.choose (0, 1_000_000) |> Gen.map (fun u ->
               let a, b = max lo' -1e6, min hi' 1e6
               a + (b - a) * float u / 1e6) ]

let private textOf (chars: string) (lo: int) (hi: int) : Gen<string> =
    Gen.choose (lo, hi)
    |> Gen.bind (fun n -> Gen.sequenceToArray (Array.replicate n (Gen.elements chars)))
    |> Gen.map String

let private freeText = textOf "abcxyz019 _-./:é名\"\\#=[]{}" 0 20

/// Run names inside the schema (at most 100 characters), some of them refused by RunSection's documented rules (not a
/// file name; longer than a file name's bytes with the run folder's stamp).
let private runNames : Gen<string> =
    Gen.frequency [
        6, textOf "abcdefghijklmnopqrstuvwxyz0123456789_-." 1 100
        1, Gen.choose (40, 100) |> Gen.map (fun n -> String('名', n))
        1, Gen.choose (60, 100) |> Gen.map (fun n -> String('é', n))
        1, Gen.elements [ ""; " "; "a/b"; "/"; "\t"; "a\u0000b"; String('n', 100); "." ] ]

/// Documented refusals of values the schema allows (rules that relate an option to others or to the data, in Validate()
/// or checked when the run is built): the keys the error names.
let private crossField (path: string) (key: string) (v: obj) : Expected option =
    let n () = Convert.ToInt64 v
    let refuse names = Refuse(path :: names)
    match key, v with
    // The base optimizer is AdamW: SGD's keys, and fp16's under the base's fp32, are refused wherever written (AppliesWhen).
    | ("optimizer.nesterov" | "optimizer.momentum"), _ -> Some(refuse [ key; "is read by name = \"sgd\" only" ])
    | ("precision.initial_scale" | "precision.growth_interval"), _ -> Some(refuse [ key; "is read by mode = \"fp16\" only" ])
    // reinit draws again what init_from loads; the base loads nothing.
    | "model.reinit", (:? Array as a) when a.Length > 0 -> Some(refuse [ "model.reinit" ])
    | "checkpoint.best_metric", (:? string as s) when not (List.contains s [ ""; "val_loss"; "val_accuracy" ]) ->
        Some(refuse [ "checkpoint.best_metric"; "must be a validation metric" ])
    | "run.name", (:? string as s) when String.IsNullOrWhiteSpace s || s.Contains '/' || s.Contains '\000' || Encoding.UTF8.GetByteCount s > RunSection.MaxNameBytes
                                         || s.StartsWith "." || Seq.exists Char.IsControl s ->
        Some(refuse [ "run.name" ])
    | "checkpoint.every", _ when n () > baseSteps -> Some(refuse [ "checkpoint.every"; "longer than training" ])
    | "model.outputs", _ when n () > 0L && n () < baseClasses -> Some(refuse [ "model.outputs" ])
    | "data.classes", (:? Array as a) when a |> Seq.cast<obj> |> Seq.exists (fun c -> Convert.ToInt64 c >= baseClasses) ->
        Some(refuse [ "data.classes"; "does not have" ])
    | "data.synthetic_samples", _ when trainItems (n ()) baseFraction 0L <= 0L -> Some(refuse [ "data"; "no training items" ])
    | "data.train_limit", _ when trainItems baseSamples baseFraction (n ()) <= 0L -> Some(refuse [ "data"; "no training items" ])
    | "data.validation_fraction", (:? float as f) when trainItems baseSamples f 0L <= 0L -> Some(refuse [ "data"; "no training items" ])
    | "data.validation_fraction", (:? float as f) when f = 0.0 -> Some(refuse [ "data.validation_fraction"; "checkpoint.best_metric" ])
    // The base run is an MLP on vectors: another kind, text data or a text-only option is refused naming its key.
    | "model.kind", (:? string as s) when s <> "mlp" -> Some(refuse [ "model.kind" ])
    // Another source than the base's synthetic one is refused the synthetic keys the base writes.
    | "data.dataset", (:? string as s) when s <> "synthetic" -> Some(refuse [ "data.synthetic_samples"; "is a key of synthetic" ])
    // The study keys of the fine-tuning studies: the datasets benchmark needs its list, the list only that benchmark, and
    // per-task epochs one entry per task (the synthetic base splits into 2 tasks under split benchmarks); a train run
    // ignores them. Probes need classes the base's dataset has (synthetic, baseClasses).
    | "study.benchmark", (:? string as s) when s = "datasets" -> Some(refuse [ "study.datasets"; "needs at least 2" ])
    | "study.datasets", _ -> Some(refuse [ "study.datasets"; "is read by benchmark = \"datasets\" only" ])
    // The base benchmark is permuted: classes per task is read by the split benchmarks only, at its default too.
    | "study.classes_per_task", _ -> Some(refuse [ "study.classes_per_task"; "is read by benchmark = \"split-task\" or \"split-class\" only" ])
    | "study.epochs", (:? Array as a) when a.Length > 0 && (a |> Seq.cast<obj> |> Seq.forall (fun e -> Convert.ToInt64 e = 0L)) -> Some(refuse [ "study.epochs"; "trains no task" ])
    | "probes.linear_classes", (:? Array as a) when a.Length = 1 -> Some(refuse [ "probes.linear_classes"; "names one class" ])
    | "probes.linear_classes", (:? Array as a) when (a |> Seq.cast<obj> |> Seq.map Convert.ToInt64 |> Seq.distinct |> Seq.length) <> a.Length ->
        Some(refuse [ "probes.linear_classes"; "names a class twice" ])
    | "probes.linear_classes", (:? Array as a) when a |> Seq.cast<obj> |> Seq.exists (fun c -> Convert.ToInt64 c >= baseClasses) ->
        Some(refuse [ "probes.linear_classes"; "does not have" ])
    // The caption and text probes read a model that writes text; the base is an MLP on synthetic data.
    | "probes.captions", _ when n () > 0L -> Some(refuse [ "probes.captions"; "scores a vision-language model's captions" ])
    | "probes.text", (:? string as s) when s <> "" -> Some(refuse [ "probes.text"; "scores a language model's text" ])
    // Errors about other files name those files (the weights, the plugin folder), not the config.
    | "model.init_from", (:? string as s) when s <> "" -> Some(Refuse [ s; "no weights" ])
    | "plugins.dirs", (:? Array as a) when a |> Seq.cast<string> |> Seq.exists (fun d -> not (Directory.Exists d)) ->
        Some(Refuse [ a |> Seq.cast<string> |> Seq.find (fun d -> not (Directory.Exists d)); "does not exist" ])
    | _ -> None

/// The documented refusals only `research study` makes: the base study (permuted, 2 tasks) needs an epoch entry per task,
/// and trains something.
let private studyField (path: string) (key: string) (v: obj) : Expected option =
    match key, v with
    | "study.epochs", (:? Array as a) when a.Length > 0 && a.Length <> 2 -> Some(Refuse [ path; "study.epochs"; "entries for the study's 2 tasks" ])
    | "train.epochs", _ when Convert.ToInt64 v = 0L -> Some(Refuse [ path; "train.epochs"; "leaves every task of the study untrained" ])
    | _ -> None

/// Values the schema accepts for an option (typed: int64, float, bool, string, arrays of them).
let private validValue (dir: string) (key: string) (spec: OptionSpec) : Gen<obj> =
    let struct (lo, loEx, hi, hiEx) = spec.Bounds
    let rule = spec.Rule
    let ints () =
        let a, b = (if loEx then lo + 1.0 else lo), (if hiEx then hi - 1.0 else hi)
        let a, b = match cheap.TryFind key with Some(x, y) -> max a (float x), min b (float y) | None -> a, b
        intIn (int64 a) (int64 b) |> Gen.map box
    let strings () : Gen<obj> =
        if not (isNull rule) && rule.OneOf.Length > 0 then Gen.elements rule.OneOf |> Gen.map box
        elif not (isNull rule) && rule.Regex then Gen.elements validRegexes |> Gen.map box
        else
            match key with
            | "run.name" -> runNames |> Gen.map box
            | "data.dataset" -> Gen.elements (List.ofSeq Research.Core.Data.DataSources.Names) |> Gen.map box
            | "run.output_dir" -> Gen.elements [ Path.Combine(dir, "out", "x"); "relative/out"; ""; "."; Path.Combine(dir, "runs") ] |> Gen.map box
            | "model.init_from" -> Gen.elements [ ""; ""; Path.Combine(dir, "no-such-weights.safetensors") ] |> Gen.map box
            | "checkpoint.best_metric" -> Gen.elements [ ""; "val_loss"; "val_accuracy"; "test_accuracy"; "val_acc"; "VAL_LOSS" ] |> Gen.map box
            | "plugins.dirs" -> Gen.elements [ dir; Path.Combine(dir, "no-such-plugins") ] |> Gen.map box
            | _ -> freeText |> Gen.map box
    if spec.Type = typeof<bool> then Gen.elements [ box true; box false ]
    elif spec.Type = typeof<int64> && isNull rule then
        Gen.oneof [ Gen.elements [ Int64.MinValue; Int64.MaxValue; 0L; -1L ]; Gen.choose (-1000, 1000) |> Gen.map int64 ] |> Gen.map box
    elif spec.IsNumber && not spec.Type.IsArray then
        if spec.IsInteger then ints () else floatIn lo loEx hi hiEx |> Gen.map box
    elif spec.Type = typeof<string> then strings ()
    elif spec.Type.IsArray then
        let element = if spec.IsInteger then ints () else strings ()
        let typed (xs: obj list) : obj =
            if spec.IsInteger then box (xs |> List.map Convert.ToInt64 |> Array.ofList) else box (xs |> List.map string |> Array.ofList)
        Gen.choose (0, 3) |> Gen.bind (fun n -> Gen.sequenceToList (List.replicate n element)) |> Gen.map typed
    else failwithf "%s: no generator for %s" key spec.Type.Name

/// Values outside what the schema accepts for an option, as TOML text, each with what is wrong with it.
let private invalidLiterals (spec: OptionSpec) : (string * string) list =
    let struct (lo, loEx, hi, hiEx) = spec.Bounds
    let rule = spec.Rule
    let hasMin, hasMax = not (isNull rule) && not (Double.IsNaN rule.Min), not (isNull rule) && not (Double.IsNaN rule.Max)
    let oneOf = if spec.Scalar.IsEnum then List.ofSeq (OptionSchema.EnumNames spec.Scalar) elif isNull rule then [] else List.ofArray rule.OneOf
    [ if spec.Type = typeof<bool> then
          yield! [ "\"true\"", "a string for a boolean"; "1", "an integer for a boolean"; "[true]", "an array for a boolean"
                   "{ v = true }", "a table for a boolean" ]
      elif spec.IsNumber && not spec.Type.IsArray then
          yield! [ "\"1\"", "a string for a number"; "true", "a boolean for a number"; "[1]", "an array for a number"
                   "{ v = 1 }", "a table for a number" ]
          if spec.IsInteger then
              yield! [ "1.5", "a float for an integer"; "2.0", "a float for an integer"; "nan", "nan for an integer"; "-inf", "-inf for an integer" ]
              if spec.Scalar = typeof<int> then yield! [ "2147483648", "past an int"; "-2147483649", "below an int" ]
              if hasMin then yield string (int64 (if loEx then lo else lo - 1.0)), "below the minimum"
              if hasMax then yield string (int64 (if hiEx then hi else hi + 1.0)), "above the maximum"
          else
              yield! [ "nan", "nan"; "+inf", "+inf"; "-inf", "-inf"; "-nan", "-nan" ]
              if hasMin then
                  yield tomlFloat (if loEx then lo else Math.BitDecrement lo), "just outside the minimum"
                  yield tomlFloat (lo - 1.0 - abs lo), "below the minimum"
              if hasMax then
                  yield tomlFloat (if hiEx then hi else Math.BitIncrement hi), "just outside the maximum"
                  yield tomlFloat (hi * 2.0 + 1.0), "above the maximum"
      elif spec.Type = typeof<string> || spec.Type.IsEnum then
          yield! [ "1", "an integer for a string"; "true", "a boolean for a string"; "[\"a\"]", "an array for a string"
                   "{ v = \"a\" }", "a table for a string"; "1.5", "a float for a string" ]
          if not oneOf.IsEmpty then
              yield! [ "\"\"", "not one of the values"; toml (oneOf.Head.ToUpperInvariant() + "X"), "not one of the values"
                       toml (oneOf.Head + " "), "not one of the values (a trailing space)"; "\"nope\"", "not one of the values" ]
          if not (isNull rule) && rule.Regex then yield! invalidRegexes |> List.map (fun r -> toml r, "not a regular expression")
          if not (isNull rule) && rule.MaxLength > 0 then
              yield toml (String('n', rule.MaxLength + 1)), "one character too long"
              yield toml (String('名', rule.MaxLength + 37)), "too long"
      elif spec.Type.IsArray && not spec.IsTable then
          yield! [ "{ v = 1 }", "a table for an array" ]
          if spec.IsInteger then
              yield! [ "8", "a scalar for an array"; "[\"8\"]", "a string element"; "[8.5]", "a float element"; "[true]", "a boolean element"
                       "[[8]]", "an array element" ]
              if hasMin then yield sprintf "[%d]" (int64 lo - 1L), "an element below the minimum"
              if hasMax then yield sprintf "[8, %d]" (int64 hi + 1L), "an element above the maximum"
              if spec.Scalar = typeof<int> then yield "[2147483648]", "an element past an int"
          else
              yield! [ "\"a\"", "a scalar for an array"; "[1]", "an integer element"; "[true]", "a boolean element"; "[[\"a\"]]", "an array element" ]
              if not (isNull rule) && rule.Regex then yield! [ "[\"(\"]", "an element that is not a regular expression"; "[\"^ok\", \"[a-\"]", "a second element that is not a regular expression" ]
      else () ]

// ---------------------------------------------------------------------------------------------------------------------
// Config cases.

type private Case =
    { Label: string
      Command: string
      Text: string
      Sets: string list
      Expected: Expected }

/// The config cases for a working folder (whose config file is DIR/run.toml): seeded, the same in every run.
let private configCases (dir: string) (host: PluginHost) : Case list =
    let path = Path.Combine(dir, "run.toml")
    let doc = baseDoc dir
    let text = renderDoc doc
    let refuse names = Refuse(path :: names)
    let cases = ResizeArray<Case>()
    let add label command text sets expected = cases.Add { Label = label; Command = command; Text = text; Sets = sets; Expected = expected }
    // Each option of each core section and of the base's model kind (an MLP): values inside the schema (some refused by a
    // documented rule), values outside it.
    for section, sectionType in Seq.append ConfigLoader.SectionTypes [ struct ("model", typeof<MlpOptions>) ] do
        for spec in OptionSchema.Of sectionType |> Seq.filter (fun s -> not s.IsTable) do
            let key = sprintf "%s.%s" section spec.Key
            let gen = validValue dir key spec
            // Four draws per key (two in the file, two as overrides, one of each through `study`): the suite's
            // sequenced tail is this test, so each key gets fewer draws than 2.x's six, and still 1,000+ cases in all.
            for i in 0 .. 3 do
                let v = draw (seedOf key + uint64 i) gen
                let command = if i % 2 = 1 then "study" else "train"
                let expected =
                    crossField path key v
                    |> Option.orElse (if command = "study" then studyField path key v else None)
                    |> Option.defaultValue Accept
                let literal = render v
                let label = sprintf "%s = %s (%s)" key literal (if expected = Accept then "in the schema" else "in the schema; a documented rule refuses it")
                if i < 2 then add label command (renderDoc (setKey (headerOf section) spec.Key literal doc)) [] expected
                else add ("--set " + label) command text [ sprintf "%s=%s" key literal ] expected
            // Each value outside the schema once, in the file or as an override by turns (the key decides which comes first).
            for j, (literal, why) in List.indexed (invalidLiterals spec) do
                let label = sprintf "%s = %s (%s)" key literal why
                let command = if j % 6 = 5 then "study" else "train"
                if (j + int (seedOf key % 2UL)) % 2 = 0 then add label command (renderDoc (setKey (headerOf section) spec.Key literal doc)) [] (refuse [ key ])
                else add ("--set " + label) command text [ sprintf "%s=%s" key literal ] (refuse [ key ])
        // The kind's options share the [model] table: its structure is checked once, with the section.
        if sectionType <> typeof<MlpOptions> then
            // Structure: an unknown key, a key in the wrong case, a key defined twice, the table written twice.
            let some = OptionSchema.Of sectionType |> Seq.find (fun s -> not s.IsTable)
            let value = render (draw (seedOf section) (validValue dir (section + "." + some.Key) some))
            add (sprintf "[%s] %sx = 1 (an unknown key)" section some.Key) "train" (renderDoc (setKey (headerOf section) (some.Key + "x") "1" doc)) [] (refuse [ sprintf "%s.%sx" section some.Key; "unknown key" ])
            add (sprintf "--set %s.%sx=1 (an unknown key)" section some.Key) "train" text [ sprintf "%s.%sx=1" section some.Key ] (refuse [ sprintf "%s.%sx" section some.Key ])
            let upper = some.Key.Substring(0, 1).ToUpperInvariant() + some.Key.Substring 1
            add (sprintf "[%s] %s (a key in the wrong case)" section upper) "train" (renderDoc (setKey (headerOf section) upper value doc)) [] (refuse [ sprintf "%s.%s" section upper ])
            let withValue = renderDoc (setKey (headerOf section) some.Key value doc)
            let twice = withValue.Replace(sprintf "%s = %s\n" some.Key value, sprintf "%s = %s\n%s = %s\n" some.Key value some.Key value)
            add (sprintf "[%s] %s written twice" section some.Key) "train" twice [] (refuse [ sprintf "%s.%s" section some.Key; "defined twice" ])
            match OptionSchema.Of sectionType |> Seq.filter (fun s -> not s.IsTable && s.Key <> some.Key) |> Seq.tryHead with
            | Some o ->
                let without = doc |> List.map (fun (h, ks) -> h, (if h = headerOf section then ks |> List.filter (fun (k, _) -> k <> o.Key) else ks))
                let second = render (draw (seedOf (section + o.Key)) (validValue dir (section + "." + o.Key) o))
                let body = renderDoc (setKey (headerOf section) some.Key value without) + sprintf "%s\n%s = %s\n" (headerOf section) o.Key second
                add (sprintf "[%s] written twice" section) "train" body [] (refuse [ section; "defined twice" ])
            | None -> ()
            // The section as a value, or as an array of tables.
            add (sprintf "--set %s=3 (a section as a value)" section) "train" text [ sprintf "%s=3" section ] (refuse [ section; "must be a table" ])
    // Each built-in data source's keys of [data]. Synthetic's sit in the synthetic base; another source's values inside
    // its schema are refused there as keys of another source, and values outside it are refused by the source's own
    // binding in a config of that source.
    for source in Research.Core.Data.DataSources.BuiltIn do
        let own =
            if source.Name = "synthetic" then doc
            else doc |> List.map (fun (h, ks) ->
                h, (if h = "[data]" then ("dataset", toml source.Name) :: (ks |> List.filter (fun (k, _) -> k <> "dataset" && not (k.StartsWith "synthetic_"))) else ks))
        for spec in OptionSchema.Of source.OptionsType do
            let key = sprintf "data.%s" spec.Key
            let gen = validValue dir key spec
            for i in 0 .. 3 do
                let v = draw (seedOf key + uint64 i) gen
                let command = if i % 2 = 1 then "study" else "train"
                let expected =
                    if source.Name <> "synthetic" then refuse [ key; "is a key of" ]
                    else
                        crossField path key v
                        |> Option.orElse (if command = "study" then studyField path key v else None)
                        |> Option.defaultValue Accept
                let literal = render v
                let label = sprintf "%s = %s (%s)" key literal (if expected = Accept then "in the schema" else "in the schema; a documented rule refuses it")
                if i < 2 then add label command (renderDoc (setKey "[data]" spec.Key literal doc)) [] expected
                else add ("--set " + label) command text [ sprintf "%s=%s" key literal ] expected
            for j, (literal, why) in List.indexed (invalidLiterals spec) do
                let label = sprintf "%s = %s (%s, data.dataset = \"%s\")" key literal why source.Name
                let command = if j % 6 = 5 then "study" else "train"
                if (j + int (seedOf key % 2UL)) % 2 = 0 then add label command (renderDoc (setKey "[data]" spec.Key literal own)) [] (refuse [ key ])
                else add ("--set " + label) command (renderDoc own) [ sprintf "%s=%s" key literal ] (refuse [ key ])
    // The keys of the other model kinds, on the base's MLP: refused naming the key and the kinds that have it.
    let otherKinds = ModelKinds.BuiltIn |> Seq.filter (fun k -> k.Name <> "mlp")
    // A composed kind's sub-tables (vlm's [model.resnet], [model.gpt], [model.llama]) hold the component kinds' keys,
    // which this loop already refuses on an mlp as those kinds' own.
    for spec in otherKinds |> Seq.collect (fun k -> OptionSchema.Of k.OptionsType) |> Seq.filter (fun s -> not s.IsTable) |> Seq.distinctBy (fun s -> s.Key) do
        let key = "model." + spec.Key
        let literal = render (draw (seedOf key) (validValue dir key spec))
        let owner = otherKinds |> Seq.find (fun k -> OptionSchema.Of k.OptionsType |> Seq.exists (fun o -> o.Key = spec.Key))
        let expected = refuse [ key; "is a key of kind"; owner.Name; ", not of mlp" ]
        add (sprintf "%s = %s (a key of kind %s on an mlp)" key literal owner.Name) "train" (renderDoc (setKey "[model]" spec.Key literal doc)) [] expected
        add (sprintf "--set %s = %s (a key of kind %s on an mlp)" key literal owner.Name) "train" text [ sprintf "%s=%s" key literal ] expected
    // The components of [optimizer]: an array of tables.
    let withComponent (body: string) = text + "[[optimizer.components]]\n" + body
    for label, body, expected in
        [ "a component with its own lr scale", "name = \"head\"\nmatch = \"^head\\\\.\"\nlr_scale = 0.5\n", Accept
          "a frozen component", "name = \"body\"\nmatch = \"^layers\\\\.\"\nfrozen = true\n", Accept
          "a component with its own lr", "name = \"head\"\nmatch = \"head\"\nlr = 0.1\n", Accept
          "a component whose match is not a regular expression", "name = \"x\"\nmatch = \"(\"\n", refuse [ "optimizer.components[0].match" ]
          "a component with a negative lr", "name = \"x\"\nmatch = \"head\"\nlr = -1.0\n", refuse [ "optimizer.components[0].lr" ]
          "a component with lr_scale nan", "name = \"x\"\nmatch = \"head\"\nlr_scale = nan\n", refuse [ "optimizer.components[0].lr_scale" ]
          "a component with frozen = \"yes\"", "name = \"x\"\nmatch = \"head\"\nfrozen = \"yes\"\n", refuse [ "optimizer.components[0].frozen" ]
          "a component with an unknown key", "name = \"x\"\nmatches = \"head\"\nmatch = \"head\"\n", refuse [ "optimizer.components[0].matches" ]
          "a component without a name (documented)", "match = \"head\"\n", refuse [ "optimizer.components[0].name" ]
          "a component without a match (documented)", "name = \"x\"\n", refuse [ "optimizer.components[0].match" ]
          "a component matching no parameter (documented)", "name = \"x\"\nmatch = \"^nothing\"\n", refuse [ "optimizer"; "matches no parameter" ]
          "every parameter frozen (documented)", "name = \"all\"\nmatch = \".*\"\nfrozen = true\n", refuse [ "optimizer.components"; "nothing to train" ] ] do
        add ("[[optimizer.components]]: " + label) "train" (withComponent body) [] expected
    add "layer_decay 0.5 with a layer_pattern without a group (documented)" "train" (renderDoc (doc |> setKey "[optimizer]" "layer_decay" "0.5" |> setKey "[optimizer]" "layer_pattern" "\"layers\"")) [] (refuse [ "optimizer"; "layer decay" ])
    add "layer_decay 0.5 with a layer_pattern whose group captures letters (documented)" "train" (renderDoc (doc |> setKey "[optimizer]" "layer_decay" "0.5" |> setKey "[optimizer]" "layer_pattern" "\"(l)ayers\"")) [] (refuse [ "optimizer"; "layer decay" ])
    add "layer_decay 0.5 with the default pattern" "train" (renderDoc (doc |> setKey "[optimizer]" "layer_decay" "0.5")) [] Accept
    add "a split study of 2 synthetic classes: one task (documented)" "study" (renderDoc (doc |> setKey "[study]" "benchmark" "\"split-class\"" |> setKey "[data]" "synthetic_classes" "2")) [] (refuse [ "study.benchmark"; "at least 2 tasks" ])
    add "a split study of 4 synthetic classes: two tasks" "study" (renderDoc (doc |> setKey "[study]" "benchmark" "\"split-task\"")) [] Accept
    add "a warmup longer than training (documented)" "train" (renderDoc (doc |> setKey "[schedule]" "name" "\"linear\"" |> setKey "[schedule]" "warmup_steps" "13")) [] (refuse [ "schedule.warmup_steps"; "longer than training" ])
    add "a warmup as long as training" "train" (renderDoc (doc |> setKey "[schedule]" "name" "\"linear\"" |> setKey "[schedule]" "warmup_steps" "12")) [] Accept
    // Plugins' options: the built-in schedules and methods ([[metrics]] are a study's only).
    for d in host.Plugins |> Seq.filter (fun d -> not (isNull d.OptionsType)) do
        let header, prefix, command =
            match d.Role with
            | PluginRole.Schedule -> "[schedule]", "schedule", "train"
            | PluginRole.Method -> "[[methods]]", "methods[0]", "train"
            | _ -> "[[metrics]]", "metrics[0]", "study"
        let withName = doc |> setKey header "name" (toml d.Name)
        let named = renderDoc withName
        let setPrefix = prefix.Replace("[0]", ".0")
        // A plugin whose defaults do not validate alone (step: step_size or milestones) has no valid value of one option.
        let defaultsValid =
            try PluginHost.Instantiate(d, Tomlyn.Model.TomlTable(), "x", prefix) |> ignore; true
            with _ -> false
        for spec in OptionSchema.Of d.OptionsType do
            let key = sprintf "%s.%s" prefix spec.Key
            if defaultsValid then
                let values =
                    if spec.Scalar.IsEnum then OptionSchema.EnumNames spec.Scalar |> Seq.map toml |> List.ofSeq
                    elif isNull spec.Default then []
                    else [ render spec.Default ]
                for v in values do
                    add (sprintf "%s '%s': %s = %s (in the schema)" (PluginHost.RoleName d.Role) d.Name spec.Key v) command (renderDoc (setKey header spec.Key v withName)) [] Accept
            for j, (literal, why) in List.indexed (invalidLiterals spec) do
                let label = sprintf "%s '%s': %s = %s (%s)" (PluginHost.RoleName d.Role) d.Name spec.Key literal why
                if j % 2 = 0 then add label command (renderDoc (setKey header spec.Key literal withName)) [] (refuse [ key ])
                else add ("--set " + label) command named [ sprintf "%s.%s=%s" setPrefix spec.Key literal ] (refuse [ key ])
        add (sprintf "%s '%s': an unknown option" (PluginHost.RoleName d.Role) d.Name) command (renderDoc (setKey header "no_such_option" "1" withName)) [] (refuse [ prefix + ".no_such_option"; "unknown key" ])
    for header, prefix, command in [ "[schedule]", "schedule", "train"; "[[methods]]", "methods[0]", "train"; "[[metrics]]", "metrics[0]", "study" ] do
        add (sprintf "%s name = \"nope\" (no such plugin)" header) command (renderDoc (setKey header "name" "\"nope\"" doc)) [] (refuse [ prefix + ".name"; "nope" ])
        add (sprintf "%s name = 3" header) command (renderDoc (setKey header "name" "3" doc)) [] (refuse [ prefix + ".name" ])
    // Tables at the top level that are not sections, and text that is not TOML.
    for label, extra, names in
        [ "an unknown section [optimiser]", "[optimiser]\nlr = 0.1\n", [ "optimiser"; "unknown section" ]
          "a section in the wrong case [Run]", "[Run]\nname = \"x\"\n", [ "Run"; "unknown section" ]
          "a key at the top level", "", [ "seed"; "unknown section" ]
          "a sub-table of a section", "[data.extra]\nx = 1\n", [ "data.extra"; "unknown key" ]
          "a section as an array of tables", "[[precision]]\nmode = \"fp32\"\n", [ "precision"; "must be a table" ]
          "[[methods]] and [[regularizers]] both", "[[methods]]\nname = \"l2\"\n[[regularizers]]\nname = \"l2\"\n", [ "regularizers" ]
          "methods as a value", "", [ "methods" ] ] do
        let body = match label with
                   | "a key at the top level" -> "seed = 3\n" + text
                   | "methods as a value" -> "methods = 3\n" + text
                   | _ -> text + extra
        add label "train" body [] (refuse names)
    // Syntax: lines that cannot be TOML, at seeded places.
    let garbage = Gen.zip (Gen.elements [ "="; "["; "\""; "]"; "{"; "@"; "!"; "'"; "lr = = "; "x = \"open"; "[data"; "k = 1e"; "\u0001" ]) (textOf "abc =[]{}\"'#.,0129é" 0 12)
    let docLines = text.Split('\n')
    for i in 0 .. 29 do
        let start, tail = draw (seedOf "garbage" + uint64 i) garbage
        let at = draw (seedOf "garbage-at" + uint64 i) (Gen.choose (0, docLines.Length - 1))
        let body = String.Join("\n", Array.insertAt at (start + tail) docLines)
        // Whatever the garbage reads as (a syntax error, an unknown table or key), it is refused naming the file.
        add (sprintf "garbage %s inserted at line %d" (toml (start + tail)) (at + 1)) (if i % 5 = 4 then "study" else "train") body [] (refuse [])
    // Overrides that are not `section.key=value`.
    for sets, names, label in
        [ [ "optimizer.lr" ], [ "optimizer.lr"; "section.key=value" ], "--set without '='"
          [ "=0.1" ], [ "=0.1" ], "--set with no key"
          [ "run.name.x=1" ], [ "run.name.x"; "not a table" ], "--set through a value"
          [ "optimiser.lr=0.1" ], [ "optimiser"; "unknown section" ], "--set of an unknown section"
          [ "optimizer.lr=" ], [ "optimizer.lr" ], "--set with an empty value"
          [ "optimizer.lr=fast" ], [ "optimizer.lr"; "\"fast\"" ], "--set with a bare word for a number"
          [ "methods.0.lambda=1.0" ], [ "methods"; "array of tables" ], "--set into [[methods]] that the config lacks"
          [ "metrics=3" ], [ "metrics" ], "--set of metrics as a value"
          [ "schedule.name=nope" ], [ "schedule.name"; "nope" ], "--set of a schedule that does not exist"
          [ "optimizer.lr=0.5"; "optimizer.lr=nan" ], [ "optimizer.lr"; "not a finite number" ], "two --set of one key, the last invalid" ] do
        add label "train" text sets (refuse names)
    for sets, label in
        [ [ " optimizer.lr = 0.5 " ], "--set with spaces around"
          [ "optimizer.lr=nan"; "optimizer.lr=0.5" ], "two --set of one key, the last valid"
          [ "run.name=probe" ], "--set with a bare word for a string"
          [ "methods=[{ name = \"l2\" }]"; "methods.0.lambda=0.5" ], "--set of [[methods]] as inline tables, then of one of its keys" ] do
        add label "train" text sets Accept
    List.ofSeq cases

/// The paths under a folder, for "nothing was created" (the config file itself is rewritten by each case).
let private listing (dir: string) =
    Directory.GetFileSystemEntries(dir, "*", SearchOption.AllDirectories) |> Array.sort

let private runConfigCase (t: Tally) (dir: string) (c: Case) =
    let path = Path.Combine(dir, "run.toml")
    File.WriteAllText(path, c.Text)
    let before = listing dir
    let args = [ c.Command; path; "--dry-run"; for s in c.Sets do yield! [ "--set"; s ] ]
    let r = cli args
    let label = sprintf "%s [research %s]" c.Label (String.Join(" ", args |> List.map (fun a -> if a.Contains ' ' || a = "" then sprintf "'%s'" a else a)))
    if judge t label c.Expected r then
        let after = listing dir
        if after <> before then unchanged t label r before after

// ---------------------------------------------------------------------------------------------------------------------
// The store of a run.

let private query (runDir: string) (sql: string) : obj[] list =
    let path = Path.Combine(runDir, "run.sqlite")
    use db = new SqliteConnection(SqliteConnectionStringBuilder(DataSource = path, Mode = SqliteOpenMode.ReadOnly, Pooling = false).ToString())
    db.Open()
    use cmd = db.CreateCommand()
    cmd.CommandText <- sql
    use reader = cmd.ExecuteReader()
    [ while reader.Read() do
          yield Array.init reader.FieldCount (fun i -> if reader.IsDBNull i then null else reader.GetValue i) ]

let private scalar runDir sql = (query runDir sql |> List.exactlyOne)[0]

/// What is wrong with a finished run's store: not one finished run; rows duplicated by what identifies them; rows of no run.
let private storeProblems (runDir: string) : string list =
    [ let runs = query runDir "SELECT id, status FROM runs"
      if runs.Length <> 1 then sprintf "%d rows in runs" runs.Length
      elif string (runs[0][1]) <> "finished" then sprintf "the run is %O, not finished" (runs[0][1])
      for table, identity in
          [ "metrics", "run_id, step, key"; "evaluations", "run_id, step, epoch, phase, split"
            "study_matrix", "run_id, after_task, on_task, split"; "study_values", "run_id, kind, name"; "artifacts", "run_id, kind, path" ] do
          let dups = Convert.ToInt64(scalar runDir (sprintf "SELECT COUNT(*) FROM (SELECT 1 FROM %s GROUP BY %s HAVING COUNT(*) > 1)" table identity))
          if dups > 0L then sprintf "%d duplicated %s rows (by %s)" dups table identity
          let orphans = Convert.ToInt64(scalar runDir (sprintf "SELECT COUNT(*) FROM %s WHERE run_id NOT IN (SELECT id FROM runs)" table))
          if orphans > 0L then sprintf "%d %s rows of no run" orphans table ]

/// Rows per metric key and per evaluation split: a resumed run must end with what an uninterrupted one has.
let private rowCounts (runDir: string) =
    query runDir "SELECT 'metric ' || key, COUNT(*) FROM metrics GROUP BY key UNION ALL SELECT 'evaluation ' || split, COUNT(*) FROM evaluations GROUP BY split ORDER BY 1"
    |> List.map (fun r -> string (r[0]), Convert.ToInt64(r[1]))

// ---------------------------------------------------------------------------------------------------------------------
// Damage to files.

/// Replaces a file by something that is not a regular file with content: kinds "empty", "delete", "dir", "zero" (a link
/// to /dev/zero), "null" (a link to /dev/null), "fifo", "dangling" (a link to nothing).
let private replaceFile (kind: string) (path: string) =
    if File.Exists path || Directory.Exists path then (if Directory.Exists path then Directory.Delete(path, true) else File.Delete path)
    match kind with
    | "empty" -> File.WriteAllBytes(path, [||])
    | "delete" -> ()
    | "dir" -> Directory.CreateDirectory path |> ignore
    | "zero" -> File.CreateSymbolicLink(path, "/dev/zero") |> ignore
    | "null" -> File.CreateSymbolicLink(path, "/dev/null") |> ignore
    | "fifo" ->
        let r = runProcess (Path.GetDirectoryName path) "mkfifo" [ path ]
        if r.ExitCode <> 0 then failwithf "mkfifo %s: %s" path r.Err
    | "dangling" -> File.CreateSymbolicLink(path, path + ".nowhere") |> ignore
    | other -> failwithf "no damage %s" other

let private specialKinds = [ "empty"; "delete"; "dir"; "zero"; "null"; "fifo"; "dangling" ]

/// Cuts a file at a seeded offset in [0, length).
let private truncate (seed: uint64) (path: string) =
    let bytes = File.ReadAllBytes path
    let at = draw seed (Gen.choose (0, bytes.Length - 1))
    File.WriteAllBytes(path, bytes[.. at - 1])
    sprintf "cut at byte %d of %d" at bytes.Length

/// Changes 1–4 seeded bytes (each XORed with a non-zero value) in [from, until).
let private flip (seed: uint64) (from: int) (until: int) (path: string) =
    let bytes = File.ReadAllBytes path
    let until = min until bytes.Length
    let changes = draw seed (Gen.choose (1, 4) |> Gen.bind (fun n -> Gen.sequenceToList (List.replicate n (Gen.zip (Gen.choose (from, until - 1)) (Gen.choose (1, 255))))))
    for at, x in changes do bytes[at] <- bytes[at] ^^^ byte x
    File.WriteAllBytes(path, bytes)
    sprintf "bytes %s changed" (String.Join(", ", changes |> List.map fst |> List.distinct))

/// A safetensors file's header length and header text.
let private header (bytes: byte[]) =
    let n = int (BitConverter.ToUInt64(bytes, 0))
    n, Encoding.UTF8.GetString(bytes, 8, n)

/// The same file with another header (its length written in front of it).
let private withHeader (bytes: byte[]) (text: string) =
    let n, _ = header bytes
    let h = Encoding.UTF8.GetBytes text
    Array.concat [ BitConverter.GetBytes(uint64 h.Length); h; bytes[8 + n ..] ]

let private copyDir (from: string) (dest: string) =
    for d in Directory.GetDirectories(from, "*", SearchOption.AllDirectories) do
        Directory.CreateDirectory(d.Replace(from, dest)) |> ignore
    Directory.CreateDirectory dest |> ignore
    for f in Directory.GetFiles(from, "*", SearchOption.AllDirectories) do
        if not (lockFiles.Contains(Path.GetFileName f)) then File.Copy(f, f.Replace(from, dest))

let private sha256 (path: string) = Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes path))

/// Rewrites state.json with `edit` and signs it again in the manifest: the checkpoint verifies, its content is wrong.
let private resign (checkpoint: string) (edit: string -> string) =
    let state = Path.Combine(checkpoint, "state.json")
    File.WriteAllText(state, edit (File.ReadAllText state))
    let manifest = Path.Combine(checkpoint, "manifest.json")
    File.WriteAllText(manifest, RegularExpressions.Regex.Replace(File.ReadAllText manifest, "(\"state.json\": \")[0-9a-f]+", "${1}" + sha256 state))

let private replaceField (field: string) (value: string) (json: string) =
    let state = Text.Json.Nodes.JsonNode.Parse(json).AsObject()
    state[field] <- Text.Json.Nodes.JsonNode.Parse value
    state.ToJsonString()

// ---------------------------------------------------------------------------------------------------------------------
// Totals across the suite's tests (printed by the last).

type private Totals() =
    member val Configs = 0 with get, set
    member val ValidConfigs = 0 with get, set
    member val InvalidConfigs = 0 with get, set
    member val Processes = 0 with get, set
    member val Checkpoints = 0 with get, set
    member val DataFolders = 0 with get, set
    member val Crashes = 0 with get, set
    member val Silent = 0 with get, set
    member this.Add(t: Tally) =
        this.Crashes <- this.Crashes + t.Crashes
        this.Silent <- this.Silent + t.Silent

let private clock = Stopwatch()
let private totals = Totals()

let private configTest () =
    clock.Start()
    let watch = Stopwatch.StartNew()
    let dir = tempDir "fuzz-config"
    fashionFolder (Path.Combine(dir, "fashion")) 3 2
    let threads = TorchSharp.torch.get_num_threads ()
    let t = Tally()
    let cases = configCases dir (PluginHost.Load([]))
    try
        for c in cases do runConfigCase t dir c
    finally
        TorchSharp.torch.set_num_threads threads
    let overrides = cases |> List.filter (fun c -> not c.Sets.IsEmpty) |> List.length
    let studies = cases |> List.filter (fun c -> c.Command = "study") |> List.length
    totals.Configs <- totals.Configs + t.Cases
    totals.ValidConfigs <- totals.ValidConfigs + t.Valid
    totals.InvalidConfigs <- totals.InvalidConfigs + t.Invalid
    totals.Add t
    finish t (sprintf "%d configs in-process (%d valid, %d invalid; %d through --set, %d through study)" t.Cases t.Valid t.Invalid overrides studies) watch.Elapsed
    Expect.isGreaterThanOrEqual t.Cases 1000 "at least 1,000 configs and overrides"


// ---------------------------------------------------------------------------------------------------------------------
// Real processes: refused configs, dry-runs, tiny runs and studies, runs killed and resumed.

/// A tiny real run or study in the schema, chosen so it cannot fail for a documented reason (no divergence, no fp16
/// overflow, a warmup and a checkpoint interval inside the run): 192 training items, at most 24 optimizer steps a task.
let private realRun (seed: uint64) (study: bool) (doc: Doc) : Doc =
    let pick i (xs: 'a list) = draw (seed + uint64 i) (Gen.elements xs)
    let optimizer = pick 1 [ [ "name", "\"adamw\"" ]; [ "name", "\"adam\"" ]; [ "name", "\"sgd\""; "momentum", "0.9" ]
                             [ "name", "\"sgd\""; "momentum", "0.5"; "nesterov", "true" ]; [ "name", "\"sgd\"" ] ]
    let schedule = pick 2 [ "constant"; "cosine"; "linear"; "polynomial"; "warmup-stable-decay"; "reduce-on-plateau"; "step"; "one-cycle" ]
    let methods =
        if study then pick 3 [ []; [ "name", "\"ewc\""; "lambda", "10.0" ]; [ "name", "\"l2-sp\"" ]; [ "name", "\"si\"" ]; [ "name", "\"mas\"" ]
                               [ "name", "\"lwf\"" ]; [ "name", "\"replay\""; "budget", "40" ]; [ "name", "\"a-gem\""; "budget", "40"; "reference_items", "16" ] ]
        else pick 3 [ []; []; [ "name", "\"l2\"" ]; [ "name", "\"ewc\"" ] ]
    let settings =
        [ yield! optimizer |> List.map (fun (k, v) -> "[optimizer]", k, v)
          "[optimizer]", "lr", pick 4 [ "0.001"; "0.01"; "0.05" ]
          "[optimizer]", "clip_norm", pick 5 [ "0.0"; "1.0" ]
          "[optimizer]", "weight_decay", pick 6 [ "0.0"; "0.01" ]
          "[precision]", "mode", pick 7 [ "\"fp32\""; "\"fp32\""; "\"bf16\"" ]
          "[data]", "batch_size", pick 8 [ "16"; "32"; "50" ]
          "[train]", "epochs", pick 9 [ "1"; "2" ]
          "[train]", "grad_accum", pick 10 [ "1"; "2" ]
          "[train]", "eval_every", pick 11 [ "0"; "2"; "3" ]
          "[train]", "log_every", pick 12 [ "1"; "3" ]
          "[train]", "early_stopping_patience", pick 13 [ "0"; "0"; "1" ]
          "[checkpoint]", "every", pick 14 [ "0"; "1"; "2" ]
          "[checkpoint]", "keep_last", pick 15 [ "1"; "2" ]
          "[checkpoint]", "at_epoch_end", pick 16 [ "true"; "false" ]
          yield! pick 17 [ [ "[checkpoint]", "best_metric", "\"\"" ]; [ "[checkpoint]", "best_metric", "\"val_loss\"" ]
                           [ "[checkpoint]", "best_metric", "\"val_accuracy\""; "[checkpoint]", "best_mode", "\"max\"" ] ]
          "[schedule]", "name", toml schedule
          if schedule = "step" then "[schedule]", "step_size", "2"
          if schedule <> "one-cycle" then "[schedule]", "warmup_steps", pick 18 [ "0"; "1" ]
          "[run]", "threads", "1"
          yield! methods |> List.map (fun (k, v) -> "[[methods]]", k, v)
          if study then
              yield! pick 19 [ [ "[study]", "benchmark", "\"permuted\""; "[study]", "tasks", "2" ]; [ "[study]", "benchmark", "\"permuted\""; "[study]", "tasks", "3" ]
                               [ "[study]", "benchmark", "\"split-task\"" ]; [ "[study]", "benchmark", "\"split-class\"" ] ]
              "[study]", "joint", pick 20 [ "false"; "false"; "true" ]
              "[study]", "reset_optimizer", pick 21 [ "true"; "false" ] ]
    settings |> List.fold (fun d (h, k, v) -> setKey h k v d) doc

/// The single run folder under DIR/runs.
let private theRun (dir: string) =
    match Directory.GetDirectories(Path.Combine(dir, "runs")) with
    | [| d |] -> Some d
    | _ -> None

let private processTest () =
    let watch = Stopwatch.StartNew()
    let t = Tally()
    // Refused configs and dry-runs: seeded picks among the in-process cases, each in a folder of its own.
    let probe = tempDir "fuzz-process-probe"
    let host = PluginHost.Load([])
    let all = configCases probe host |> Array.ofList
    let indices expected n salt =
        let pool = all |> Array.indexed |> Array.filter (fun (_, c) -> expected c.Expected) |> Array.map fst
        draw (seedOf salt) (Gen.shuffle pool) |> Array.truncate n |> List.ofArray
    let refused = indices (function Refuse _ -> true | _ -> false) 16 "process-refused"
    let dryRuns = indices (function Accept -> true | _ -> false) 6 "process-dry-run"
    let configJob (i: int) (dryRun: bool) () =
        let dir = tempDir "fuzz-process"
        fashionFolder (Path.Combine(dir, "fashion")) 3 2
        let c = (configCases dir host)[i]
        let path = Path.Combine(dir, "run.toml")
        File.WriteAllText(path, c.Text)
        let before = listing dir
        // A refused config goes through the real command (no --dry-run): it must stop before anything is created.
        let args = [ c.Command; path ] @ (if dryRun then [ "--dry-run" ] else []) @ [ for s in c.Sets do yield! [ "--set"; s ] ]
        let r = researchWithin 120.0 [] dir args
        let after = listing dir
        sprintf "process: %s [research %s]" c.Label (String.Join(" ", args)), c.Expected, r, before, after
    let configResults = twoAtATime [ for i in refused -> configJob i false
                                     for i in dryRuns -> configJob i true ]
    for label, expected, r, before, after in configResults do
        t.Processes <- t.Processes + 1
        if judge t label expected r && before <> after then unchanged t label r before after
    // Tiny real runs and studies: exit 0, a finished run, no duplicated rows.
    let runJob (k: int) (study: bool) () =
        let dir = tempDir (if study then "fuzz-study" else "fuzz-run")
        let doc = realRun (seedOf (sprintf "real-%d-%b" k study)) study (baseDoc dir)
        let path = Path.Combine(dir, "run.toml")
        File.WriteAllText(path, renderDoc doc)
        let command = if study then "study" else "train"
        let r = researchWithin 180.0 [] dir [ command; path ]
        let problems = if r.ExitCode = 0 then (match theRun dir with Some run -> storeProblems run | None -> [ "no single run folder" ]) else []
        sprintf "%s %d: research %s %s\n%s" command k command path (renderDoc doc), r, problems
    let runResults = twoAtATime [ for k in 0 .. 19 -> runJob k false
                                  for k in 0 .. 7 -> runJob k true ]
    for label, r, problems in runResults do
        t.Processes <- t.Processes + 1
        if judge t label Accept r then
            for p in problems do t.Problem ("store: " + p) label r
    // Killed after some micro-batches, then resumed: the store ends as an uninterrupted run's, without duplicates.
    let killJob (k: int) () =
        let study = k % 2 = 1
        let make prefix =
            let dir = tempDir prefix
            let doc =
                baseDoc dir
                |> setKey "[run]" "threads" "1"
                |> setKey "[checkpoint]" "every" "2"
                |> setKey "[train]" "log_every" "1"
                |> setKey "[train]" "eval_every" "3"
                |> fun d -> if study then d |> setKey "[study]" "tasks" (string (2 + k / 2)) else d
                |> fun d -> if k = 2 then d |> setKey "[[methods]]" "name" "\"ewc\"" else d
            let path = Path.Combine(dir, "run.toml")
            File.WriteAllText(path, renderDoc doc)
            dir, path
        let command = if study then "study" else "train"
        let whole, wholePath = make "fuzz-whole"
        let w = researchWithin 180.0 [] whole [ command; wholePath ]
        let killed, killedPath = make "fuzz-killed"
        let afterBatches = 4 + 3 * k
        let kr = researchWithin 180.0 [ "RESEARCH_KILL_AFTER_MICROBATCHES", string afterBatches ] killed [ command; killedPath ]
        let run = theRun killed
        let resumed = match run with Some d -> researchWithin 180.0 [] killed [ command; killedPath; "--resume"; d ] | None -> kr
        let label = sprintf "%s killed after %d micro-batches, then resumed" command afterBatches
        label, w, theRun whole, kr, run, resumed
    let killResults = twoAtATime [ for k in 0 .. 3 -> killJob k ]
    for label, w, whole, kr, run, resumed in killResults do
        t.Processes <- t.Processes + 3
        if judge t (label + " (uninterrupted twin)") Accept w && kr.ExitCode = 137 && judge t label Accept resumed then
            for p in storeProblems run.Value do t.Problem ("store: " + p) label resumed
            let a, b = rowCounts whole.Value, rowCounts run.Value
            if a <> b then t.Problem (sprintf "rows differ from the uninterrupted run: %A vs %A" a b) label resumed
        elif kr.ExitCode <> 137 then t.Problem (sprintf "the kill did not happen (exit %d)" kr.ExitCode) label kr
    totals.Processes <- totals.Processes + t.Processes
    totals.Add t
    finish t (sprintf "%d processes (%d refused configs, %d dry-runs, %d runs, %d studies, %d killed-and-resumed runs with their twins); %d valid, %d invalid"
                  t.Processes refused.Length dryRuns.Length 20 8 4 t.Valid t.Invalid) watch.Elapsed
    Expect.isGreaterThanOrEqual t.Processes 60 "at least 60 processes"

// ---------------------------------------------------------------------------------------------------------------------
// Checkpoints and weight files.

/// A run with periodic checkpoints: 256 items of 3 classes, 10 % held out, batches of 16: 15 steps an epoch, 2 epochs.
let private checkpointDoc (dir: string) : Doc =
    [ "[run]", [ "name", "\"ck\""; "seed", "3"; "threads", "1"; "output_dir", toml (Path.Combine(dir, "runs")) ]
      "[data]", [ "dataset", "\"synthetic\""; "synthetic_samples", "256"; "synthetic_features", "4"; "synthetic_classes", "3"; "batch_size", "16" ]
      "[model]", [ "hidden", "[4]" ]
      "[train]", [ "epochs", "2"; "log_every", "1" ]
      "[checkpoint]", [ "every", "2"; "keep_last", "3" ] ]

let private checkpointFiles = [ "model.safetensors"; "optimizer.safetensors"; "methods.safetensors"; "state.json"; "manifest.json" ]

/// Damages one file of a checkpoint folder (or a weights file) in a seeded way; returns what was done. Kinds: "truncate",
/// "flip" (anywhere), "append", "swap" (the same file of another checkpoint), and the special kinds of replaceFile.
let private damage (seed: uint64) (kind: string) (path: string) (other: string) =
    match kind with
    | "truncate" -> truncate seed path
    | "flip" -> flip seed 0 Int32.MaxValue path
    | "append" -> File.AppendAllText(path, "\n#"); "2 bytes appended"
    | "swap" -> File.Copy(other, path, true); "replaced by " + other
    | special -> replaceFile special path; special

let private checkpointTest () =
    let watch = Stopwatch.StartNew()
    let t = Tally()
    let dir = tempDir "fuzz-checkpoints"
    let cfg = Path.Combine(dir, "run.toml")
    File.WriteAllText(cfg, renderDoc (checkpointDoc dir))
    // A run killed (SIGKILL) after 20 micro-batches: periodic checkpoints step-15 (epoch end), step-16, step-18.
    let killed = researchWithin 120.0 [ "RESEARCH_KILL_AFTER_MICROBATCHES", "20" ] dir [ "train"; cfg ]
    Expect.equal killed.ExitCode 137 (sprintf "killed: %s" killed.Err)
    let killedRun = (theRun dir).Value
    // The same run to its end, in-process: the rows a resumed run must end with, and the weights init_from and eval read.
    let whole = cli [ "train"; cfg ]
    Expect.equal whole.ExitCode 0 whole.Err
    let finished = Directory.GetDirectories(Path.Combine(dir, "runs")) |> Array.find (fun d -> d <> killedRun)
    let reference = rowCounts finished
    let periodic = Directory.GetDirectories(Path.Combine(killedRun, "checkpoints"), "step-*") |> Array.sort
    Expect.isGreaterThanOrEqual periodic.Length 2 "two periodic checkpoints to fall back between"
    let newest, older = Path.GetFileName periodic[periodic.Length - 1], Path.GetFileName periodic[periodic.Length - 2]
    let mutable resumes, inits, evals = 0, 0, 0

    // --resume: a damaged newest checkpoint is refused and an older one resumed from (exit 0); a re-signed state that does
    // not describe the run, or no valid checkpoint at all, exits 2 naming the file; a refusal changes nothing.
    let resumeCase (label: string) (prepare: string -> Expected) =
        resumes <- resumes + 1
        let copy = Path.Combine(dir, "resume", sprintf "r%03d" resumes)
        copyDir killedRun copy
        let expected = prepare copy
        let before = snapshot copy
        let r = cli [ "train"; cfg; "--resume"; copy ]
        let label = sprintf "resume: %s [research train %s --resume %s]" label cfg copy
        if judge t label expected r then
            if r.ExitCode = 0 then
                for p in storeProblems copy do t.Problem ("store: " + p) label r
                let counts = rowCounts copy
                if counts <> reference then t.Problem (sprintf "rows differ from the uninterrupted run: %A vs %A" counts reference) label r
            else unchanged t label r before (snapshot copy)
    let kinds = [ "truncate"; "flip"; "append"; "swap"; yield! specialKinds ]
    let combos = [ for f in checkpointFiles do for k in kinds -> f, k ] |> Array.ofList
    for i, (file, kind) in draw (seedOf "resume-damage") (Gen.shuffle combos) |> Array.indexed do
        resumeCase (sprintf "%s of %s: %s" newest file kind) (fun copy ->
            let path = Path.Combine(copy, "checkpoints", newest, file)
            damage (seedOf "resume" + uint64 i) kind path (Path.Combine(copy, "checkpoints", older, file)) |> ignore
            Accept)
    resumeCase "every periodic checkpoint damaged" (fun copy ->
        for j, d in Array.indexed periodic do
            let file = checkpointFiles[j % checkpointFiles.Length]
            damage (seedOf "all" + uint64 j) kinds[j % kinds.Length] (Path.Combine(copy, "checkpoints", Path.GetFileName d, file)) "" |> ignore
        Refuse [ "no valid checkpoint"; Path.Combine(copy, "checkpoints") ])
    resumeCase "an older checkpoint damaged, the newest intact" (fun copy ->
        truncate 7UL (Path.Combine(copy, "checkpoints", older, "model.safetensors")) |> ignore
        Accept)
    for field, value, says in
        [ "Epoch", "999", "epoch 999"; "Phase", "3", "phase 3"; "Phase", "-1", "phase -1"; "WindowInEpoch", "999", "window 999"
          "Step", "99999", "steps"; "OptimizerStep", "99999", "steps"; "PhaseStartStep", "999", "steps"; "Stage", "\"Consolidated\"", "stage"
          "Stage", "\"Bogus\"", "not a checkpoint state"; "Format", "2", "format 2"; "RunId", "\"other\"", "is not in"; "RunId", "null", "RunId"
          "Phase", "\"x\"", "not a checkpoint state"; "Evaluations", "null", "Evaluations"; "StopReasons", "[null]", "StopReasons"
          "Identity", "\"abc\"", "differs from the config" ] do
        resumeCase (sprintf "%s's state.json re-signed with %s = %s" newest field value) (fun copy ->
            resign (Path.Combine(copy, "checkpoints", newest)) (replaceField field value)
            let named = if field = "Identity" then cfg else Path.Combine(copy, "checkpoints", newest, "state.json")
            Refuse [ named; says ])
    for label, text in [ "null", "null"; "an empty object", "{}"; "an array", "[]" ] do
        resumeCase (sprintf "%s's state.json re-signed as %s" newest label) (fun copy ->
            resign (Path.Combine(copy, "checkpoints", newest)) (fun _ -> text)
            Refuse [ Path.Combine(copy, "checkpoints", newest, "state.json") ])
    // A manifest that says the same in other words, or lists a file more: the checkpoint is intact.
    for label, rewrite in
        [ "re-indented", (fun (m: string) -> m.Replace("\n", "").Replace("  ", ""))
          "in another key order", (fun m ->
            let lines = m.Split('\n')
            let entries = lines[1 .. lines.Length - 2] |> Array.map (fun l -> l.TrimEnd ',') |> Array.rev
            let entries = entries |> Array.mapi (fun i l -> if i < entries.Length - 1 then l + "," else l)
            String.Join("\n", Array.concat [ [| lines[0] |]; entries; [| lines[lines.Length - 1] |] ]))
          "listing one file more", (fun m -> m.Replace("{", "{\n  \"notes.txt\": \"00\",")) ] do
        resumeCase (sprintf "%s's manifest %s" newest label) (fun copy ->
            let manifest = Path.Combine(copy, "checkpoints", newest, "manifest.json")
            File.WriteAllText(manifest, rewrite (File.ReadAllText manifest))
            Accept)
    resumeCase "a half-written checkpoint folder left by a kill" (fun copy ->
        Directory.CreateDirectory(Path.Combine(copy, "checkpoints", ".step-000000099.tmp-1234")) |> ignore
        Accept)
    resumeCase "the newest checkpoint moved aside by a kill while replacing it" (fun copy ->
        Directory.Move(Path.Combine(copy, "checkpoints", newest), Path.Combine(copy, "checkpoints", sprintf ".%s.old-1234" newest))
        Accept)
    resumeCase "no checkpoints folder" (fun copy ->
        Directory.Delete(Path.Combine(copy, "checkpoints"), true)
        Refuse [ "no valid checkpoint" ])
    resumes <- resumes + 1
    let finishedCopy = Path.Combine(dir, "resume", "finished")
    copyDir finished finishedCopy
    let before = snapshot finishedCopy
    let r = cli [ "train"; cfg; "--resume"; finishedCopy ]
    let label = "resume: a finished run"
    if judge t label (Refuse [ "already finished" ]) r then unchanged t label r before (snapshot finishedCopy)

    // init_from: a weights file or a checkpoint folder, read only when intact (a checkpoint's manifest verifies; a file's
    // structure holds); anything else exits 2 naming the file.
    let good = File.ReadAllBytes(Path.Combine(finished, "checkpoints", "final", "model.safetensors"))
    let _, goodHeader = header good
    let initCase (label: string) (expected: string -> Expected) (path: string) =
        inits <- inits + 1
        let folder = Path.GetDirectoryName path
        let before = snapshot folder
        let r = cli [ "train"; cfg; "--dry-run"; "--set"; sprintf "model.init_from=%s" (toml path) ]
        let label = sprintf "init_from: %s [%s]" label path
        let e = expected path
        if judge t label e r && r.ExitCode <> 0 then unchanged t label r before (snapshot folder)
    let weights (name: string) (bytes: byte[]) =
        let folder = Path.Combine(dir, "weights")
        Directory.CreateDirectory folder |> ignore
        let path = Path.Combine(folder, name + ".safetensors")
        File.WriteAllBytes(path, bytes)
        path
    let refuseFile = fun (p: string) -> Refuse [ p ]
    initCase "an intact weights file" (fun _ -> Accept) (weights "intact" good)
    initCase "a weights file with __metadata__" (fun _ -> Accept) (weights "metadata" (withHeader good (goodHeader.Replace("{", "{\"__metadata__\":{\"format\":\"pt\"},"))))
    initCase "tensor bytes changed (the format has no checksum: read as it is)" (fun _ -> Accept)
        (let p = weights "data-flip" good in flip 5UL (8 + fst (header good)) good.Length p |> ignore; p)
    for i in 0 .. 5 do
        initCase (sprintf "cut %d" i) refuseFile (let p = weights (sprintf "cut-%d" i) good in truncate (seedOf "cut" + uint64 i) p |> ignore; p)
    // Structural characters of the header JSON changed: it is no longer JSON.
    let structural = [ for i, c in Seq.indexed goodHeader do if "{}[]:,\"".Contains c then 8 + i ]
    for i in 0 .. 5 do
        let at = draw (seedOf "structure" + uint64 i) (Gen.elements structural)
        initCase (sprintf "header byte %d changed" at) refuseFile
            (let bytes = Array.copy good in bytes[at] <- byte 'x'; weights (sprintf "structure-%d" i) bytes)
    for i, at in List.indexed [ 0; 1; 3; 7 ] do
        initCase (sprintf "header length byte %d changed" at) refuseFile
            (let bytes = Array.copy good in bytes[at] <- bytes[at] ^^^ byte (1 + i); weights (sprintf "length-%d" i) bytes)
    for label, edit in
        [ "dtype F32 → F16", (fun (h: string) -> h.Replace("\"F32\"", "\"F16\""))
          "dtype F32 → F64", (fun h -> h.Replace("\"F32\"", "\"F64\""))
          "dtype F32 → BF16", (fun h -> h.Replace("\"F32\"", "\"BF16\""))
          "dtype F32 → I32 (same size: only the parameter's dtype tells)", (fun h -> h.Replace("\"F32\"", "\"I32\""))
          "dtype F32 → U8", (fun h -> h.Replace("\"F32\"", "\"U8\""))
          "two tensors' bytes overlap", (fun h ->
              let m = Text.RegularExpressions.Regex.Matches(h, "\"data_offsets\":\\[(\\d+),(\\d+)\\]") |> Seq.find (fun m -> m.Groups[1].Value <> "0")
              let a, b = int64 m.Groups[1].Value, int64 m.Groups[2].Value
              h.Substring(0, m.Index) + sprintf "\"data_offsets\":[%d,%d]" (a - 4L) (b - 4L) + h.Substring(m.Index + m.Length))
          "dtype F32 → X9", (fun h -> h.Replace("\"F32\"", "\"X9\""))
          "dtype a number", (fun h -> h.Replace("\"F32\"", "32"))
          "shape [4,4] → [16]", (fun h -> h.Replace("[4,4]", "[16]"))
          "shape [4,4] → [4,3]", (fun h -> h.Replace("[4,4]", "[4,3]"))
          "shape past a long", (fun h -> h.Replace("[4,4]", "[4611686018427387904,4]"))
          "shape a string", (fun h -> h.Replace("[4,4]", "\"4x4\""))
          "offsets negative", (fun h -> h.Replace("[0,64]", "[-64,0]"))
          "offsets strings", (fun h -> h.Replace("[0,64]", "[\"0\",\"64\"]"))
          "a tensor renamed", (fun h -> h.Replace("head.bias", "head.bias2"))
          "a tensor named twice", (fun h -> h.Replace("head.bias", "head.weight"))
          "a tensor more", (fun h -> h.Replace("{", "{\"extra\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"))
          "__metadata__ of numbers", (fun h -> h.Replace("{", "{\"__metadata__\":{\"n\":1},"))
          "an empty header object", (fun _ -> "{}")
          "a header that is an array", (fun _ -> "[]")
          "an empty header", (fun _ -> "") ] do
        initCase label refuseFile (weights (label.Replace(' ', '-').Replace("→", "to")) (withHeader good (edit goodHeader)))
    for kind in specialKinds do
        let path = Path.Combine(dir, "weights", sprintf "special-%s.safetensors" kind)
        replaceFile kind path
        initCase (sprintf "the weights file is %s" kind) refuseFile path
    // A checkpoint folder, named as the folder or as its model.safetensors.
    let checkpointCase (label: string) (damageIt: string -> Expected) (asFile: bool) =
        let copy = Path.Combine(dir, "init", sprintf "c%03d" (inits + 1))
        copyDir (Path.Combine(finished, "checkpoints", "final")) copy
        let expected = damageIt copy
        initCase label (fun _ -> expected) (if asFile then Path.Combine(copy, "model.safetensors") else copy)
    checkpointCase "an intact checkpoint folder" (fun _ -> Accept) false
    checkpointCase "an intact checkpoint's model.safetensors" (fun _ -> Accept) true
    for i, (file, kind) in draw (seedOf "init-damage") (Gen.shuffle combos) |> Array.indexed do
        checkpointCase (sprintf "a checkpoint's %s: %s" file kind) (fun copy ->
            let path = Path.Combine(copy, file)
            let was = sha256 path
            damage (seedOf "init" + uint64 i) kind path (Path.Combine(killedRun, "checkpoints", newest, file)) |> ignore
            // A file swapped for an identical one (methods.safetensors of a run without methods) leaves it intact; a
            // checkpoint folder is read only when its manifest verifies, so one without its manifest is refused.
            if kind = "swap" && sha256 path = was then Accept
            elif file = "model.safetensors" && List.contains kind [ "delete"; "dir" ] then Refuse [ "no weights at " + path ]
            // A manifest changed may still be JSON: the error then names the file whose hash no longer matches.
            elif file = "manifest.json" && List.contains kind [ "flip"; "swap"; "append" ] then Refuse [ copy ]
            else Refuse [ path ]) (i % 2 = 0)

    // eval: a checkpoint of a run (the run's config.toml beside it) or a weights file with --config.
    let evalCase (label: string) (prepare: string -> string list * Expected) =
        evals <- evals + 1
        let copy = Path.Combine(dir, "eval", sprintf "e%03d" evals)
        copyDir finished copy
        let args, expected = prepare copy
        let before = snapshot copy
        let r = cli ("eval" :: args)
        let label = sprintf "eval: %s [research eval %s]" label (String.Join(" ", args))
        if judge t label expected r && r.ExitCode <> 0 then unchanged t label r before (snapshot copy)
    for name in [ "final"; "best" ] do
        evalCase (sprintf "the intact %s checkpoint" name) (fun copy -> [ Path.Combine(copy, "checkpoints", name) ], Accept)
    evalCase "a weights file with --config" (fun copy -> [ Path.Combine(copy, "checkpoints", "final", "model.safetensors"); "--config"; cfg ], Accept)
    for i, (file, kind) in draw (seedOf "eval-damage") (Gen.shuffle combos) |> Array.indexed do
        evalCase (sprintf "final's %s: %s" file kind) (fun copy ->
            let final = Path.Combine(copy, "checkpoints", "final")
            let path = Path.Combine(final, file)
            let was = sha256 path
            damage (seedOf "eval" + uint64 i) kind path (Path.Combine(killedRun, "checkpoints", newest, file)) |> ignore
            let expected =
                if kind = "swap" && sha256 path = was then Accept
                elif file = "model.safetensors" && List.contains kind [ "delete"; "dir" ] then Refuse [ "no weights at " + path ]
                elif file = "manifest.json" && List.contains kind [ "flip"; "swap"; "append" ] then Refuse [ final ]
                else Refuse [ path ]
            [ final ], expected)
    for label, change, says in
        [ "garbage", (fun (p: string) -> File.WriteAllText(p, "[run\nname = ")), "(syntax)"
          "deleted", (fun p -> File.Delete p), "no such config file"
          "empty", (fun p -> File.WriteAllText(p, "")), "is empty"
          "a FIFO", (fun p -> replaceFile "fifo" p), "is a FIFO (named pipe), not a regular file"
          "a link to /dev/zero", (fun p -> replaceFile "zero" p), "is a symbolic link to a character device (/dev/zero), not a regular file"
          "an unknown key", (fun p -> File.AppendAllText(p, "\n[optimizer]\nlrr = 1.0\n")), "optimizer.lrr" ] do
        evalCase (sprintf "the run's config.toml %s" label) (fun copy ->
            let config = Path.Combine(copy, "config.toml")
            change config
            [ Path.Combine(copy, "checkpoints", "final") ], Refuse [ config; says ])
    evalCase "a path that does not exist" (fun copy -> [ Path.Combine(copy, "nowhere") ], Refuse [ Path.Combine(copy, "nowhere") ])
    evalCase "a cut weights file with --config" (fun copy ->
        let p = Path.Combine(copy, "checkpoints", "final", "model.safetensors")
        truncate 11UL p |> ignore
        [ p; "--config"; cfg ], Refuse [ p ])
    // Output paths: a writer never replaces or writes into what is not a regular file (a device, a FIFO, a folder, or a
    // link to one); a new path, an empty file or a link to nothing yet is written.
    let mutable outputs = 0
    for kind in specialKinds do
        for label, args in [ "runs export -o", [ "runs"; "export"; Path.GetDirectoryName finished ]; "plot curves -o", [ "plot"; "curves"; finished ]
                             "plot schedule -o", [ "plot"; "schedule"; "cosine" ] ] do
            outputs <- outputs + 1
            let folder = Path.Combine(dir, "outputs", sprintf "o%03d" outputs)
            Directory.CreateDirectory folder |> ignore
            let target = Path.Combine(folder, if label.StartsWith "runs" then "runs.csv" else "figure.png")
            replaceFile kind target
            let before = snapshot folder
            let r = cli (args @ [ "-o"; target ])
            let label = sprintf "output: %s to %s [%s]" label kind target
            let expected = if List.contains kind [ "empty"; "delete"; "dangling" ] then Accept else Refuse [ target ]
            if judge t label expected r then
                if r.ExitCode <> 0 then unchanged t label r before (snapshot folder)
                elif not (File.Exists target) then t.Problem "no file written" label r
    let cases = resumes + inits + evals + outputs
    totals.Processes <- totals.Processes + 1
    totals.Checkpoints <- totals.Checkpoints + cases
    totals.Add t
    finish t (sprintf "%d checkpoint, weight-file and output cases (%d --resume, %d init_from, %d eval, %d output paths; %d valid, %d invalid), 1 process" cases resumes inits evals outputs t.Valid t.Invalid) watch.Elapsed
    Expect.isGreaterThanOrEqual cases 100 "at least 100 checkpoint and weight-file cases"

// ---------------------------------------------------------------------------------------------------------------------
// Damaged study records: a finished study's run.sqlite with one seeded cell of its matrix, its values or its evaluations
// changed to what no run writes.

let private recordsTest () =
    let watch = Stopwatch.StartNew()
    let t = Tally()
    let dir = tempDir "fuzz-records"
    let made = cli [ "study"; syntheticStudy dir "s" "" ]
    if made.ExitCode <> 0 then failtestf "the study to damage did not run: %s" made.Err
    let original = Path.Combine(onlyRunDir dir, "run.sqlite")
    let execute (store: string) (statement: string) =
        use db = new SqliteConnection(SqliteConnectionStringBuilder(DataSource = store, Pooling = false).ToString())
        db.Open()
        use cmd = db.CreateCommand()
        cmd.CommandText <- statement
        cmd.ExecuteNonQuery() |> ignore
    // (table, column, a value no run writes there, the rows it may go in)
    let bad =
        [ for v in [ "5.0"; "-0.5"; "1.0000001"; "2"; "'high'"; "x'00'" ] -> "study_matrix", "accuracy", v, "split = 'test'"
          for v in [ "-1.0"; "9e999"; "-9e999"; "'low'" ] -> "study_matrix", "loss", v, "split = 'test'"
          for v in [ "99"; "-1"; "2"; "'one'"; "1.5" ] -> "study_matrix", "after_task", v, "split = 'test'"
          for v in [ "99"; "-1"; "2"; "100000"; "'zero'" ] -> "study_matrix", "on_task", v, "split = 'test'"
          for v in [ "5.0"; "-0.1"; "'x'" ] -> "evaluations", "accuracy", v, "accuracy IS NOT NULL"
          for v in [ "-2.0"; "-1e-9"; "9e999"; "'x'" ] -> "evaluations", "loss", v, "loss IS NOT NULL"
          for v in [ "'{\"a\": 1}'"; "'not json'"; "'[[1,2],[3,4],[5,6],[7,8]]'"; "42" ] -> "study_values", "json", v, "kind = 'probe' OR kind = 'tasks'" ]
    let mutable cases = 0
    for i, (table, column, value, rows) in List.indexed bad do
        cases <- cases + 1
        let runs = Path.Combine(dir, "damaged", sprintf "r%03d" i)
        let run = Path.Combine(runs, "s")
        Directory.CreateDirectory run |> ignore
        let store = Path.Combine(run, "run.sqlite")
        File.Copy(original, store)
        // One row of those the damage may go in, drawn from the case's seed.
        let ids = query run (sprintf "SELECT rowid FROM %s WHERE %s ORDER BY rowid" table rows) |> List.map (fun r -> Convert.ToInt64 r[0])
        if ids.IsEmpty then t.Problem "no row to damage" (sprintf "%s.%s" table column) { ExitCode = 0; Out = ""; Err = "" }
        else
            let row = draw (seedOf (sprintf "record %d" i)) (Gen.elements ids)
            execute store (sprintf "UPDATE %s SET %s = %s WHERE rowid = %d" table column value row)
            let before = snapshot runs
            let readers = if table = "evaluations" then [ [ "runs"; "show"; run ]; [ "runs"; "export"; runs ] ] else [ [ "metrics"; runs ]; [ "runs"; "show"; run ] ]
            for args in readers do
                let r = cli args
                let label = sprintf "record: %s.%s = %s in row %d [research %s]" table column value row (String.Join(" ", args))
                if judge t label (Refuse [ run; table ]) r then unchanged t label r before (snapshot runs)
    totals.Processes <- totals.Processes + 1
    totals.Add t
    finish t (sprintf "%d damaged study records × 2 readers (metrics or runs export, runs show); %d valid, %d invalid" cases t.Valid t.Invalid) watch.Elapsed
    Expect.isGreaterThanOrEqual cases 30 "at least 30 damaged records"

// ---------------------------------------------------------------------------------------------------------------------
// Plugin results of the wrong shape: the Faulty fixture's shaped plugins (tests/Fixtures/Plugin.Faulty/Shaped.cs), whose
// options choose each result's rows, shape, dtype, names, values or layout. A case sets up to three of them, each either
// to what the core must receive or to something else.

/// One option of a shaped plugin: its TOML key and value, and whether the result it makes is what the core must receive.
type private Aspect = { Key: string; Value: string; Right: bool }

/// A shaped plugin's options, the right values and the wrong ones of each.
let private aspects (options: (string * string list * string list) list) =
    options |> List.map (fun (key, rights, wrongs) ->
        key, [ for v in rights -> { Key = key; Value = v; Right = true } ], [ for v in wrongs -> { Key = key; Value = v; Right = false } ])

let private texts = List.map toml

/// Items of the fuzz's runs: synthetic [16, 8] float32 inputs and int64 targets of 3 classes; half a batch of memory items.
let private memoryAspects =
    aspects [ "rows_delta", [], [ "-8"; "-3"; "-1"; "1"; "2"; "5" ]
              "features", [ "8" ], [ "1"; "5"; "7"; "9"; "784" ]
              "rank", [ "2" ], [ "1"; "3"; "4" ]
              "input_dtype", texts [ "float32" ], texts [ "float64"; "float16"; "bfloat16"; "int64"; "int32"; "uint8"; "bool" ]
              // Contract 3.0: a memory item may carry tensors the task's batches lack (DER's logits); the core strips them
              // before the model reads the batch. A task tensor missing or renamed is still wrong.
              "names", [ "[\"input\", \"targets\"]"; "[\"targets\", \"input\"]"; "[\"input\", \"targets\", \"extra\"]" ],
                       [ "[\"input\"]"; "[\"targets\"]"; "[\"pixels\", \"targets\"]"; "[\"input_ids\", \"targets\"]" ]
              "targets_dtype", texts [ "int64" ], texts [ "int32"; "int16"; "uint8"; "float32"; "float64"; "bool" ]
              "targets", texts [ "0"; "2"; "ignore" ], texts [ "3"; "-1"; "-99"; "-101"; "1000000" ]
              "targets_rank", [ "0" ], [ "2" ]
              "non_finite", texts [ "" ], texts [ "nan"; "inf"; "-inf" ]
              "count", [ "64"; "8"; "4"; "0" ], []
              "mix_ratio", [ "0.5"; "0.25"; "1.0"; "0.0" ], [] ]

/// A penalty's or a loss term's result: a floating-point scalar (numel 1) in the graph, finite in fp32 and in its dtype.
let private tensorAspects =
    aspects [ "shape", [ "[]"; "[1]"; "[1, 1]" ], [ "[0]"; "[2]"; "[3]"; "[16]"; "[2, 2]"; "[1, 3]" ]
              "dtype", texts [ "float32"; "float64"; "bfloat16"; "float16" ], texts [ "int64"; "int32"; "bool"; "uint8"; "complex64" ]
              "value", texts [ "0.0"; "0.01"; "-5"; "1000.0"; "1e30"; "none" ], texts [ "nan"; "inf"; "-inf"; "1e39" ]
              "graph", [ "true" ], [ "false" ] ]

let private hookAspects =
    aspects [ "change", texts [ "none"; "scale"; "zero" ], texts [ "nan"; "inf"; "set-shape"; "set-dtype"; "set-same"; "replace" ]
              "index", [ "0"; "1"; "2"; "3"; "7" ], [] ]

/// Kept tensors: any name that is not blank, any dtype a checkpoint holds, any shape and layout.
let private stateAspects =
    aspects [ "key", texts [ "kept"; "a/b"; "é\"x"; "__metadata__"; String('k', 200) ], texts [ ""; " " ]
              "dtype", texts [ "float32"; "float64"; "float16"; "bfloat16"; "int64"; "int32"; "int16"; "int8"; "uint8"; "bool" ], texts [ "complex64" ]
              "shape", [ "[3]"; "[]"; "[0]"; "[2, 3]"; "[1, 1, 1]" ], []
              "layout", texts [ "contiguous"; "strided"; "twice" ], [] ]

/// A metric of a 2-task study: per-task values at most one per task, finite or NaN; a finite value.
let private metricAspects =
    aspects [ "per_task", [ "-1"; "0"; "1"; "2" ], [ "3"; "5" ]
              "per_task_value", texts [ "0.25"; "-1.0"; "nan" ], texts [ "inf"; "-inf" ]
              "value", texts [ "0.5"; "-3.0"; "1e300" ], texts [ "nan"; "inf"; "-inf" ] ]

/// Up to three of a plugin's options, each right or wrong with even odds (no option: the defaults, all right).
let private optionsGen (all: (string * Aspect list * Aspect list) list) : Gen<Aspect list> =
    gen {
        let! n = Gen.frequency [ 1, Gen.constant 0; 4, Gen.constant 1; 3, Gen.constant 2; 1, Gen.constant 3 ]
        let! keys = Gen.shuffle all |> Gen.map (Array.truncate n >> List.ofArray)
        let! chosen =
            keys |> List.map (fun (_, rights, wrongs) ->
                match rights, wrongs with
                | [], ws -> Gen.elements ws
                | rs, [] -> Gen.elements rs
                | rs, ws -> Gen.oneof [ Gen.elements rs; Gen.elements ws ])
            |> Gen.sequenceToList
        return chosen
    }

/// The value of an option as the plugin reads it (a TOML string's text, as `toml` escapes it), if the case sets it.
let private valueOf (key: string) (options: Aspect list) =
    let text (v: string) =
        if v.StartsWith "\"" then v.Substring(1, v.Length - 2).Replace("\\\"", "\"").Replace("\\\\", "\\") else v
    options |> List.tryFind (fun a -> a.Key = key) |> Option.map (fun a -> text a.Value)

/// Whether a plugin with these options gives the core what it must receive, the options' interplay included.
let private rightResult (plugin: string) (options: Aspect list) =
    let allRight = options |> List.forall (fun a -> a.Right)
    match plugin with
    // No memory item is asked for when the memory holds none or nothing mixes: a wrong shape is never returned.
    | "shaped-memory" -> allRight || valueOf "count" options = Some "0" || valueOf "mix_ratio" options = Some "0.0"
    // No result, a zero term, has no shape; a value past fp16's range is +∞ in an fp16 result.
    | "shaped-penalty" | "shaped-loss" ->
        valueOf "value" options = Some "none"
        || (allRight && not (valueOf "dtype" options = Some "float16" && abs (float (valueOf "value" options |> Option.defaultValue "0.01")) > 65504.0))
    // Per-task values are only returned when asked for.
    | "shaped-metric" ->
        let perTask = valueOf "per_task" options |> Option.map int |> Option.defaultValue -1
        options |> List.forall (fun a -> a.Right || (a.Key = "per_task_value" && perTask <= 0))
    | _ -> allRight

/// The member a wrong result of the plugin is named by.
let private memberOf = function
    | "shaped-memory" -> "Sample" | "shaped-penalty" -> "Penalty" | "shaped-loss" -> "Loss"
    | "shaped-hook" -> "BeforeUpdate" | "shaped-state" -> "StateDict" | _ -> "Compute"

let private faulty = fixtureDir "Plugin.Faulty"
let private faultyDll = Path.Combine(faulty, "Plugin.Faulty.dll")

/// A shaped plugin's case: exit 0 when its results are right; else exit 1 with one line (the plugin host's warnings
/// aside) naming the plugin, its DLL and the member. True when it did so.
let private judgePlugin (t: Tally) (label: string) (right: bool) (who: string) (memberName: string) (r: ProcessResult) =
    if right then t.Valid <- t.Valid + 1 else t.Invalid <- t.Invalid + 1
    let failures = lines r.Err |> Array.filter (fun l -> not (l.StartsWith "warning:"))
    if crashed r then
        t.Crashes <- t.Crashes + 1
        t.Problem "CRASH" label r
        false
    elif right && r.ExitCode = 0 then true
    elif right then
        t.Refused <- t.Refused + 1
        t.Problem "VALID INPUT REFUSED" label r
        false
    elif r.ExitCode = 0 then
        t.Silent <- t.Silent + 1
        t.Problem "INVALID INPUT ACCEPTED" label r
        false
    elif r.ExitCode <> 1 then
        t.Problem (sprintf "exit %d where a plugin's failure exits 1" r.ExitCode) label r
        false
    elif failures.Length <> 1 then
        t.Problem "not one line for the failure" label r
        false
    else
        match [ who; faultyDll; memberName ] |> List.tryFind (fun n -> not (failures[0].Contains n)) with
        | Some n -> t.Problem (sprintf "the failure does not name %s" n) label r; false
        | None -> true

let private scalarTypeOf = function
    | "float64" -> "Float64" | "float16" -> "Float16" | "bfloat16" -> "BFloat16" | "int64" -> "Int64" | "int32" -> "Int32"
    | "int16" -> "Int16" | "int8" -> "Int8" | "uint8" -> "Byte" | "bool" -> "Bool" | _ -> "Float32"

/// The kept tensor of a finished shaped-state run, read back from its final checkpoint as a resume reads it.
let private keptStateProblem (runDir: string) (options: Aspect list) =
    let key = "0/" + (valueOf "key" options |> Option.defaultValue "kept")
    let shape = valueOf "shape" options |> Option.defaultValue "[3]"
    let dtype = scalarTypeOf (valueOf "dtype" options |> Option.defaultValue "float32")
    let tensors = Research.Core.Checkpoints.SafetensorsCheck.Load(Path.Combine(runDir, "checkpoints", "final", "methods.safetensors"))
    try
        match tensors.TryGetValue key with
        | false, _ -> Some(sprintf "the final checkpoint holds no '%s' (it has %s)" key (String.Join(", ", tensors.Keys)))
        | true, kept ->
            let stored = sprintf "[%s]" (String.Join(", ", kept.shape))
            if string kept.dtype <> dtype || stored <> shape then Some(sprintf "'%s' came back as %O %s, not %s %s" key kept.dtype stored dtype shape)
            else None
    finally
        for v in tensors.Values do v.Dispose()

let private pluginsTest () =
    let watch = Stopwatch.StartNew()
    let t = Tally()
    let dir = tempDir "fuzz-plugins"
    let threads = TorchSharp.torch.get_num_threads ()
    let mutable runs, metricCases = 0, 0
    let trainCase (plugin: string) (i: int) =
        let all =
            match plugin with
            | "shaped-memory" -> memoryAspects
            | "shaped-hook" -> hookAspects
            | "shaped-state" -> stateAspects
            | _ -> tensorAspects
        let options = draw (seedOf (sprintf "%s %d" plugin i)) (optionsGen all)
        runs <- runs + 1
        let case = Path.Combine(dir, sprintf "r%03d" runs)
        Directory.CreateDirectory case |> ignore
        let path = Path.Combine(case, "run.toml")
        File.WriteAllText(path, renderDoc [ "[run]", [ "name", "\"p\""; "seed", "5"; "threads", "1"; "output_dir", toml (Path.Combine(case, "runs")) ]
                                            "[data]", [ "dataset", "\"synthetic\""; "synthetic_samples", "64"; "synthetic_features", "8"
                                                        "synthetic_classes", "3"; "batch_size", "16" ]
                                            "[model]", [ "hidden", "[8]" ]
                                            "[train]", [ "epochs", "1" ]
                                            "[[methods]]", ("name", toml plugin) :: [ for a in options -> a.Key, a.Value ] ])
        let right = rightResult plugin options
        let who = sprintf "method '%s' (" plugin
        let label = sprintf "%s {%s} (%s) [%s]" plugin (String.Join(", ", options |> List.map (fun a -> sprintf "%s = %s" a.Key a.Value)))
                        (if right then "right" else "wrong") path
        let r = cli [ "train"; path; "--plugins"; faulty ]
        if judgePlugin t label right who (memberOf plugin) r then
            let runDir = onlyRunDir case
            match query runDir "SELECT status, error FROM runs" with
            | [ [| status; error |] ] ->
                let status, error = string status, (match error with null -> "" | e -> string e)
                if right && status <> "finished" then t.Problem (sprintf "recorded as %s, not finished" status) label r
                elif not right && status <> "failed" then t.Problem (sprintf "recorded as %s, not failed" status) label r
                elif not right && not (error.Contains who && error.Contains faultyDll) then t.Problem "the recorded reason does not name the plugin and its DLL" label r
                elif right && plugin = "shaped-state" then
                    keptStateProblem runDir options |> Option.iter (fun p -> t.Problem p label r)
            | rows -> t.Problem (sprintf "%d rows in runs" rows.Length) label r
    try
        for plugin, n in [ "shaped-memory", 40; "shaped-penalty", 16; "shaped-loss", 16; "shaped-hook", 16; "shaped-state", 20 ] do
            for i in 0 .. n - 1 do trainCase plugin i
        // Metrics: computed again from a finished 2-task study's record (research metrics --save), stored or refused.
        let studyDir = Path.Combine(dir, "study")
        Directory.CreateDirectory studyDir |> ignore
        let made = cli [ "study"; syntheticStudy studyDir "s" "" ]
        if made.ExitCode <> 0 then failtestf "the study for the metrics did not run: %s" made.Err
        let study = onlyRunDir studyDir
        for i in 0 .. 29 do
            metricCases <- metricCases + 1
            let options = draw (seedOf (sprintf "shaped-metric %d" i)) (optionsGen metricAspects)
            let right = rightResult "shaped-metric" options
            let table = String.Join(", ", "name = \"shaped-metric\"" :: [ for a in options -> sprintf "%s = %s" a.Key a.Value ])
            let args = [ "metrics"; study; "--save"; "--plugins"; faulty; "--set"; sprintf "metrics=[{ %s }]" table ]
            let label = sprintf "shaped-metric {%s} (%s) [research %s]" table (if right then "right" else "wrong") (String.Join(" ", args))
            let r = cli args
            if judgePlugin t label right "forgetting metric 'shaped-metric' (" "Compute" r then
                match query study "SELECT value, json FROM study_values WHERE kind = 'metric' AND name = 'shaped-metric'" with
                | [ [| value; json |] ] ->
                    let json = string json
                    if right then
                        let expected = float (valueOf "value" options |> Option.defaultValue "0.5")
                        if isNull value || abs (Convert.ToDouble value - expected) > 1e-12 * abs expected then
                            t.Problem (sprintf "stored %O, not %g" value expected) label r
                    elif not (json.Contains "error" && json.Contains "shaped-metric") then
                        t.Problem (sprintf "stored %s, not the failure" json) label r
                | rows -> t.Problem (sprintf "%d stored values of shaped-metric" rows.Length) label r
    finally
        TorchSharp.torch.set_num_threads threads
    totals.Processes <- totals.Processes + 1
    totals.Add t
    finish t (sprintf "%d plugin results (%d training runs of a data role, penalty, loss term, gradient hook and state; %d metrics of a study; %d right, %d wrong)"
                  t.Cases runs metricCases t.Valid t.Invalid) watch.Elapsed
    Expect.isGreaterThanOrEqual t.Cases 100 "at least 100 plugin results"
    Expect.isGreaterThanOrEqual t.Valid 25 "right shapes among them"
    Expect.isGreaterThanOrEqual t.Invalid 50 "wrong shapes among them"

// ---------------------------------------------------------------------------------------------------------------------
// Fashion-MNIST folders.

let private images, labels = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
let private testImages, testLabels = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"

let private dataTest () =
    let watch = Stopwatch.StartNew()
    let t = Tally()
    let dir = tempDir "fuzz-data"
    let mutable folders = 0
    let dataCase (label: string) (train: int) (test: int) (damageIt: string -> Expected) =
        folders <- folders + 1
        let folder = Path.Combine(dir, sprintf "d%03d" folders)
        fashionFolder folder train test
        let expected = damageIt folder
        let path = Path.Combine(dir, sprintf "d%03d.toml" folders)
        File.WriteAllText(path, renderDoc [ "[run]", [ "name", "\"d\""; "output_dir", toml (Path.Combine(dir, "runs")) ]
                                            "[data]", [ "path", toml folder; "validation_fraction", "0.34" ]
                                            "[model]", [ "hidden", "[4]" ] ])
        let before = snapshot dir
        let r = cli [ "train"; path; "--dry-run" ]
        let label = sprintf "data: %s [%s]" label folder
        if judge t label expected r && r.ExitCode <> 0 then unchanged t label r before (snapshot dir)
    let file (folder: string) name = Path.Combine(folder, name)
    let refuse (name: string) = fun (folder: string) -> Refuse [ file folder name ]
    let rewrite name (bytes: byte[]) = fun (folder: string) -> writeGz (file folder name) bytes; Refuse [ file folder name ]
    dataCase "intact, 3 training and 2 test items" 3 2 (fun _ -> Accept)
    dataCase "intact, 12 training and 7 test items" 12 7 (fun _ -> Accept)
    dataCase "intact, with a file more in the folder" 3 2 (fun f -> File.WriteAllText(file f "README", "x"); Accept)
    for name in [ images; labels; testImages; testLabels ] do
        for kind in specialKinds do
            dataCase (sprintf "%s is %s" name kind) 3 2 (fun f -> replaceFile kind (file f name); Refuse [ file f name ])
    for i, name in List.indexed [ images; labels; testImages ] do
        dataCase (sprintf "%s cut" name) 3 2 (fun f ->
            let p = file f name
            let bytes = File.ReadAllBytes p
            let at = draw (seedOf "data-cut" + uint64 i) (Gen.choose (1, bytes.Length / 2))
            File.WriteAllBytes(p, bytes[.. at - 1])
            Refuse [ p ])
    let pixels n = Array.create (n * 784) 7uy
    dataCase "images not gzipped" 3 2 (fun f -> File.WriteAllBytes(file f images, idx 2051 [ 3; 28; 28 ] (pixels 3)); Refuse [ file f images ])
    dataCase "labels: gzip of random bytes" 3 2 (rewrite labels (Array.init 64 (fun i -> byte (i * 37 + 11))))
    dataCase "images with the labels' magic" 3 2 (rewrite images (idx 2049 [ 3; 28; 28 ] (pixels 3)))
    dataCase "labels with the images' magic" 3 2 (rewrite labels (idx 2051 [ 3 ] [| 0uy; 1uy; 2uy |]))
    dataCase "images of rank 2" 3 2 (rewrite images (idx 2050 [ 3; 784 ] (pixels 3)))
    dataCase "images: a header promising one more" 3 2 (rewrite images (idx 2051 [ 4; 28; 28 ] (pixels 3)))
    dataCase "images: a header promising one fewer" 3 2 (rewrite images (idx 2051 [ 2; 28; 28 ] (pixels 3)))
    dataCase "images: a count of 0" 3 2 (rewrite images (idx 2051 [ 0; 28; 28 ] [||]))
    dataCase "images: a negative count" 3 2 (rewrite images (idx 2051 [ -1; 28; 28 ] (pixels 3)))
    dataCase "images: a count of 2³¹ − 1" 3 2 (rewrite images (idx 2051 [ Int32.MaxValue; 28; 28 ] (pixels 3)))
    dataCase "images of 27 × 28" 3 2 (rewrite images (idx 2051 [ 3; 27; 28 ] (Array.create (3 * 27 * 28) 7uy)))
    dataCase "test images: the header only" 3 2 (rewrite testImages (idx 2051 [ 2; 28; 28 ] [||]))
    dataCase "labels: a label of 10" 3 2 (rewrite labels (idx 2049 [ 3 ] [| 0uy; 10uy; 2uy |]))
    dataCase "test labels: a label of 255" 3 2 (rewrite testLabels (idx 2049 [ 2 ] [| 255uy; 1uy |]))
    dataCase "2 labels for 3 images" 3 2 (fun f -> writeGz (file f labels) (idx 2049 [ 2 ] [| 0uy; 1uy |]); Refuse [ file f images; file f labels ])
    dataCase "images decompressing past 64 MB" 3 2 (rewrite images (Array.zeroCreate (65 <<< 20)))
    dataCase "labels followed by bytes that are not gzip" 3 2 (fun f -> File.AppendAllText(file f labels, "trailing"); Either [ file f labels ])
    dataCase "the folder is a file" 3 2 (fun f -> Directory.Delete(f, true); File.WriteAllText(f, "x"); Refuse [ f ])
    dataCase "the folder does not exist" 3 2 (fun f -> Directory.Delete(f, true); Refuse [ f ])
    totals.DataFolders <- totals.DataFolders + folders
    totals.Add t
    // The suite's line (its tests run in order, sequenced): what ran of it (all of it, or what --filter chose), and how long.
    let suite () =
        printfn "fuzz: %d configs (%d valid, %d invalid), %d processes, %d checkpoint cases, %d data folders; crashes %d, silent acceptances %d; %.1f s"
            totals.Configs totals.ValidConfigs totals.InvalidConfigs totals.Processes totals.Checkpoints totals.DataFolders
            totals.Crashes totals.Silent clock.Elapsed.TotalSeconds
    finishThen suite t (sprintf "%d data folders (%d intact, %d damaged)" folders t.Valid t.Invalid) watch.Elapsed
    Expect.isGreaterThanOrEqual folders 30 "at least 30 damaged data folders"

let tests =
    testSequenced <| testList "fuzz" [
        test "1,000+ seeded configs and --set overrides through Program.Main: values the schema accepts dry-run (exit 0), values outside it and documented refusals exit 2 with one error line per problem naming the file and the key; no crash; nothing created" {
            configTest ()
        }
        test "60+ real processes: refused configs exit 2 with one error line and create nothing, dry-runs exit 0, tiny runs, studies and killed-then-resumed runs exit 0 with a finished run and no duplicated store rows" {
            clock.Start()
            processTest ()
        }
        test "100+ damaged checkpoints and weight files through --resume, init_from and eval, and writers aimed at devices, FIFOs and folders: exit 0 only from intact files (a resume falling back to an older valid checkpoint, its store as an uninterrupted run's) and to regular or new paths, else exit 2 naming the file; a refusal changes nothing on disk" {
            clock.Start()
            checkpointTest ()
        }
        test "30+ damaged study records (a matrix cell, an evaluation or a stored value changed to what no run writes): metrics, runs show and runs export exit 2 with one line naming the run folder and the table; nothing changes on disk" {
            clock.Start()
            recordsTest ()
        }
        test "130+ plugin results of the wrong shape and of the right one (seeded options of a data role's sampled batch, a penalty, a loss term, a gradient hook's changes, a kept state, a metric): right ones run to the end (exit 0, recorded finished, the state read back from the checkpoint, the metric stored); every wrong one exits 1 with one line naming the plugin, its DLL and the member, recorded as failed; no crash" {
            clock.Start()
            pluginsTest ()
        }
        test "30+ damaged Fashion-MNIST folders: only intact ones are read (exit 0); every damage exits 2 with one error line naming the file; nothing changes on disk" {
            clock.Start()
            dataTest ()
        }
    ]
