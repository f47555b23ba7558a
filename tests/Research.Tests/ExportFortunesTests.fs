/// `scripts/export-formats.sh fortunes OUT` (`research export-fortunes`): the files a user can make of the fortune corpora
/// read back by the jsonl and parquet sources as the built-in reader's tensors, bitwise (issue 30).
module Research.Tests.ExportFortunesTests

open System.IO
open Expecto
open Research.Abstractions
open Research.Core
open Research.Core.Config
open Research.Core.Data
open Research.Tests.TestSupport
open TorchSharp

let private sameBatch = FormatSourceTests.sameBatch
let private dispose = FormatSourceTests.disposeSplits

let tests =
    testList "formats-export" [
        test "scripts/export-formats.sh fortunes OUT writes JSONL and Parquet whose files are FormatExport's, byte for byte, and which read back by jsonl and parquet as the built-in reader's tensors, bitwise (classify and causal-lm, seed 7, the validation split included)" {
            let dir = tempDir "export-fortunes"
            for task in [ "classify"; "causal-lm" ] do
                let out = Path.Combine(dir, task)
                let sets = [ "run.seed=7"; sprintf "data.task=\"%s\"" task; "data.context=64" ]
                let r = runProcessWith [ "RESEARCH", "" ] repoRoot "bash" ([ Path.Combine(repoRoot, "scripts", "export-formats.sh"); "fortunes"; out ] @ (sets |> List.collect (fun s -> [ "--set"; s ])))
                Expect.equal r.ExitCode 0 (sprintf "%s: export-formats.sh fortunes: %s%s" task r.Out r.Err)
                // The split the command computed from its config: the same config in-process.
                let config = ConfigLoader.Parse("[data]\ndataset = \"fortunes\"\n", "(the defaults)", sets)
                let source = DataSources.Get "fortunes" :?> FortuneSource
                let fo = config.Data.Options :?> FortuneOptions
                let struct (_, _, _) = FormatExport.FortunesJsonl(source, config.Data.Keys, fo, 7L, Path.Combine(dir, task + "-here"))
                let struct (_, _, _) = FormatExport.FortunesParquet(source, config.Data.Keys, fo, 7L, Path.Combine(dir, task + "-here"))
                for name in [ "train"; "validation"; "test" ] do
                    for ext in [ "jsonl"; "parquet" ] do
                        let file = sprintf "%s.%s" name ext
                        Expect.isTrue (File.Exists(Path.Combine(out, file))) (sprintf "%s: %s written" task file)
                        Expect.equal (File.ReadAllBytes(Path.Combine(out, file))) (File.ReadAllBytes(Path.Combine(dir, task + "-here", file))) (sprintf "%s: %s is FormatExport's" task file)
                let expected = source.Load(DataRequest(config.Data.Keys, fo, 7L))
                for ext in [ "jsonl"; "parquet" ] do
                    let f name = Path.Combine(out, sprintf "%s.%s" name ext)
                    let o = TextFileOptions(TrainFile = f "train", TestFile = f "test", ValidationFile = f "validation", Objective = task, MaxTokens = 64)
                    let keys = DataKeys(ext, [||], 0.1, 32, 256, 0)
                    let actual = (DataSources.Get ext).Load(DataRequest(keys, o, 7L, Stream = fun n -> Seeds.Generator(7L, n)))
                    sameBatch (sprintf "%s %s train" task ext) actual.Train expected.Train
                    sameBatch (sprintf "%s %s validation" task ext) actual.Validation expected.Validation
                    sameBatch (sprintf "%s %s test" task ext) actual.Test expected.Test
                    Expect.equal (actual.TrainUtf8Bytes, actual.TestUtf8Bytes) (expected.TrainUtf8Bytes, expected.TestUtf8Bytes) (sprintf "%s %s: the bytes behind the targets" task ext)
                    dispose actual
                dispose expected
        }
        test "data.split_seed fixes the split by entry across run seeds (causal-lm and classify), and −1 splits by the run's seed as before; the gpt2-8192 vocabulary fitted to it follows" {
            let source = DataSources.Get "fortunes" :?> FortuneSource
            let keys = DataKeys("fortunes", [||], 0.02, 16, 64, 0)
            let texts (e: Research.Core.Text.TextEntry seq) = e |> Seq.map (fun x -> x.Text) |> Array.ofSeq
            let splitOf (o: FortuneOptions) (seed: int64) =
                let s = source.Split(keys, o, seed)
                texts s.Train, texts s.Validation, texts s.Test
            for task in [ "causal-lm"; "classify" ] do
                let free = FortuneOptions(Task = task, TestFraction = 0.05)
                let fixedAt0 = FortuneOptions(Task = task, TestFraction = 0.05, SplitSeed = 0L)
                Expect.equal (splitOf fixedAt0 1L) (splitOf free 0L) (sprintf "%s: split_seed 0 under run seed 1 is run seed 0's split" task)
                Expect.equal (splitOf fixedAt0 2L) (splitOf fixedAt0 1L) (sprintf "%s: the same split under run seeds 1 and 2" task)
                Expect.notEqual (splitOf free 2L) (splitOf free 1L) (sprintf "%s: without split_seed the run seed moves the split (so the test can fail)" task)
            let vocab (o: FortuneOptions) (seed: int64) =
                let t = source.Tokenizer(DataRequest(keys, o, seed))
                [| for e in (source.Split(keys, o, 0L)).Test |> Seq.truncate 50 -> t.Encode e.Text |]
            let lm = FortuneOptions(Task = "causal-lm", Tokenizer = "gpt2-8192", TestFraction = 0.05, SplitSeed = 0L)
            Expect.equal (vocab lm 2L) (vocab lm 1L) "gpt2-8192 fitted to the fixed split encodes alike under run seeds 1 and 2"
        }
        test "export-fortunes refuses a config whose data is not a fortune corpus, in one line (exit 2)" {
            let dir = tempDir "export-fortunes-bad"
            let r = research dir [ "export-fortunes"; Path.Combine(dir, "out"); "--set"; "data.dataset=\"synthetic\"" ]
            Expect.equal r.ExitCode 2 r.Err
            Expect.equal (r.Err.Trim()) "error: data.dataset \"synthetic\" is not a fortune corpus (export-fortunes writes the fortune sources' splits)" "the line"
        }
    ]
