/// The built-in sources on a researcher's own files (issue 30): JSONL and CSV text (classification, causal language
/// modelling, instruction tuning). Every fixture here is written by the test itself (pandas-written ones are in
/// FormatFixtureTests); the fortunes exported by FormatExport read back bitwise as the built-in reader's tensors.
module Research.Tests.FormatSourceTests

open System
open System.IO
open System.Text
open Expecto
open Research.Abstractions
open Research.Core
open Research.Core.Config
open Research.Core.Data
open Research.Core.Tasks
open Research.Core.Text
open Research.Core.Training
open Research.Tests.TestSupport
open TorchSharp

let keys = DataKeys("jsonl", [||], 0.1, 32, 256, 0)

let request (o: obj) = DataRequest(keys, o, 7L, Stream = fun name -> Seeds.Generator(7L, name))

let write (path: string) (text: string) =
    File.WriteAllText(path, text, UTF8Encoding(false))
    path

let sameTensor (a: torch.Tensor) (b: torch.Tensor) =
    a.shape = b.shape && a.dtype = b.dtype && torch.eq(a, b).all().item<bool>()

/// Every tensor of two splits equal, bitwise, and the same names.
let sameBatch (what: string) (a: Batch) (b: Batch) =
    Expect.equal (set a.Keys) (set b.Keys) (what + ": the tensors' names")
    for k in a.Keys do Expect.isTrue (sameTensor a[k] b[k]) (sprintf "%s: %s bitwise equal" what k)

let disposeSplits (s: DataSplits) =
    s.Train.DisposeTensors(); s.Test.DisposeTensors()
    if not (isNull s.Validation) then s.Validation.DisposeTensors()

/// The message of the exception a load throws.
let refusal (source: IDataSource) (o: obj) =
    try
        let s = source.Load(request o)
        disposeSplits s
        failtest "the bad input was read"
    with :? InvalidDataException as e -> e.Message

let private jsonl = DataSources.Get "jsonl"
let private csv = DataSources.Get "csv"
let private parquet = DataSources.Get "parquet"

/// Text with what CSV must quote: commas, quotes, a line break; and non-ASCII.
let private rows =
    [ "the cat sat, then \"napped\"", "cat"; "dogs bark\nat night", "dog"; "a cat again", "cat"; "Möwe über dem Meer", "bird"; "one more dog", "dog" ]

let private jsonLine (text: string) (label: string) =
    Text.Json.JsonSerializer.Serialize(dict [ "text", text; "label", label ])

let private csvField (s: string) = "\"" + s.Replace("\"", "\"\"") + "\""

let private imageFolder = DataSources.Get "image-folder"

/// Runs a Python snippet with Debian's python3 and PIL (build.sh's test packages install python3-pil).
let pil (dir: string) (script: string) =
    let r = runProcess dir "/usr/bin/python3" [ "-c"; "from PIL import Image\nimport os\n" + script ]
    if r.ExitCode <> 0 then failtestf "python3 with PIL failed (%d): %s" r.ExitCode r.Err

/// Fashion-MNIST's first LIMIT items of each split as an image folder, by the export script.
let private exportFashion (dir: string) (limit: int) =
    let out = Path.Combine(dir, "fashion")
    let r = runProcess repoRoot "bash" [ Path.Combine(repoRoot, "scripts", "export-formats.sh"); out; string limit; FashionMnist.ResolveDirectory "" ]
    if r.ExitCode <> 0 then failtestf "export-formats.sh failed (%d): %s%s" r.ExitCode r.Out r.Err
    out

/// The message of the exception loading an image folder throws.
let private imageRefusal (o: ImageFolderOptions) =
    try
        let s = imageFolder.Load(request o)
        disposeSplits s
        failtest "the bad input was read"
    with :? InvalidDataException as e -> e.Message

/// The errors a config text gets when read, one line each ("file: key: message").
let configErrors (text: string) =
    try ConfigLoader.Parse(text, "f.toml") |> ignore; []
    with :? ConfigException as e -> e.Errors |> Seq.map string |> List.ofSeq

/// A Parquet file of a string column "text" and an int32 column "label", written with Parquet.Net's column writer.
let private writeIntLabels (path: string) (texts: string[]) (labels: int[]) =
    let tf = Parquet.Schema.DataField<string>("text")
    let lf = Parquet.Schema.DataField<int>("label")
    use stream = File.Create path
    let writer = Parquet.ParquetWriter.CreateAsync(Parquet.Schema.ParquetSchema([| tf :> Parquet.Schema.Field; lf :> Parquet.Schema.Field |]), stream).GetAwaiter().GetResult()
    do
        use group = writer.CreateRowGroup()
        group.WriteAsync(tf, (texts :> Collections.Generic.IReadOnlyCollection<string>)).GetAwaiter().GetResult()
        group.WriteAsync<int>(lf, ReadOnlyMemory<int>(labels)).GetAwaiter().GetResult()
    writer.DisposeAsync().AsTask().Wait()

let tests =
    testList "formats" [
        test "jsonl and csv of the same rows give bitwise the same tensors; labels as names are the training file's names in ordinal order (bird 0, cat 1, dog 2)" {
            let dir = tempDir "formats-same"
            let j = write (Path.Combine(dir, "t.jsonl")) (rows |> List.map (fun (t, l) -> jsonLine t l) |> String.concat "\n")
            let c = write (Path.Combine(dir, "t.csv")) ("id,text,label\r\n" + (rows |> List.mapi (fun i (t, l) -> sprintf "%d,%s,%s" i (csvField t) l) |> String.concat "\r\n") + "\r\n")
            let oj = TextFileOptions(TrainFile = j, TestFile = j, MaxTokens = 16)
            let oc = TextFileOptions(TrainFile = c, TestFile = c, MaxTokens = 16)
            Expect.equal (List.ofSeq ((jsonl :?> TextFileSource).Classes oj)) [ "bird"; "cat"; "dog" ] "classes in ordinal order"
            let a, b = jsonl.Load(request oj), csv.Load(request oc)
            sameBatch "jsonl vs csv" a.Train b.Train
            Expect.equal (a.Train[Batch.Targets].data<int64>().ToArray()) [| 1L; 2L; 1L; 0L; 2L |] "label ids"
            // The first row's bytes, cut to 16 tokens (bytes: id = byte value).
            let first = a.Train[Batch.InputIds].select(0, 0L).data<int64>().ToArray()
            Expect.equal first (Encoding.UTF8.GetBytes("the cat sat, then \"napped\"")[..15] |> Array.map int64) "the text's bytes, cut to max_tokens"
            disposeSplits a; disposeSplits b
        }
        test "labels = \"ids\": integer labels (JSON numbers or strings, CSV text) are the class ids; C = 1 + the largest training id" {
            let dir = tempDir "formats-ids"
            let j = write (Path.Combine(dir, "t.jsonl")) "{\"text\": \"a\", \"label\": 2}\n{\"text\": \"b\", \"label\": \"0\"}\n\n{\"text\": \"c\", \"label\": 3}\n"
            let o = TextFileOptions(TrainFile = j, TestFile = j, Labels = "ids")
            let shape = jsonl.Shape(request o)
            Expect.equal shape.Classes 4 "C = 1 + 3"
            let s = jsonl.Load(request o)
            Expect.equal (s.Train[Batch.Targets].data<int64>().ToArray()) [| 2L; 0L; 3L |] "the ids themselves (the blank line skipped)"
            disposeSplits s
        }
        test "fortunes exported to JSONL (FormatExport) read back bitwise as the built-in reader's tensors: topic classification and causal language modelling, the validation split included" {
            let dir = tempDir "formats-fortunes"
            let fortunes = DataSources.Get "fortunes" :?> FortuneSource
            for task in [ "classify"; "causal-lm" ] do
                let fo = FortuneOptions(Task = task, Context = 64)
                let fk = DataKeys("fortunes", [||], 0.1, 32, 256, 0)
                let struct (train, validation, test) = FormatExport.FortunesJsonl(fortunes, fk, fo, 7L, Path.Combine(dir, task))
                let o = TextFileOptions(TrainFile = train, TestFile = test, ValidationFile = validation,
                                        Objective = task, MaxTokens = 64)
                let expected = fortunes.Load(DataRequest(fk, fo, 7L))
                let actual = jsonl.Load(request o)
                sameBatch (task + " train") actual.Train expected.Train
                sameBatch (task + " validation") actual.Validation expected.Validation
                sameBatch (task + " test") actual.Test expected.Test
                Expect.equal (actual.TrainUtf8Bytes, actual.TestUtf8Bytes) (expected.TrainUtf8Bytes, expected.TestUtf8Bytes) (task + ": the bytes behind the targets")
                if task = "classify" then
                    Expect.equal ((jsonl.Shape(request o)).Classes) ((fortunes.Shape(DataRequest(fk, fo, 7L))).Classes) "the same classes"
                disposeSplits expected; disposeSplits actual
        }
        test "fortunes exported to Parquet (FormatExport, Parquet.Net) read back bitwise as the built-in reader's tensors: topic classification and causal language modelling, the validation split included" {
            let dir = tempDir "formats-parquet"
            let fortunes = DataSources.Get "fortunes" :?> FortuneSource
            for task in [ "classify"; "causal-lm" ] do
                let fo = FortuneOptions(Task = task, Context = 64)
                let fk = DataKeys("fortunes", [||], 0.1, 32, 256, 0)
                let struct (train, validation, test) = FormatExport.FortunesParquet(fortunes, fk, fo, 7L, Path.Combine(dir, task))
                let o = TextFileOptions(TrainFile = train, TestFile = test, ValidationFile = validation, Objective = task, MaxTokens = 64)
                let expected = fortunes.Load(DataRequest(fk, fo, 7L))
                let actual = parquet.Load(request o)
                sameBatch (task + " train") actual.Train expected.Train
                sameBatch (task + " validation") actual.Validation expected.Validation
                sameBatch (task + " test") actual.Test expected.Test
                disposeSplits expected; disposeSplits actual
        }
        test "Parquet: a missing column, a null value and a file that is not Parquet are refused naming the file (and the row)" {
            let dir = tempDir "formats-parquet-bad"
            let p1 = Path.Combine(dir, "missing.parquet")
            FormatExport.WriteParquet(p1, [| struct ("body", [| "a"; "b" |] :> Collections.Generic.IReadOnlyList<string>); struct ("label", [| "x"; "y" |]) |])
            Expect.equal (refusal parquet (TextFileOptions(TrainFile = p1, TestFile = p1)))
                (sprintf "%s: no column \"text\" (it has: body, label)" p1) "a missing column"
            let p2 = Path.Combine(dir, "null.parquet")
            FormatExport.WriteParquet(p2, [| struct ("text", [| "a"; null; "c" |] :> Collections.Generic.IReadOnlyList<string>); struct ("label", [| "x"; "y"; "z" |]) |])
            Expect.equal (refusal parquet (TextFileOptions(TrainFile = p2, TestFile = p2)))
                (sprintf "%s, row 2: column \"text\" is null" p2) "a null"
            let p3 = write (Path.Combine(dir, "not.parquet")) "text,label\na,b\n"
            Expect.stringStarts (refusal parquet (TextFileOptions(TrainFile = p3, TestFile = p3)))
                (sprintf "%s: not a Parquet file Parquet.Net can read (" p3) "not Parquet"
        }
        test "the file sources' keys are their own, and their rules name the key: train_file and test_file required, a key of jsonl on fashion-mnist refused naming its sources, mean without std, resize of one number" {
            let errs = configErrors "[data]\ndataset = \"jsonl\"\n"
            Expect.contains errs "f.toml: data.train_file: \"\" names no file; the training file is required" (sprintf "train_file in %A" errs)
            Expect.contains errs "f.toml: data.test_file: \"\" names no file; the test file is required" "test_file"
            Expect.contains (configErrors "[data]\ndataset = \"fashion-mnist\"\ntrain_file = \"a\"\n")
                "f.toml: data.train_file: is a key of jsonl and csv and parquet, not of data.dataset \"fashion-mnist\"" "another source's key"
            let images = configErrors "[data]\ndataset = \"image-folder\"\nimage_root = \"x\"\nmean = [0.5]\nresize = [28]\n"
            Expect.contains images "f.toml: data.mean: [0.5] is given without std: give both, or neither (both measured on the training split)" (sprintf "mean alone in %A" images)
            Expect.contains images "f.toml: data.resize: [28] has 1 numbers; it is [height, width]" "resize"
            Expect.isEmpty (configErrors "[data]\ndataset = \"csv\"\ntrain_file = \"a.csv\"\ntest_file = \"b.csv\"\nobjective = \"instruct\"\n") "a valid csv section"
        }
        test "Parquet: an int32 label column with labels = \"ids\" gives the ids themselves (C = 1 + the largest), the texts as JSONL's" {
            let dir = tempDir "formats-parquet-ids"
            let p = Path.Combine(dir, "ids.parquet")
            writeIntLabels p [| "alpha"; "beta"; "gamma" |] [| 2; 0; 1 |]
            let j = write (Path.Combine(dir, "ids.jsonl")) "{\"text\": \"alpha\", \"label\": 2}\n{\"text\": \"beta\", \"label\": 0}\n{\"text\": \"gamma\", \"label\": 1}\n"
            let op = TextFileOptions(TrainFile = p, TestFile = p, Labels = "ids")
            Expect.equal (parquet.Shape(request op)).Classes 3 "C"
            let a = parquet.Load(request op)
            let b = jsonl.Load(request (TextFileOptions(TrainFile = j, TestFile = j, Labels = "ids")))
            Expect.equal (a.Train[Batch.Targets].data<int64>().ToArray()) [| 2L; 0L; 1L |] "the ids"
            sameBatch "parquet vs jsonl" a.Train b.Train
            disposeSplits a; disposeSplits b
        }
        test "a causal-LM run on the fortunes exported to JSONL gives bitwise the final losses and bits per byte of the same run on the built-in fortunes source" {
            let dir = tempDir "formats-same-run"
            let fortunes = DataSources.Get "fortunes" :?> FortuneSource
            let fo = FortuneOptions(Task = "causal-lm", Context = 32)
            let fk = DataKeys("fortunes", [||], 0.02, 16, 256, 0)
            let struct (train, validation, test) = FormatExport.FortunesJsonl(fortunes, fk, fo, 9L, Path.Combine(dir, "jsonl"))
            let common = "[data]\nvalidation_fraction = 0.02\ntrain_limit = 96\nbatch_size = 16\neval_batch_size = 256\n[model]\nkind = \"gpt\"\nwidth = 16\nlayers = 1\nheads = 2\n[optimizer]\nlr = 0.003\n[train]\nepochs = 1\n"
            let run (name: string) (data: string) =
                let path = write (Path.Combine(dir, name + ".toml")) (sprintf "[run]\nname = \"%s\"\nseed = 9\nthreads = 1\noutput_dir = \"%s\"\n%s" name (Path.Combine(dir, name)) (common.Replace("[data]\n", "[data]\n" + data)))
                Trainer.Run(ConfigLoader.Load path, Research.Core.Plugins.PluginHost.Load([]))
            let a = run "builtin" "dataset = \"fortunes\"\ntask = \"causal-lm\"\ncontext = 32\n"
            let b = run "jsonl" (sprintf "dataset = \"jsonl\"\nobjective = \"causal-lm\"\nmax_tokens = 32\ntrain_file = \"%s\"\nvalidation_file = \"%s\"\ntest_file = \"%s\"\n" train validation test)
            Expect.containsAll a.Final.Keys [ "val"; "test" ] "the final evaluation's splits"
            Expect.equal (set b.Final.Keys) (set a.Final.Keys) "the same splits"
            for split in a.Final.Keys do
                Expect.isGreaterThan a.Final[split].Items 0L (split + ": items")
                Expect.equal (b.Final[split].Loss) (a.Final[split].Loss) (split + ": the loss, bitwise")
                Expect.equal (b.Final[split].Items) (a.Final[split].Items) (split + ": the items")
                Expect.equal (b.Final[split].BitsPerByte.ToString("R")) (a.Final[split].BitsPerByte.ToString("R")) (split + ": bits per byte")
        }
        test "instruction tuning: targets are −100 on the opening end-of-text, the prompt and padding, the ids elsewhere; the causal-LM loss (Σℓ / N) equals the mean cross-entropy over a hand-counted response-token mask (rel. 1e-6)" {
            let dir = tempDir "formats-instruct"
            let pairs = [ "Q: two plus two?\nA: ", "four"; "Say hi: ", "hello there"; "x", "yz" ]
            let j = write (Path.Combine(dir, "sft.jsonl")) (pairs |> List.map (fun (p, r) -> Text.Json.JsonSerializer.Serialize(dict [ "prompt", p; "response", r ])) |> String.concat "\n")
            let o = TextFileOptions(TrainFile = j, TestFile = j, Objective = "instruct", MaxTokens = 64)
            let s = jsonl.Load(request o)
            let ids, targets = s.Train[Batch.InputIds], s.Train[Batch.Targets]
            let t = int ids.shape[1]
            // Hand count: bytes tokenizer, so a text of n bytes is n tokens; row = EOT prompt response EOT.
            let eot = int64 (ByteTokenizer().EndOfTextId)
            let mask = Array2D.zeroCreate<bool> pairs.Length t
            pairs |> List.iteri (fun i (p, r) ->
                let np, nr = Encoding.UTF8.GetByteCount p, Encoding.UTF8.GetByteCount r
                for j in 1 + np .. 1 + np + nr do mask[i, j] <- true   // the response's tokens and the closing EOT
                Expect.equal (ids.select(0, int64 i).select(0, 0L).item<int64>()) eot (sprintf "row %d opens with end-of-text" i))
            Expect.equal t (pairs |> List.map (fun (p, r) -> 2 + Encoding.UTF8.GetByteCount p + Encoding.UTF8.GetByteCount r) |> List.max) "T: the longest row"
            for i in 0 .. pairs.Length - 1 do
                for j in 0 .. t - 1 do
                    let target = targets[int64 i, int64 j].item<int64>()
                    if mask[i, j] then Expect.equal target (ids[int64 i, int64 j].item<int64>()) (sprintf "row %d position %d counts" i j)
                    else Expect.equal target Batch.IgnoreIndex (sprintf "row %d position %d does not count" i j)
            // The loss the trainer takes against the hand mask's.
            use g = new torch.Generator(5UL)
            let v = 257L
            use logits = torch.randn([| int64 pairs.Length; int64 t; v |], generator = g)
            let batch = s.Train
            let task = CausalLmTask()
            use sum = task.LossSum(logits, batch)
            let loss = sum.item<float32>() |> float
            let n = task.Items batch
            use logp = torch.nn.functional.log_softmax(logits.to_type(torch.float64), 2L)
            let mutable hand, count = 0.0, 0
            for i in 0 .. pairs.Length - 1 do
                for j in 1 .. t - 1 do
                    if mask[i, j] then
                        // position j − 1 predicts the token at j
                        hand <- hand - logp[int64 i, int64 (j - 1), ids[int64 i, int64 j].item<int64>()].item<float>()
                        count <- count + 1
            Expect.equal n (int64 count) "N: the response tokens and each closing end-of-text"
            Expect.equal count (pairs |> List.sumBy (fun (_, r) -> Encoding.UTF8.GetByteCount r + 1)) "the hand count"
            Expect.floatClose { absolute = 0.0; relative = 1e-6 } (loss / float n) (hand / float count) "Σℓ / N = the hand mask's mean cross-entropy"
            Expect.equal s.TrainUtf8Bytes (int64 count) "bits per byte: the response bytes and one per end"
            disposeSplits s
        }
        test "a record of another file whose label the training file lacks is refused naming the file and its line" {
            let dir = tempDir "formats-label"
            let train = write (Path.Combine(dir, "train.jsonl")) "{\"text\": \"a\", \"label\": \"cat\"}\n{\"text\": \"b\", \"label\": \"dog\"}\n"
            let test = write (Path.Combine(dir, "test.jsonl")) "{\"text\": \"a\", \"label\": \"cat\"}\n{\"text\": \"b\", \"label\": \"cow\"}\n"
            Expect.equal (refusal jsonl (TextFileOptions(TrainFile = train, TestFile = test)))
                (sprintf "%s, line 2: label \"cow\" is not a class of the training file %s (its classes: cat, dog)" test train) "the message"
        }
        test "a label that is not a class id is refused naming the file and its line (labels = \"ids\")" {
            let dir = tempDir "formats-badid"
            let c = write (Path.Combine(dir, "t.csv")) "text,label\nok,1\nbad,-2\n"
            Expect.equal (refusal csv (TextFileOptions(TrainFile = c, TestFile = c, Labels = "ids")))
                (sprintf "%s, line 3: label \"-2\" is not a class id (labels = \"ids\": a non-negative integer)" c) "the message"
        }
        test "a JSONL record without a column is refused naming the file, the line and the fields it has" {
            let dir = tempDir "formats-missing-json"
            let j = write (Path.Combine(dir, "t.jsonl")) "{\"text\": \"a\", \"label\": \"x\"}\n{\"body\": \"b\", \"label\": \"y\"}\n"
            Expect.equal (refusal jsonl (TextFileOptions(TrainFile = j, TestFile = j)))
                (sprintf "%s, line 2: no field \"text\" (it has: body, label)" j) "the message"
        }
        test "a CSV header without a column is refused naming the file and line 1" {
            let dir = tempDir "formats-missing-csv"
            let c = write (Path.Combine(dir, "t.csv")) "prompt,answer\nq,a\n"
            Expect.equal (refusal csv (TextFileOptions(TrainFile = c, TestFile = c, Objective = "instruct")))
                (sprintf "%s, line 1 (the header): no column \"response\" (it has: prompt, answer)" c) "the message"
        }
        test "a ragged CSV record (more or fewer fields than the header) is refused naming the file and the line it starts on" {
            let dir = tempDir "formats-ragged"
            let c = write (Path.Combine(dir, "t.csv")) "text,label\n\"two\nlines\",a\nshort\n"
            Expect.equal (refusal csv (TextFileOptions(TrainFile = c, TestFile = c)))
                (sprintf "%s, line 4: 1 field(s), the header has 2" c) "fewer fields (line 4: the quoted line break counts)"
            let c2 = write (Path.Combine(dir, "t2.csv")) "text,label\na,b,c\n"
            Expect.equal (refusal csv (TextFileOptions(TrainFile = c2, TestFile = c2)))
                (sprintf "%s, line 2: 3 field(s), the header has 2" c2) "more fields"
        }
        test "a line that is not JSON, one that is not an object, and a field of the wrong kind are refused naming the file and the line" {
            let dir = tempDir "formats-badjson"
            let j = write (Path.Combine(dir, "t.jsonl")) "{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\", \"label\": \n"
            let m = refusal jsonl (TextFileOptions(TrainFile = j, TestFile = j))
            Expect.stringStarts m (sprintf "%s, line 2: not JSON (" j) "not JSON"
            Expect.isFalse (m.Contains "\n") "one line"
            let j2 = write (Path.Combine(dir, "t2.jsonl")) "[1, 2]\n"
            Expect.equal (refusal jsonl (TextFileOptions(TrainFile = j2, TestFile = j2)))
                (sprintf "%s, line 1: a JSON array, not an object (each line of a JSONL file is one object)" j2) "not an object"
            let j3 = write (Path.Combine(dir, "t3.jsonl")) "{\"text\": 5, \"label\": \"x\"}\n"
            Expect.equal (refusal jsonl (TextFileOptions(TrainFile = j3, TestFile = j3)))
                (sprintf "%s, line 1: field \"text\" is a JSON number, not a string" j3) "a number for text"
        }
        test "an instruction whose prompt fills max_tokens is refused naming the file and the line" {
            let dir = tempDir "formats-long-prompt"
            let j = write (Path.Combine(dir, "t.jsonl")) "{\"prompt\": \"ab\", \"response\": \"c\"}\n{\"prompt\": \"abcdefgh\", \"response\": \"c\"}\n"
            Expect.equal (refusal jsonl (TextFileOptions(TrainFile = j, TestFile = j, Objective = "instruct", MaxTokens = 8)))
                (sprintf "%s, line 2: the prompt is 8 tokens, which leaves no room for the response within max_tokens = 8" j) "the message"
        }
        test "research train on a bad JSONL file prints one line naming the file and the line (exit 2, no stack trace)" {
            let dir = tempDir "formats-cli"
            let j = write (Path.Combine(dir, "t.jsonl")) "{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\", \"label\": \"y\"}\n{oops}\n"
            let config = write (Path.Combine(dir, "c.toml")) (sprintf "[run]\noutput_dir = \"%s\"\n[data]\ndataset = \"jsonl\"\ntrain_file = \"%s\"\ntest_file = \"%s\"\n[model]\nkind = \"gpt\"\nwidth = 8\nlayers = 1\nheads = 1\n" (Path.Combine(dir, "runs")) j j)
            let r = researchInProcess [ "train"; config ]
            Expect.equal r.ExitCode 2 (sprintf "exit code (%s)" r.Err)
            let lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            Expect.equal lines.Length 1 (sprintf "one line: %s" r.Err)
            Expect.stringStarts lines[0] (sprintf "error: %s, line 3: not JSON (" j) "the line names the file and the line"
        }
        test "a 2-task split-class study on a JSONL file written here trains by name ([data] dataset = \"jsonl\"): tasks of classes 0-1 and 2-3, a 2 × 2 matrix, each task learned (R[i][i] > 0.9)" {
            let dir = tempDir "formats-study"
            let rng = Random(3)
            let words = [| "apple"; "berry"; "cocoa"; "dates" |]
            let lines n =
                [ for _ in 1 .. n do
                    let c = rng.Next 4
                    let filler = String.init (rng.Next(1, 4)) (fun _ -> "xy ")
                    yield jsonLine (words[c] + " " + filler) words[c] ] |> String.concat "\n"
            let train = write (Path.Combine(dir, "train.jsonl")) (lines 400)
            let test = write (Path.Combine(dir, "test.jsonl")) (lines 100)
            let config =
                write (Path.Combine(dir, "study.toml"))
                    (sprintf "[run]\nname = \"jsonl-study\"\nseed = 5\nthreads = 1\noutput_dir = \"%s\"\n[data]\ndataset = \"jsonl\"\ntrain_file = \"%s\"\ntest_file = \"%s\"\nmax_tokens = 16\nbatch_size = 16\n[model]\nkind = \"gpt\"\nwidth = 16\nlayers = 1\nheads = 2\n[optimizer]\nlr = 0.01\n[train]\nepochs = 6\n[study]\nbenchmark = \"split-class\"\n"
                        (Path.Combine(dir, "runs")) train test)
            let o = Trainer.Run(ConfigLoader.Load config, Research.Core.Plugins.PluginHost.Load([]), kind = RunKind.Study)
            Expect.equal (List.ofSeq o.Record.Tasks) [ "classes 0-1"; "classes 2-3" ] "two tasks of two classes"
            Expect.equal (o.Record.Accuracy |> Array.map Array.length) [| 2; 2 |] "the task × task matrix"
            for i in 0 .. 1 do Expect.isGreaterThan (o.Record.Accuracy[i][i]) 0.9 (sprintf "task %d learned" i)
        }
        test "Fashion-MNIST exported to PNG by scripts/export-formats.sh (PIL) reads back bitwise as the built-in reader's tensors (first 300 of each split, in class-major order), with its mean and std; the classes are the folder names in order" {
            let dir = tempDir "formats-fashion"
            let root = exportFashion dir 300
            let o = ImageFolderOptions(ImageRoot = root, Mean = [| float FashionMnist.PixelMean |], Std = [| float FashionMnist.PixelStd |])
            let shape = imageFolder.Shape(request o)
            Expect.equal (shape.Input, shape.Features, shape.Classes, shape.ImageSide, shape.ImageChannels) (InputKind.Images, 784L, 10, 28, 1) "the shape"
            let struct (train, test) = FashionMnist.Load(FashionMnist.ResolveDirectory "")
            let s = imageFolder.Load(request o)
            for name, (expected: TensorDataset), (actual: Batch) in [ "train", train, s.Train; "test", test, s.Test ] do
                let labels = expected.Targets.narrow(0, 0L, 300L).data<int64>().ToArray()
                // The folder's order: by class, then by file name (the item's index): a stable sort by label.
                let order = [| 0L .. 299L |] |> Array.toList |> List.sortBy (fun i -> labels[int i]) |> Array.ofList
                use idx = torch.tensor(order)
                use x = expected.Inputs.index_select(0L, idx)
                use y = expected.Targets.index_select(0L, idx)
                Expect.isTrue (sameTensor actual[Batch.Input] x) (name + ": input bitwise the IDX reader's")
                Expect.isTrue (sameTensor actual[Batch.Targets] y) (name + ": labels")
            train.Dispose(); test.Dispose(); disposeSplits s
        }
        test "RGB: PIL's pixels land channel-major (c·H·W + y·W + x) as value / 255 with mean 0 and std 1; measured normalisation gives the training split mean 0 and std 1 per channel (1e-5); a folder without train/test holds out ⌈0.2·n⌉ images of each class" {
            let dir = tempDir "formats-rgb"
            let root = Path.Combine(dir, "rgb")
            pil dir (sprintf "import os\nfor c in ['a', 'b']:\n    os.makedirs(os.path.join(%A, c), exist_ok=True)\n    for i in range(5):\n        im = Image.new('RGB', (3, 2))\n        im.putdata([((10*i + x) %% 256, (40 + x*y + i) %% 256, (200 - i*x) %% 256) for y in range(2) for x in range(3)] if c == 'a' else [(i, 2*i, 3*i)] * 6)\n        im.save(os.path.join(%A, c, f'{i}.png'))\n" root root)
            let o = ImageFolderOptions(ImageRoot = root, Color = "rgb", Mean = [| 0.0; 0.0; 0.0 |], Std = [| 1.0; 1.0; 1.0 |])
            let s = imageFolder.Load(request o)
            Expect.equal (s.Train.Size, s.Test.Size) (8L, 2L) "⌈0.2 · 5⌉ = 1 test image of each class"
            let x = s.Train[Batch.Input]
            Expect.equal x.shape [| 8L; 18L |] "[N, 3·2·3]"
            // Every class-a training image is one of i = 0..4: find i from its red (0, 0) value, then check every pixel.
            let ys = s.Train[Batch.Targets].data<int64>().ToArray()
            for n in 0 .. 7 do
                if ys[n] = 0L then
                    let v (c: int) (y: int) (xx: int) = x[int64 n, int64 (c * 6 + y * 3 + xx)].item<float32>()
                    let i = int (Math.Round(float (v 0 0 0) * 255.0)) / 10
                    for y in 0 .. 1 do
                        for xx in 0 .. 2 do
                            let rgb = [| (10 * i + xx) % 256; (40 + xx * y + i) % 256; (200 - i * xx) % 256 |]
                            for c in 0 .. 2 do Expect.equal (v c y xx) (float32 rgb[c] / 255.0f) (sprintf "image %d channel %d at (%d, %d)" i c y xx)
            disposeSplits s
            let measured = imageFolder.Load(request (ImageFolderOptions(ImageRoot = root, Color = "rgb")))
            use perChannel = measured.Train[Batch.Input].to_type(torch.float64).view(8L, 3L, 6L).transpose(0L, 1L).reshape(3L, -1L)
            for c in 0L .. 2L do
                Expect.floatClose { absolute = 1e-5; relative = 0.0 } (perChannel[c].mean().item<float>()) 0.0 (sprintf "channel %d mean" c)
                Expect.floatClose { absolute = 1e-5; relative = 0.0 } (perChannel[c].std(unbiased = false).item<float>()) 1.0 (sprintf "channel %d std" c)
            disposeSplits measured
        }
        test "resize: a 4×4 grey image resized to [2, 2] is the mean of each 2×2 block (bilinear, align_corners false, at scale 2)" {
            let dir = tempDir "formats-resize"
            let root = Path.Combine(dir, "r")
            pil dir (sprintf "import os\nfor c in ['a', 'b']:\n    os.makedirs(os.path.join(%A, 'train', c), exist_ok=True)\n    os.makedirs(os.path.join(%A, 'test', c), exist_ok=True)\n    im = Image.new('L', (4, 4))\n    im.putdata([16*y + 2*x for y in range(4) for x in range(4)])\n    im.save(os.path.join(%A, 'train', c, '0.png'))\n    im.save(os.path.join(%A, 'test', c, '0.png'))\n" root root root root)
            let s = imageFolder.Load(request (ImageFolderOptions(ImageRoot = root, Resize = [| 2; 2 |], Mean = [| 0.0 |], Std = [| 1.0 |])))
            let got = s.Train[Batch.Input].select(0L, 0L).data<float32>().ToArray()
            // Block (by, bx) holds 16·y + 2·x for y ∈ {2by, 2by+1}, x ∈ {2bx, 2bx+1}: mean 16·(2by + 0.5) + 2·(2bx + 0.5).
            let expected = [| for by in 0 .. 1 do for bx in 0 .. 1 do yield float32 (Math.Round(16.0 * (2.0 * float by + 0.5) + 2.0 * (2.0 * float bx + 0.5))) / 255.0f |]
            Expect.equal got expected "the block means, rounded to bytes"
            disposeSplits s
        }
        test "an image that cannot be decoded is refused naming its file" {
            let dir = tempDir "formats-badimage"
            let root = exportFashion dir 100
            let bad = Directory.GetFiles(Path.Combine(root, "test"), "*.png", SearchOption.AllDirectories) |> Array.sort |> Array.head
            File.WriteAllBytes(bad, Encoding.ASCII.GetBytes "this is not a PNG")
            let m = imageRefusal (ImageFolderOptions(ImageRoot = root))
            Expect.stringStarts m (bad + ": not an image StbImageSharp can decode") "the message names the file"
            Expect.isFalse (m.Contains "\n") "one line"
        }
        test "an image of another size (no resize) and a class folder the training folder lacks are refused naming the file and the folder" {
            let dir = tempDir "formats-badsize"
            let root = exportFashion dir 100
            let victim = Directory.GetFiles(Path.Combine(root, "test"), "*.png", SearchOption.AllDirectories) |> Array.sort |> Array.head
            pil dir (sprintf "Image.new('L', (30, 28)).save(%A)\n" victim)
            Expect.equal (imageRefusal (ImageFolderOptions(ImageRoot = root)))
                (sprintf "%s: 30×28 pixels, the first training image is 28×28: set data.resize = [height, width]" victim) "the size"
            File.Delete victim
            let extra = Path.Combine(root, "test", "boots")
            Directory.CreateDirectory extra |> ignore
            Expect.equal (imageRefusal (ImageFolderOptions(ImageRoot = root)))
                (sprintf "%s: class folder \"boots\" is not a class of the training folder (its classes: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9)" extra) "the folder"
        }
        test "a 2-task split-class study on an image folder (Fashion-MNIST classes 0-3 exported by the script) trains by name ([data] dataset = \"image-folder\"): a 2 × 2 matrix, each task learned (R[i][i] > 0.8)" {
            let dir = tempDir "formats-image-study"
            let root = exportFashion dir 600
            for split in [ "train"; "test" ] do
                for c in 4 .. 9 do Directory.Delete(Path.Combine(root, split, string c), true)
            let config =
                write (Path.Combine(dir, "study.toml"))
                    (sprintf "[run]\nname = \"images\"\nseed = 5\nthreads = 1\noutput_dir = \"%s\"\n[data]\ndataset = \"image-folder\"\nimage_root = \"%s\"\nbatch_size = 32\n[model]\nhidden = [64]\n[optimizer]\nlr = 0.003\n[train]\nepochs = 5\n[study]\nbenchmark = \"split-class\"\n"
                        (Path.Combine(dir, "runs")) root)
            let o = Trainer.Run(ConfigLoader.Load config, Research.Core.Plugins.PluginHost.Load([]), kind = RunKind.Study)
            Expect.equal (List.ofSeq o.Record.Tasks) [ "classes 0-1"; "classes 2-3" ] "two tasks of two classes"
            Expect.equal (o.Record.Accuracy |> Array.map Array.length) [| 2; 2 |] "the task × task matrix"
            for i in 0 .. 1 do Expect.isGreaterThan (o.Record.Accuracy[i][i]) 0.8 (sprintf "task %d learned" i)
        }
    ]
