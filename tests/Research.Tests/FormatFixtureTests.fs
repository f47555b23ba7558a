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
                d[name] <- (if name = "labels" then box values[i] else box (values[i] |> Array.map int))
            d :> Collections.Generic.IDictionary<string, obj> |]
    use stream = File.Create path
    Parquet.Serialization.ParquetSerializer.SerializeUntypedAsync(rows, schema, stream).GetAwaiter().GetResult()

let private idsJsonl (path: string) (columns: (string * int64[][]) list) =
    let n = (snd columns.Head).Length
    write path ([ for i in 0 .. n - 1 -> Text.Json.JsonSerializer.Serialize(dict [ for name, v in columns -> name, v[i] ]) ] |> String.concat "\n")

/// The fortunes' causal-LM split exported to JSONL (seed 7), and the texts of each file.
let private fortunesExport (dir: string) =
    let fortunes = DataSources.Get "fortunes" :?> FortuneSource
    let fo = FortuneOptions(Task = "causal-lm", Context = 64)
    let fk = DataKeys("fortunes", [||], 0.1, 32, 256, 0)
    let struct (train, validation, test) = FormatExport.FortunesJsonl(fortunes, fk, fo, 7L, dir)
    [ train; validation; test ]

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
    ]

let tests = testList "formats-fixtures" [ pandasTests; tokenIdTests ]
