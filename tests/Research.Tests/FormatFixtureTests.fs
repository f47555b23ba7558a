/// Fixtures of the file formats written by independent tools (issue 30): CSV and JSONL by pandas (Debian's
/// python3-pandas), pre-tokenized Parquet rows (Hugging Face's input_ids and labels), the Llama-family reference in numpy
/// float64 reading our export, and a study on Fashion-MNIST exported to an image folder by PIL.
module Research.Tests.FormatFixtureTests

open System
open System.IO
open System.Text
open Expecto
open Research.Abstractions
open Research.Core
open Research.Core.Config
open Research.Core.Data
open Research.Core.Models
open Research.Core.Models.Kinds
open Research.Core.Tasks
open Research.Core.Text
open Research.Core.Training
open Research.Tests.TestSupport
open TorchSharp

let private request = FormatSourceTests.request
let private write = FormatSourceTests.write
let private sameBatch = FormatSourceTests.sameBatch
let private disposeSplits = FormatSourceTests.disposeSplits
let private refusal = FormatSourceTests.refusal
let private configErrors = FormatSourceTests.configErrors

let private jsonl = DataSources.Get "jsonl"
let private csv = DataSources.Get "csv"
let private parquet = DataSources.Get "parquet"

/// Runs a Python snippet with Debian's python3 and pandas (build.sh's test packages install python3-pandas).
let private pandas (dir: string) (script: string) =
    let r = runProcess dir "/usr/bin/python3" [ "-c"; "import json\nimport pandas as pd\n" + script ]
    if r.ExitCode <> 0 then failtestf "python3 with pandas failed (%d): %s" r.ExitCode r.Err
    r.Out

/// Records as a JSON list of objects, the way the test hands them to pandas (json.load, then pd.DataFrame).
let private recordsJson (columns: string list) (rows: string list list) =
    Text.Json.JsonSerializer.Serialize(rows |> List.map (fun r -> dict (List.zip columns r)))

/// What CSV must quote (a comma, quotes, a line break), a tab and a slash (pandas' JSON escapes it as \/), leading and
/// trailing spaces, non-ASCII letters, CJK and an emoji outside the BMP (a surrogate pair in ASCII-escaped JSON).
let private texts =
    [ "the cat sat, then \"napped\""; "dogs bark\nat night"; "Möwe über dem Meer — 海鸥 🐦"; "a/b path\twith 'quotes'"
      "  spaced out  "; "plain words"; "\"quoted\" start"; "end, with comma," ]
let private labels = [ "cat"; "dog"; "bird, sea"; "cat"; "dog"; "Möwe"; "cat"; "bird, sea" ]
let private prompts = texts |> List.mapi (fun i t -> sprintf "Q%d: %s?\n" i (t.Substring(0, min 6 t.Length)))

let private handJsonl (columns: string list) (rows: string list list) =
    rows |> List.map (fun r -> Text.Json.JsonSerializer.Serialize(dict (List.zip columns r))) |> String.concat "\n"

let private csvField (s: string) = "\"" + s.Replace("\"", "\"\"") + "\""

let private handCsv (columns: string list) (rows: string list list) =
    (String.concat "," columns) + "\r\n" + (rows |> List.map (fun r -> r |> List.map csvField |> String.concat ",") |> String.concat "\r\n") + "\r\n"

/// The three objectives' columns and rows.
let private tables =
    [ "classify", [ "text"; "label" ], List.map2 (fun t l -> [ t; l ]) texts labels
      "causal-lm", [ "text" ], texts |> List.map (fun t -> [ t ])
      "instruct", [ "prompt"; "response" ], List.map2 (fun p t -> [ p; t ]) prompts texts ]

/// pandas writes DIR/NAME.csv (to_csv, index=False), NAME.jsonl (to_json records lines, force_ascii=False) and
/// NAME-ascii.jsonl (force_ascii=True) of the DataFrame of these records.
let private pandasWrite (dir: string) (name: string) (columns: string list) (rows: string list list) =
    let src = write (Path.Combine(dir, name + ".json")) (recordsJson columns rows)
    pandas dir (sprintf "df = pd.DataFrame(json.load(open(%A, encoding='utf-8')))\ndf.to_csv(%A, index=False)\ndf.to_json(%A, orient='records', lines=True, force_ascii=False)\ndf.to_json(%A, orient='records', lines=True, force_ascii=True)\n"
                    src (name + ".csv") (name + ".jsonl") (name + "-ascii.jsonl")) |> ignore
    Path.Combine(dir, name + ".csv"), Path.Combine(dir, name + ".jsonl"), Path.Combine(dir, name + "-ascii.jsonl")

let private pandasTests =
    testList "pandas" [
        test "pandas' CSV (to_csv), JSONL (to_json lines, force_ascii False) and ASCII-escaped JSONL of one DataFrame read back bitwise as the same records written here by hand, CSV and JSONL alike (classify, causal-lm, instruct; quotes, commas, line breaks, tabs, slashes, non-ASCII, an emoji)" {
            let dir = tempDir "fixtures-pandas"
            for objective, columns, rows in tables do
                let pc, pj, pa = pandasWrite dir objective columns rows
                let hj = write (Path.Combine(dir, objective + "-hand.jsonl")) (handJsonl columns rows)
                let hc = write (Path.Combine(dir, objective + "-hand.csv")) (handCsv columns rows)
                // pandas' files are its own, not ours: minimal quoting, \/ and \uXXXX escapes, raw UTF-8.
                let csvText, jsonText, asciiText = File.ReadAllText pc, File.ReadAllText pj, File.ReadAllText pa
                Expect.notEqual csvText (File.ReadAllText hc) (objective + ": pandas' CSV differs from ours as text")
                Expect.stringContains csvText "\"\"napped\"\"" (objective + ": pandas doubles the quotes of a quoted field")
                Expect.stringContains csvText "\"dogs bark\nat night\"" (objective + ": pandas quotes the line break")
                Expect.stringContains jsonText "a\\/b" (objective + ": pandas escapes the slash")
                Expect.stringContains jsonText "海鸥 🐦" (objective + ": force_ascii=False writes UTF-8")
                Expect.stringContains asciiText "\\ud83d\\udc26" (objective + ": force_ascii=True writes the emoji as a surrogate pair")
                Expect.isTrue (asciiText |> Seq.forall (fun c -> int c < 128)) (objective + ": force_ascii=True writes ASCII only")
                let options file = TextFileOptions(TrainFile = file, TestFile = file, Objective = objective, MaxTokens = 40)
                let expected = jsonl.Load(request (options hj))
                for source, file, what in [ csv, hc, "our CSV"; csv, pc, "pandas' CSV"; jsonl, pj, "pandas' JSONL"; jsonl, pa, "pandas' ASCII JSONL" ] do
                    let actual = source.Load(request (options file))
                    sameBatch (sprintf "%s: %s vs our JSONL" objective what) actual.Train expected.Train
                    Expect.equal actual.TrainUtf8Bytes expected.TrainUtf8Bytes (sprintf "%s: %s: the bytes behind the targets" objective what)
                    disposeSplits actual
                if objective = "classify" then
                    Expect.equal (List.ofSeq ((csv :?> TextFileSource).Classes(options pc))) [ "Möwe"; "bird, sea"; "cat"; "dog" ] "the classes in ordinal (UTF-16 code unit) order: capitals first, as Python's sorted"
                disposeSplits expected
        }

        test "pandas' integer label column (CSV text, JSON numbers) with labels = \"ids\" gives the ids themselves, CSV and JSONL bitwise alike" {
            let dir = tempDir "fixtures-pandas-ids"
            pandas dir "df = pd.DataFrame({'text': ['a b', 'c, d', 'e\\nf', 'g'], 'label': [2, 0, 3, 0]})\ndf.to_csv('t.csv', index=False)\ndf.to_json('t.jsonl', orient='records', lines=True)\n" |> ignore
            Expect.stringContains (File.ReadAllText(Path.Combine(dir, "t.jsonl"))) "\"label\":2" "a JSON number"
            let options file = TextFileOptions(TrainFile = Path.Combine(dir, file), TestFile = Path.Combine(dir, file), Labels = "ids")
            let a, b = csv.Load(request (options "t.csv")), jsonl.Load(request (options "t.jsonl"))
            Expect.equal (a.Train[Batch.Targets].data<int64>().ToArray()) [| 2L; 0L; 3L; 0L |] "the ids"
            Expect.equal (csv.Shape(request (options "t.csv"))).Classes 4 "C = 1 + 3"
            sameBatch "csv vs jsonl" a.Train b.Train
            disposeSplits a; disposeSplits b
        }

        test "pandas-written bad rows are refused naming the file and the row: a missing label (JSON null; an empty CSV field with labels = \"ids\"), a number for a text, a fractional label id" {
            let dir = tempDir "fixtures-pandas-bad"
            pandas dir (String.concat "\n" [
                "df = pd.DataFrame({'text': ['a', 'b', 'c'], 'label': pd.Series([1, None, 0], dtype='Int64')})"
                "df.to_csv('missing.csv', index=False)"
                "df.to_json('missing.jsonl', orient='records', lines=True)"
                "df = pd.DataFrame({'text': ['a', 'b', 42], 'label': ['x', 'y', 'x']})"
                "df.to_json('number.jsonl', orient='records', lines=True)"
                "df = pd.DataFrame({'text': ['a', 'b'], 'label': [1.0, 1.5]})"
                "df.to_csv('fraction.csv', index=False)"
                "df.to_json('fraction.jsonl', orient='records', lines=True)"
                "" ]) |> ignore
            let f name = Path.Combine(dir, name)
            let o name labelsAs = TextFileOptions(TrainFile = f name, TestFile = f name, Labels = labelsAs)
            Expect.equal (File.ReadAllLines(f "missing.jsonl")[1]) "{\"text\":\"b\",\"label\":null}" "pandas writes the missing label as null"
            Expect.equal (refusal jsonl (o "missing.jsonl" "names")) (sprintf "%s, line 2: field \"label\" is a JSON null, not a string or a number" (f "missing.jsonl")) "JSONL: a null label"
            Expect.equal (File.ReadAllLines(f "missing.csv")[2]) "b," "pandas writes the missing label as an empty field"
            Expect.equal (refusal csv (o "missing.csv" "ids")) (sprintf "%s, line 3: label \"\" is not a class id (labels = \"ids\": a non-negative integer)" (f "missing.csv")) "CSV: an empty label id"
            Expect.equal (refusal jsonl (o "number.jsonl" "names")) (sprintf "%s, line 3: field \"text\" is a JSON number, not a string" (f "number.jsonl")) "JSONL: a number for a text"
            Expect.equal (refusal csv (o "fraction.csv" "ids")) (sprintf "%s, line 2: label \"1.0\" is not a class id (labels = \"ids\": a non-negative integer)" (f "fraction.csv")) "CSV: a float label column"
            Expect.equal (refusal jsonl (o "fraction.jsonl" "ids")) (sprintf "%s, line 1: label \"1.0\" is not a class id (labels = \"ids\": a non-negative integer)" (f "fraction.jsonl")) "JSONL: a float label"
        }
    ]

// ---------------------------------------------------------------------------------------------------------------------
// Pre-tokenized rows: Parquet list<int> columns (and JSON arrays) of token ids.

/// A Parquet file of list-of-integer columns (the 3-level LIST layout pyarrow writes), through Parquet.Net's untyped
/// serializer: input_ids as int32 lists (as Hugging Face's tokenized datasets hold them), labels as int64 lists.
let private writeIdsParquet (path: string) (columns: (string * int64[][]) list) =
    let field (name: string) =
        if name = "labels" then Parquet.Schema.ListField(name, Parquet.Schema.DataField<int64>("element")) :> Parquet.Schema.Field
        else Parquet.Schema.ListField(name, Parquet.Schema.DataField<int>("element")) :> Parquet.Schema.Field
    let schema = Parquet.Schema.ParquetSchema(columns |> List.map (fst >> field) |> Array.ofList)
    let n = (snd columns.Head).Length
    let rows =
        [| for i in 0 .. n - 1 ->
            let d = Collections.Generic.Dictionary<string, obj>()
            for name, values in columns do
                d[name] <- (if isNull values[i] then null elif name = "labels" then box values[i] else box (values[i] |> Array.map int))
            d :> Collections.Generic.IDictionary<string, obj> |]
    use stream = File.Create path
    Parquet.Serialization.ParquetSerializer.SerializeUntypedAsync(rows, schema, stream).GetAwaiter().GetResult()

let private idsJsonl (path: string) (columns: (string * int64[][]) list) =
    let n = (snd columns.Head).Length
    write path ([ for i in 0 .. n - 1 -> Text.Json.JsonSerializer.Serialize(dict [ for name, v in columns -> name, v[i] ]) ] |> String.concat "\n")

/// The fortunes' causal-LM split exported to JSONL (seed 7), each file cut to its first 400 records (the test's time
/// goes to the gpt2 tokenizer).
let private fortunesExport (dir: string) =
    let fortunes = DataSources.Get "fortunes" :?> FortuneSource
    let fo = FortuneOptions(Task = "causal-lm", Context = 64)
    let fk = DataKeys("fortunes", [||], 0.1, 32, 256, 0)
    let struct (train, validation, test) = FormatExport.FortunesJsonl(fortunes, fk, fo, 7L, dir)
    [ train; validation; test ] |> List.map (fun f -> write f ((File.ReadLines f |> Seq.truncate 400 |> String.concat "\n") + "\n"))

let private textsOf (file: string) =
    let o = TextFileOptions(TrainFile = file, TestFile = file, Objective = "causal-lm")
    (jsonl :?> TextFileSource).Records(file, o) |> Seq.map (fun r -> r["text"]) |> List.ofSeq

let private tokenIdTests =
    testList "token ids" [
        test "the fortunes' token ids in Parquet (input_ids, list<int32>) and in JSONL (arrays) read back as causal-lm bitwise as the text path's tensors of the same texts (gpt2 tokenizer; train, validation and test)" {
            let dir = tempDir "fixtures-ids-lm"
            let files = fortunesExport (Path.Combine(dir, "text"))
            let textOptions (f: string list) = TextFileOptions(TrainFile = f[0], ValidationFile = f[1], TestFile = f[2], Objective = "causal-lm", TextTokenizer = "gpt2", MaxTokens = 64)
            let tokenizer = jsonl.Tokenizer(request (textOptions files))
            let idFiles ext =
                files |> List.map (fun file ->
                    let ids = textsOf file |> List.map (fun t -> tokenizer.Encode t |> Array.map int64) |> Array.ofList
                    let path = Path.Combine(dir, Path.GetFileNameWithoutExtension file + ext)
                    if ext = ".parquet" then writeIdsParquet path [ "input_ids", ids ] else idsJsonl path [ "input_ids", ids ] |> ignore
                    path)
            let expected = jsonl.Load(request (textOptions files))
            Expect.isTrue (expected.Train[Batch.InputIds].max().item<int64>() > 255L) "ids beyond a byte (gpt2)"
            for source, ext in [ parquet, ".parquet"; jsonl, ".ids.jsonl" ] do
                let f = idFiles ext
                let o = TextFileOptions(TrainFile = f[0], ValidationFile = f[1], TestFile = f[2], Objective = "causal-lm", TextTokenizer = "gpt2", MaxTokens = 64, InputIdsColumn = "input_ids")
                let actual = source.Load(request o)
                sameBatch (ext + " train") actual.Train expected.Train
                sameBatch (ext + " validation") actual.Validation expected.Validation
                sameBatch (ext + " test") actual.Test expected.Test
                Expect.equal actual.TrainUtf8Bytes 0L (ext + ": no bytes behind token ids (bits per byte not reported)")
                disposeSplits actual
            disposeSplits expected
        }

        test "instruction pairs as token ids (input_ids with [EOT] prompt response [EOT], labels −100 on [EOT] and the prompt, Hugging Face's convention) in Parquet read back bitwise as the text path's prompt/response rows, padded and packed (fortunes: prompt = the topic, response = the fortune)" {
            let dir = tempDir "fixtures-ids-instruct"
            let files = fortunesExport (Path.Combine(dir, "text"))
            let classify = TextFileOptions(TrainFile = files[0], TestFile = files[0])
            let records = (jsonl :?> TextFileSource).Records(files[0], classify) |> Seq.truncate 300 |> List.ofSeq
            let pairs = records |> List.map (fun r -> sprintf "Topic: %s\n" r["label"], r["text"])
            let textFile = write (Path.Combine(dir, "sft.jsonl")) (pairs |> List.map (fun (p, r) -> Text.Json.JsonSerializer.Serialize(dict [ "prompt", p; "response", r ])) |> String.concat "\n")
            let tokenizer = ByteTokenizer() :> ITextTokenizer
            let eot = int64 tokenizer.EndOfTextId
            let enc (s: string) = tokenizer.Encode s |> Array.map int64
            let ids = pairs |> List.map (fun (p, r) -> Array.concat [ [| eot |]; enc p; enc r; [| eot |] ]) |> Array.ofList
            let labels = pairs |> List.map (fun (p, r) -> Array.concat [ Array.create (1 + (enc p).Length) Batch.IgnoreIndex; enc r; [| eot |] ]) |> Array.ofList
            let idFile = Path.Combine(dir, "sft.parquet")
            writeIdsParquet idFile [ "input_ids", ids; "labels", labels ]
            for packing in [ false; true ] do
                let expected = jsonl.Load(request (TextFileOptions(TrainFile = textFile, TestFile = textFile, Objective = "instruct", MaxTokens = 96, Packing = packing)))
                let actual = parquet.Load(request (TextFileOptions(TrainFile = idFile, TestFile = idFile, Objective = "instruct", MaxTokens = 96, Packing = packing, InputIdsColumn = "input_ids", LabelsColumn = "labels")))
                Expect.isGreaterThan (expected.Train[Batch.InputIds].shape[0]) 10L "rows"
                Expect.isTrue (labels |> Array.exists (fun l -> l.Length > 96)) "some rows are cut at max_tokens"
                sameBatch (sprintf "packing %b" packing) actual.Train expected.Train
                disposeSplits expected; disposeSplits actual
        }

        test "token ids refused naming the file and the row: an id outside the tokenizer's vocabulary, a label neither −100 nor its id, labels of another length, a null list; a column of strings as input_ids; a CSV source, classify, instruct without labels_column, gpt2-8192 (config errors)" {
            let dir = tempDir "fixtures-ids-bad"
            let p name = Path.Combine(dir, name)
            writeIdsParquet (p "vocab.parquet") [ "input_ids", [| [| 1L; 2L |]; [| 3L; 257L; 4L |] |] ]
            let lm file = TextFileOptions(TrainFile = file, TestFile = file, Objective = "causal-lm", InputIdsColumn = "input_ids")
            Expect.equal (refusal parquet (lm (p "vocab.parquet"))) (sprintf "%s, row 2: input_ids[1] = 257 is not a token id of text_tokenizer \"bytes\" (0 … 256)" (p "vocab.parquet")) "an id beyond the vocabulary"
            idsJsonl (p "negative.jsonl") [ "input_ids", [| [| 5L; -1L |] |] ] |> ignore
            Expect.equal (refusal jsonl (lm (p "negative.jsonl"))) (sprintf "%s, line 1: input_ids[1] = -1 is not a token id of text_tokenizer \"bytes\" (0 … 256)" (p "negative.jsonl")) "a negative id (JSONL)"
            let sft file = TextFileOptions(TrainFile = file, TestFile = file, Objective = "instruct", InputIdsColumn = "input_ids", LabelsColumn = "labels")
            writeIdsParquet (p "label.parquet") [ "input_ids", [| [| 256L; 10L; 11L; 256L |]; [| 256L; 10L; 11L; 256L |] |]; "labels", [| [| -100L; -100L; 11L; 256L |]; [| -100L; -100L; 12L; 256L |] |] ]
            Expect.equal (refusal parquet (sft (p "label.parquet"))) (sprintf "%s, row 2: labels[2] = 12, neither −100 (not counted) nor input_ids[2] = 11 (counted)" (p "label.parquet")) "a label that is another id"
            writeIdsParquet (p "length.parquet") [ "input_ids", [| [| 256L; 10L; 11L; 256L |] |]; "labels", [| [| -100L; 11L; 256L |] |] ]
            Expect.equal (refusal parquet (sft (p "length.parquet"))) (sprintf "%s, row 1: labels has 3 labels, input_ids 4 ids (one label per token)" (p "length.parquet")) "labels of another length"
            writeIdsParquet (p "null.parquet") [ "input_ids", [| [| 1L |]; null |] ]
            Expect.equal (refusal parquet (lm (p "null.parquet"))) (sprintf "%s, row 2: column \"input_ids\" is null" (p "null.parquet")) "a null list"
            FormatExport.WriteParquet(p "strings.parquet", [| struct ("input_ids", [| "1 2 3" |] :> Collections.Generic.IReadOnlyList<string>) |])
            Expect.equal (refusal parquet (lm (p "strings.parquet"))) (sprintf "%s: column \"input_ids\" holds strings, not lists of integers (token ids)" (p "strings.parquet")) "a string column"
            write (p "text.jsonl") "{\"input_ids\": [1, 2.5]}\n" |> ignore
            Expect.equal (refusal jsonl (lm (p "text.jsonl"))) (sprintf "%s, line 1: field \"input_ids\"[1] is 2.5, not an integer token id" (p "text.jsonl")) "a fraction in a JSON array"
            let errors (extra: string) = configErrors ("[data]\ndataset = \"jsonl\"\ntrain_file = \"a\"\ntest_file = \"b\"\n" + extra)
            let has (extra: string) (expected: string) = Expect.contains (errors extra) expected (sprintf "%s in %A" expected (errors extra))
            has "objective = \"classify\"\ninput_ids_column = \"input_ids\"\n" "f.toml: data.input_ids_column: \"input_ids\" token ids are read for objective causal-lm and instruct, not \"classify\""
            has "objective = \"instruct\"\ninput_ids_column = \"input_ids\"\n" "f.toml: data.labels_column: \"\" names no column: pre-tokenized instruct rows need their labels (−100 on the tokens that do not count) to know which tokens count"
            has "objective = \"causal-lm\"\nlabels_column = \"labels\"\n" "f.toml: data.labels_column: \"labels\" is read with input_ids_column, for objective instruct"
            has "objective = \"causal-lm\"\ninput_ids_column = \"input_ids\"\ntext_tokenizer = \"gpt2-8192\"\n" "f.toml: data.text_tokenizer: \"gpt2-8192\" is fitted to the training file's texts, and input_ids_column gives ids, not texts: name the tokenizer the ids are of"
            Expect.isEmpty (errors "objective = \"instruct\"\ninput_ids_column = \"input_ids\"\nlabels_column = \"labels\"\n") "a valid pre-tokenized section"
            let csvErrors = configErrors "[data]\ndataset = \"csv\"\ntrain_file = \"a\"\ntest_file = \"b\"\nobjective = \"causal-lm\"\ninput_ids_column = \"input_ids\"\n"
            printfn "csv with input_ids_column: %A" csvErrors
            Expect.exists csvErrors (fun e -> e.Contains "data.input_ids_column" && e.Contains "csv files hold no lists of token ids") (sprintf "csv refused: %A" csvErrors)
        }
    ]

let private host = lazy (Research.Core.Plugins.PluginHost.Load([]))

let private identityTests =
    testList "identity" [
        test "the keys added here (input_ids_column, labels_column, image-folder's order) are left out of a run's identity at their defaults (a config that does not use them keeps its identity) and count when set" {
            let identity (text: string) (drop: string list) =
                let c = ResolvedConfig.Canonical(ConfigLoader.Parse(text, "c.toml"), host.Value, "train")
                for key in drop do
                    Expect.isTrue (c["data"].AsObject().ContainsKey key) (sprintf "the canonical config writes %s out" key)
                    c["data"].AsObject().Remove key |> ignore
                ResolvedConfig.Identity(c, host.Value)
            let text = "[data]\ndataset = \"jsonl\"\ntrain_file = \"a.jsonl\"\ntest_file = \"b.jsonl\"\nobjective = \"instruct\"\n"
            Expect.equal (identity text [ "input_ids_column"; "labels_column" ]) (identity text []) "jsonl: the identity of the config stored before the keys existed"
            Expect.notEqual (identity (text + "input_ids_column = \"input_ids\"\nlabels_column = \"labels\"\n") []) (identity text []) "pre-tokenized rows are another run"
            let images = "[data]\ndataset = \"image-folder\"\nimage_root = \"x\"\n"
            Expect.equal (identity images [ "order" ]) (identity images []) "image-folder: the identity before order existed"
            Expect.notEqual (identity (images + "order = \"name\"\n") []) (identity images []) "another order is another run"
        }
    ]



// ---------------------------------------------------------------------------------------------------------------------
// The Llama-family reference once more in numpy float64 (tests/Fixtures/llama-reference/reference_np.py).

let private referenceDir = Path.Combine(repoRoot, "tests", "Fixtures", "llama-reference")
let private referenceScript = Path.Combine(referenceDir, "reference_np.py")

let private numpy (args: string list) =
    let r = runProcessWith [ "OPENBLAS_NUM_THREADS", "1" ] referenceDir "/usr/bin/python3" (referenceScript :: args)
    if r.ExitCode <> 0 then failtestf "reference_np.py %A failed (%d): %s" args r.ExitCode r.Err
    r.Out

let private maxAbs (t: torch.Tensor) = t.abs().max().to_type(torch.float64).item<float>()

/// A tiny Llama-family model trained a few steps on English fortunes (bytes, 16-token windows), exported by
/// `research export`; returns the run and the exported folder.
let private trainAndExport (dir: string) (name: string) (modelKeys: string) =
    let config =
        write (Path.Combine(dir, name + ".toml"))
            (sprintf "[run]\nname = \"%s\"\nseed = 11\nthreads = 1\noutput_dir = \"%s\"\n[data]\ndataset = \"fortunes\"\ntask = \"causal-lm\"\ntokenizer = \"bytes\"\ncontext = 16\nvalidation_fraction = 0.01\ntest_fraction = 0.01\ntrain_limit = 96\nbatch_size = 16\neval_batch_size = 256\n[model]\nkind = \"llama\"\nwidth = 32\nlayers = 2\nheads = 4\nkv_heads = 2\nintermediate = 48\nrope_theta = 500.0\n%s[optimizer]\nlr = 0.01\n[train]\nepochs = 1\n"
                name (Path.Combine(dir, name)) modelKeys)
    let outcome = Trainer.Run(ConfigLoader.Load config, host.Value)
    let folder = Path.Combine(dir, name + "-hf")
    let e = researchInProcess [ "export"; outcome.RunDir; "-o"; Path.Combine(folder, "model.safetensors") ]
    Expect.equal e.ExitCode 0 (sprintf "research export: %s" e.Err)
    outcome, folder

let private numpyTests =
    testList "numpy reference" [
        for variant in [ "llama"; "qwen2" ] do
            test (sprintf "%s: the numpy float64 reference gives the committed torch reference's logits on its checkpoint (within 1e-12·max|ref|): the same reference" variant) {
                let out = numpy [ "--compare"; variant; Path.Combine(variant, "expected.safetensors") ]
                let parts = out.Trim().Split(' ')
                let error, scale = float parts[0], float parts[1]
                printfn "numpy reference %s: max |numpy − torch| = %.3g, max |ref| = %.4g, relative %.3g" variant error scale (error / scale)
                Expect.isGreaterThan scale 1.0 "the reference logits are not near zero"
                Expect.isLessThanOrEqual error (1e-12 * scale) (sprintf "max |numpy − torch| = %.3g" error)
            }
        for name, keys, modelType, tied in
            [ "llama-untied", "", "llama", false
              "llama-tied", "tie_embeddings = true\n", "llama", true
              "qwen2-untied", "qkv_bias = true\n", "qwen2", false
              "qwen2-tied", "qkv_bias = true\ntie_embeddings = true\n", "qwen2", true ] do
            test (sprintf "%s: a model trained here and written by research export is read by the numpy reference, whose float64 logits equal ours on the exported folder within 1e-10·max|ref|; the export holds the run's final weights bitwise" name) {
                let dir = tempDir ("fixtures-export-" + name)
                let outcome, folder = trainAndExport dir name keys
                let config = Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "config.json")))
                Expect.equal (config["model_type"].GetValue<string>()) modelType "model_type"
                Expect.equal (config["tie_word_embeddings"].GetValue<bool>()) tied "tie_word_embeddings"
                // The export is the checkpoint: every tensor of the file is the run's final weight of that name.
                let exported = TorchSharp.PyBridge.Safetensors.LoadStateDict(Path.Combine(folder, "model.safetensors"))
                let final = TorchSharp.PyBridge.Safetensors.LoadStateDict(outcome.WeightsPath)
                Expect.equal (exported.ContainsKey "lm_head.weight") (not tied) "lm_head.weight written when untied only"
                Expect.equal (exported.ContainsKey "model.layers.0.self_attn.q_proj.bias") (modelType = "qwen2") "q/k/v biases"
                for kv in exported do
                    let w = final.Keys |> Seq.tryFind (fun k -> k = kv.Key || k.EndsWith("." + kv.Key))
                    Expect.isSome w (sprintf "%s is a weight of the run" kv.Key)
                    Expect.isTrue (FormatSourceTests.sameTensor kv.Value final[w.Value]) (sprintf "%s bitwise the run's" kv.Key)
                // Ours: the kind reads the exported folder (config.json and weights) into a float64 model.
                let shape = DataShape("fortunes", InputKind.Tokens, 16L, 257, NextToken = true, Vocabulary = 257, Tokenizer = "bytes")
                let context = ModelContext(ModelKeys("llama", 0, folder, true, Array.empty<string>), shape, ModelTarget(shape.Features, shape.Classes), folder, Weights = WeightFiles.Instance)
                let kind = LlamaKind() :> ModelKind
                let options = kind.Resolve(LlamaOptions(), context)
                use model = kind.Create(options, context, new torch.Generator(1UL)) :?> Llama
                model.``to``(torch.float64) |> ignore
                kind.Load(model, options, context) |> ignore
                use ids = torch.randint(0L, 257L, [| 3L; 16L |], dtype = torch.int64, generator = new torch.Generator(17UL))
                use ours = (use _ = torch.no_grad() in model.forward ids)
                let idsFile = Path.Combine(dir, "ids.safetensors")
                Research.Core.Checkpoints.WeightFile.Save([ struct ("input_ids", ids) ], idsFile)
                let logitsFile = Path.Combine(dir, "numpy-logits.safetensors")
                numpy [ folder; idsFile; logitsFile ] |> ignore
                let reference = TorchSharp.PyBridge.Safetensors.LoadStateDict(logitsFile)["logits"]
                Expect.equal reference.dtype torch.float64 "the reference's logits in float64"
                Expect.sequenceEqual reference.shape [| 3L; 16L; 257L |] "[B, T, V]"
                let scale = maxAbs reference
                let error = maxAbs (ours - reference)
                printfn "numpy reference on our export %s: max |ours − numpy| = %.3g, max |ref| = %.4g, relative %.3g" name error scale (error / scale)
                Expect.isGreaterThan scale 0.5 "the logits are not near zero"
                Expect.isLessThanOrEqual error (1e-10 * scale) (sprintf "max |ours − numpy| = %.3g, max |ref| = %.3g" error scale)
            }
    ]

// ---------------------------------------------------------------------------------------------------------------------
// A study on Fashion-MNIST exported to an image folder gives the built-in reader's numbers.

let private imageStudyTests =
    testList "image-folder study" [
        test "a 2-task split-class study (MLP, 500 training items, 2 epochs) on Fashion-MNIST exported to PNG by scripts/export-formats.sh gives bitwise the accuracy matrix and final weights of the same study on the built-in reader (order = \"name\"); in torchvision's class order it does not" {
            let dir = tempDir "fixtures-image-study"
            // A small Fashion-MNIST in its own IDX files (the first 500 training and 200 test items), read by both.
            let small = Path.Combine(dir, "idx")
            let script =
                String.concat "\n" [
                        "import gzip, os, struct, sys"
                        "src, out = sys.argv[1], sys.argv[2]"
                        "os.makedirs(out)"
                        "for prefix, n in (('train', 500), ('t10k', 200)):"
                        "    for kind, magic, size in (('images-idx3', 2051, 784), ('labels-idx1', 2049, 1)):"
                        "        data = gzip.open(os.path.join(src, f'{prefix}-{kind}-ubyte.gz')).read()"
                        "        rank = magic & 0xFF"
                        "        dims = list(struct.unpack('>' + 'i' * rank, data[4:4 + 4 * rank]))"
                        "        body = data[4 + 4 * rank:4 + 4 * rank + n * size]"
                        "        dims[0] = n"
                        "        with gzip.open(os.path.join(out, f'{prefix}-{kind}-ubyte.gz'), 'wb') as f:"
                        "            f.write(struct.pack('>i', magic) + struct.pack('>' + 'i' * rank, *dims) + body)" ]
            let r = runProcess dir "/usr/bin/python3" [ "-c"; script; FashionMnist.ResolveDirectory ""; small ]
            Expect.equal r.ExitCode 0 r.Err
            let root = Path.Combine(dir, "png")
            let e = runProcess repoRoot "bash" [ Path.Combine(repoRoot, "scripts", "export-formats.sh"); root; "0"; small ]
            Expect.equal e.ExitCode 0 (e.Out + e.Err)
            let study (name: string) (data: string) =
                let config =
                    write (Path.Combine(dir, name + ".toml"))
                        (sprintf "[run]\nname = \"%s\"\nseed = 5\nthreads = 1\noutput_dir = \"%s\"\n[data]\n%sbatch_size = 32\n[model]\nhidden = [32]\n[optimizer]\nlr = 0.003\n[train]\nepochs = 2\n[study]\nbenchmark = \"split-class\"\nclasses_per_task = 5\n"
                            name (Path.Combine(dir, name)) data)
                Trainer.Run(ConfigLoader.Load config, host.Value, kind = RunKind.Study)
            let builtin = study "builtin" (sprintf "dataset = \"fashion-mnist\"\npath = \"%s\"\n" small)
            let images = study "images" (sprintf "dataset = \"image-folder\"\nimage_root = \"%s\"\nmean = [0.2860]\nstd = [0.3530]\norder = \"name\"\n" root)
            let classOrder = study "class-order" (sprintf "dataset = \"image-folder\"\nimage_root = \"%s\"\nmean = [0.2860]\nstd = [0.3530]\n" root)
            Expect.equal (List.ofSeq builtin.Record.Tasks) [ "classes 0-4"; "classes 5-9" ] "two tasks of five classes"
            printfn "image-folder study: built-in %A, image folder %A, class order %A" builtin.Record.Accuracy images.Record.Accuracy classOrder.Record.Accuracy
            for i in 0 .. 1 do Expect.isGreaterThan (builtin.Record.Accuracy[i][i]) 0.5 (sprintf "task %d learned" i)
            Expect.equal images.Record.Accuracy builtin.Record.Accuracy "the accuracy matrix, bitwise"
            let a, b = TorchSharp.PyBridge.Safetensors.LoadStateDict(builtin.WeightsPath), TorchSharp.PyBridge.Safetensors.LoadStateDict(images.WeightsPath)
            Expect.equal (set a.Keys) (set b.Keys) "the same weights"
            for k in a.Keys do Expect.isTrue (FormatSourceTests.sameTensor a[k] b[k]) (sprintf "final %s bitwise" k)
            let c = TorchSharp.PyBridge.Safetensors.LoadStateDict(classOrder.WeightsPath)
            Expect.isFalse (a.Keys |> Seq.forall (fun k -> FormatSourceTests.sameTensor a[k] c[k])) "class-major order takes other items and batches: other weights"
        }
    ]

let tests = testList "formats-fixtures" [ pandasTests; tokenIdTests; identityTests; numpyTests; imageStudyTests ]
