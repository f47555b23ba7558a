/// Runs on a published model's own files (issue 30): text tokenized by the tokenizer.json of a Hugging Face folder
/// (tokenizer = "tokenizer.json"), Llama 3's ignore_merges, and the memory estimator's Llama-2-7B row and
/// `memory --config` on a Hugging Face folder.
module Research.Tests.HfRunTests

open System
open System.Globalization
open System.IO
open System.Text
open System.Text.Json.Nodes
open Expecto
open TorchSharp
open Research.Abstractions
open Research.Core.Data
open Research.Core.Models
open Research.Core.Text
open Research.Tests.TestSupport

let private fixture = Path.Combine(repoRoot, "tests", "Fixtures", "hf-tokenizer")
let private inv = CultureInfo.InvariantCulture

/// A tiny Llama in a Hugging Face folder: config.json and model.safetensors (LlamaLayout.Save, seeded), with the
/// hf-tokenizer fixture's tokenizer.json and tokenizer_config.json beside them (2,259 ids).
let private llamaFolder (dir: string) (vocab: int64) (withTokenizer: bool) =
    let folder = Path.Combine(dir, "tiny-llama")
    Directory.CreateDirectory folder |> ignore
    let config = LlamaConfig(vocab, 32L, 64L, 2L, 4L, 2L, MaxPositions = 64L)
    use generator = new torch.Generator(11UL)
    use model = Llama.Create(config, generator, classes = 0)
    LlamaLayout.Save(model, Path.Combine(folder, "model.safetensors"))
    if withTokenizer then
        for name in [ "tokenizer.json"; "tokenizer_config.json" ] do File.Copy(Path.Combine(fixture, name), Path.Combine(folder, name))
    folder

let private pairs =
    [ "Topic: computers\nFortune: ", "A computer lets you make more mistakes faster than any invention."
      "Topic: food\nFortune: ", "Never eat more than you can lift."
      "Topic: science\nFortune: ", "Nothing is impossible for the man who doesn't have to do it himself."
      "Topic: work\nFortune: ", "Hard work never killed anybody, but why take a chance?" ]

let private writeJsonl (path: string) =
    let lines = pairs |> List.map (fun (p, r) -> Text.Json.JsonSerializer.Serialize(dict [ "prompt", p; "response", r ]))
    File.WriteAllText(path, String.Join("\n", lines) + "\n", UTF8Encoding(false))
    path

/// A run config: the tiny Llama from `initFrom`, instruction tuning on the JSONL pairs, `extra` lines in [data].
let private runConfig (dir: string) (initFrom: string) (extra: string) =
    let data = writeJsonl (Path.Combine(dir, "sft.jsonl"))
    let path = Path.Combine(dir, "hf.toml")
    let runs = Path.Combine(dir, "runs")
    File.WriteAllText(path, sprintf """
[run]
name = "hf"
seed = 3
output_dir = "%s"
[data]
dataset = "jsonl"
train_file = "%s"
test_file = "%s"
objective = "instruct"
text_tokenizer = "tokenizer.json"
max_tokens = 48
validation_file = "%s"
batch_size = 2
eval_batch_size = 8
%s
[model]
kind = "llama"
init_from = "%s"
[optimizer]
lr = 1e-3
[train]
epochs = 2
log_every = 1
""" runs data data data extra initFrom)
    path

/// A refused command: non-zero, and one line on standard error.
let private oneLine (r: ProcessResult) (what: string) =
    Expect.notEqual r.ExitCode 0 $"{what}: refused ({r.Out})"
    let err = r.Err.Trim()
    Expect.isFalse (err.Contains '\n') $"{what}: one line, not a stack trace: {err}"
    err

let private runTests =
    testList "run" [
        test "JSONL instruct data with text_tokenizer = \"tokenizer.json\" beside init_from: the ids are HfBpeTokenizer's encoding ([eos] prompt response [eos], then pad_token), exactly" {
            let dir = tempDir "hf-ids"
            let folder = llamaFolder dir 2259L true
            writeJsonl (Path.Combine(dir, "sft.jsonl")) |> ignore
            let tokenizer = HfBpeTokenizer.FromFolder folder
            Expect.equal tokenizer.VocabSize 2259 "the fixture's vocabulary"
            // The ids, exactly: the source loads them with init_from resolved as the run resolves it.
            let o = TextFileOptions(TrainFile = Path.Combine(dir, "sft.jsonl"), TestFile = Path.Combine(dir, "sft.jsonl"), Objective = "instruct",
                                    TextTokenizer = TextTokenizers.HfJson, MaxTokens = 48)
            let request = DataRequest(DataKeys("jsonl", [||], 0.0, 2, 8, 0), o, 3L, InitFrom = folder)
            let source = DataSources.Get "jsonl"
            let shape = source.Shape request
            Expect.equal shape.Vocabulary 2259 "the shape's vocabulary is the tokenizer.json's"
            Expect.equal shape.Tokenizer (Path.Combine(folder, "tokenizer.json")) "the shape names the file"
            let splits = source.Load request
            try
                let ids = splits.Train[Batch.InputIds]
                let t = int ids.shape[1]
                let eos, pad = tokenizer.EndOfTextId, tokenizer.PadId
                Expect.equal eos 2256 "end of text: tokenizer_config.json's eos_token <|endoftext|>"
                pairs |> List.iteri (fun i (p, r) ->
                    let expected = Array.concat [ [| eos |]; tokenizer.Encode p; tokenizer.Encode r; [| eos |] ]
                    let row = [| for j in 0 .. t - 1 -> int (ids[int64 i, int64 j].item<int64>()) |]
                    Expect.equal row[.. expected.Length - 1] expected $"row {i}: [eos] prompt response [eos] in tokenizer.json's ids"
                    Expect.isTrue (row[expected.Length ..] |> Array.forall ((=) pad)) $"row {i}: padded with pad_token")
            finally
                Research.Tests.FormatSourceTests.disposeSplits splits
        }

        test "a tiny Llama folder with tokenizer.json trains 4 steps (4 pairs, batch 2, 2 epochs) on JSONL instruct data, generate prints text decoded by it, eval reads its checkpoint, export writes the tokenizer beside the weights" {
            let dir = tempDir "hf-run"
            let folder = llamaFolder dir 2259L true
            let config = runConfig dir folder ""
            let r = research dir [ "train"; config ]
            Expect.equal r.ExitCode 0 r.Err
            let runDir = onlyRunDir dir
            let g = research dir [ "generate"; runDir; "--prompt"; "Topic: food"; "--max-tokens"; "12"; "--greedy" ]
            Expect.equal g.ExitCode 0 g.Err
            Expect.stringContains g.Err "tokenizer tokenizer.json" "generate names the tokenizer"
            Expect.isTrue (g.Out.StartsWith "Topic: food") g.Out
            Expect.isGreaterThan (g.Out.TrimEnd().Length) "Topic: food".Length "some text was generated and decoded"
            // eval rebuilds the run around its checkpoint as generate does: the folder's tokenizer and shape are kept.
            let ev = research dir [ "eval"; Path.Combine(runDir, "checkpoints", "final") ]
            Expect.equal ev.ExitCode 0 ev.Err
            Expect.stringContains ev.Out "test" "the test split evaluated"
            // Export writes the whole folder: weights, config.json and the run's tokenizer.
            let exported = Path.Combine(dir, "out", "model.safetensors")
            let e = research dir [ "export"; runDir; "-o"; exported ]
            Expect.equal e.ExitCode 0 e.Err
            Expect.equal (File.ReadAllText(Path.Combine(dir, "out", "tokenizer.json"))) (File.ReadAllText(Path.Combine(fixture, "tokenizer.json"))) "tokenizer.json beside the export"
        }

        test "bad cases are refused with one line: no tokenizer.json beside init_from, vocab_size below the tokenizer's (naming config.json and tokenizer.json), tokenizer_file with another tokenizer, no init_from nor tokenizer_file" {
            let dir = tempDir "hf-run-bad"
            let bare = llamaFolder (Path.Combine(dir, "bare") |> fun d -> Directory.CreateDirectory d |> ignore; d) 2259L false
            let missing = oneLine (research dir [ "train"; runConfig dir bare "" ]) "no tokenizer.json"
            Expect.stringContains missing (Path.Combine(bare, "tokenizer.json")) "names the file it looked for"
            let small = llamaFolder (Path.Combine(dir, "small") |> fun d -> Directory.CreateDirectory d |> ignore; d) 1000L true
            let mismatch = oneLine (research dir [ "train"; runConfig dir small "" ]) "vocab mismatch"
            Expect.stringContains mismatch (Path.Combine(small, "config.json")) "names config.json"
            Expect.stringContains mismatch (Path.Combine(small, "tokenizer.json")) "names tokenizer.json"
            Expect.stringContains mismatch "vocab_size 1000" "says the model's vocabulary"
            Expect.stringContains mismatch "2259" "and the tokenizer's"
            let good = llamaFolder (Path.Combine(dir, "good") |> fun d -> Directory.CreateDirectory d |> ignore; d) 2259L true
            let other = runConfig dir good $"tokenizer_file = \"{fixture}\""
            File.WriteAllText(other, File.ReadAllText(other).Replace("text_tokenizer = \"tokenizer.json\"", "text_tokenizer = \"bytes\""))
            let conflict = oneLine (research dir [ "train"; other ]) "tokenizer_file with bytes"
            Expect.stringContains conflict "data.tokenizer_file" "names the key"
            let noInit = runConfig dir good ""
            File.WriteAllText(noInit, File.ReadAllText(noInit).Replace($"init_from = \"{good}\"", ""))
            let none = oneLine (research dir [ "train"; noInit ]) "no init_from"
            Expect.stringContains none "data.tokenizer_file" "says which key gives the file"
        }

        test "end of text is tokenizer_config.json's eos_token, else config.json's eos_token_id (the first of a list), else <|endoftext|>" {
            let dir = tempDir "hf-eos"
            File.Copy(Path.Combine(fixture, "tokenizer.json"), Path.Combine(dir, "tokenizer.json"))
            let eos () = (HfBpeTokenizer.FromFolder dir).EndOfTextId
            Expect.equal (eos ()) 2256 "neither file: the added token <|endoftext|>"
            File.WriteAllText(Path.Combine(dir, "config.json"), """{"eos_token_id": 2258}""")
            Expect.equal (eos ()) 2258 "config.json's eos_token_id"
            File.WriteAllText(Path.Combine(dir, "config.json"), """{"eos_token_id": [2257, 2258]}""")
            Expect.equal (eos ()) 2257 "the first of a list (Llama 3 Instruct's form)"
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"eos_token": "<|im_end|>"}""")
            Expect.equal (eos ()) 2258 "tokenizer_config.json's eos_token comes first"
            File.Delete(Path.Combine(dir, "tokenizer_config.json"))
            File.WriteAllText(Path.Combine(dir, "config.json"), """{"eos_token_id": 5000}""")
            let message = try HfBpeTokenizer.FromFolder dir |> ignore; "" with :? InvalidDataException as e -> e.Message
            Expect.stringContains message "config.json: eos_token_id 5000 is not an id of" "an id beyond the tokenizer is refused naming the file"
        }

        test "fortunes with tokenizer = \"tokenizer.json\" and tokenizer_file: the shape's vocabulary and the ids are the file's" {
            let o = FortuneOptions(Task = "causal-lm", Tokenizer = TextTokenizers.HfJson, TokenizerFile = fixture)
            let request = DataRequest(DataKeys("fortunes", [||], 0.1, 8, 8, 0), o, 1L)
            let source = DataSources.Get "fortunes"
            Expect.equal (source.Shape request).Vocabulary 2259 "vocabulary"
            let t = source.Tokenizer request
            let text = "Q: What is a fortune?\nA: <|endoftext|> a cookie."
            Expect.equal (t.Encode text) ((HfBpeTokenizer.FromFolder fixture).Encode text) "the same ids as the file read alone"
        }

        test "a config without the new key keeps its identity: tokenizer_file = \"\" written out changes nothing, a file named changes it" {
            let host = Research.Core.Plugins.PluginHost.Load([])
            let identity (text: string) =
                Research.Core.Config.ResolvedConfig.Identity(
                    Research.Core.Config.ResolvedConfig.Canonical(Research.Core.Config.ConfigLoader.Parse(text, "c.toml", []), host, "train"), host)
            for section in [ "[data]\ndataset = \"fortunes\"\ntask = \"causal-lm\"\n"
                             "[data]\ndataset = \"jsonl\"\ntrain_file = \"a.jsonl\"\ntest_file = \"a.jsonl\"\nobjective = \"causal-lm\"\n" ] do
                let plain = "[model]\nkind = \"llama\"\n" + section
                Expect.equal (identity (plain + "tokenizer_file = \"\"\n")) (identity plain) $"{section}: the same identity"
                let hf = plain.Replace("causal-lm\"\n", "causal-lm\"\n" + (if section.Contains "jsonl" then "text_tokenizer" else "tokenizer") + " = \"tokenizer.json\"\n")
                Expect.notEqual (identity (hf + "tokenizer_file = \"x/tokenizer.json\"\n")) (identity hf) $"{section}: a file named is part of the identity"
        }
    ]

/// A hand-made byte-level tokenizer.json in which ignoring merges changes the ids: "abc" is in the vocabulary, but the
/// merges ("b c" before "a b") make a + bc of it, and " ab" has no whole-word token.
let private handMade (ignoreMerges: bool) =
    let vocab = JsonObject()
    for token, id in [ "a", 0; "b", 1; "c", 2; "Ġ", 3; "bc", 4; "ab", 5; "abc", 6; "Ġa", 7 ] do vocab[token] <- JsonValue.Create id
    let json =
        JsonObject(
            [ Collections.Generic.KeyValuePair("version", JsonValue.Create "1.0" :> JsonNode)
              Collections.Generic.KeyValuePair("added_tokens", JsonNode.Parse """[{"id": 8, "content": "<|endoftext|>", "special": true}]""")
              Collections.Generic.KeyValuePair("normalizer", null)
              Collections.Generic.KeyValuePair("pre_tokenizer", JsonNode.Parse """{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}""")
              Collections.Generic.KeyValuePair("decoder", JsonNode.Parse """{"type": "ByteLevel"}""")
              Collections.Generic.KeyValuePair(
                  "model",
                  JsonObject(
                      [ Collections.Generic.KeyValuePair("type", JsonValue.Create "BPE" :> JsonNode)
                        Collections.Generic.KeyValuePair("ignore_merges", JsonValue.Create ignoreMerges)
                        Collections.Generic.KeyValuePair("vocab", vocab)
                        Collections.Generic.KeyValuePair("merges", JsonNode.Parse """[["b", "c"], ["a", "b"], ["Ġ", "a"]]""") ]) :> JsonNode) ])
    let path = Path.Combine(tempDir "hf-ignore", "tokenizer.json")
    File.WriteAllText(path, json.ToJsonString())
    HfBpeTokenizer.FromFile path

let private ignoreMergesTests =
    testList "ignore_merges" [
        test "ignore_merges: a word that is itself a token is that id (\"abc\" → [6]); without it the merges give [a, bc] ([0, 4]); \" ab\" (no whole token) merges the same both ways" {
            let merged, whole = handMade false, handMade true
            Expect.isFalse merged.IgnoresMerges "the flag as read"
            Expect.isTrue whole.IgnoresMerges "the flag as read"
            // By hand: "abc" → a b c; rank 0 "b c" → a bc; no merge "a bc": [0; 4]. " ab" → Ġ a b; rank 1 "a b" → Ġ ab: [3; 5].
            Expect.equal (merged.Encode "abc ab") [| 0; 4; 3; 5 |] "merges by rank"
            Expect.equal (whole.Encode "abc ab") [| 6; 3; 5 |] "abc is a token: one id; Ġab is not: merged"
            Expect.equal (whole.Encode "abc<|endoftext|>abc") [| 6; 8; 6 |] "added tokens are still cut out first"
            Expect.equal (whole.Decode(whole.Encode "abc ab")) "abc ab" "and decode back"
        }

        test "ignore_merges on the fortune fixture (2,000 merges): every English fortune entry decodes back, and a word that is a token is never split" {
            let path = Path.Combine(tempDir "hf-ignore-fixture", "tokenizer.json")
            let node = JsonNode.Parse(File.ReadAllText(Path.Combine(fixture, "tokenizer.json")))
            node["model"]["ignore_merges"] <- JsonValue.Create true
            File.WriteAllText(path, node.ToJsonString())
            let t = HfBpeTokenizer.FromFile(path, Path.Combine(fixture, "tokenizer_config.json"))
            let plain = HfBpeTokenizer.FromFile(Path.Combine(fixture, "tokenizer.json"), Path.Combine(fixture, "tokenizer_config.json"))
            let texts = Fortunes.English().Entries |> Seq.map (fun e -> e.Text) |> Array.ofSeq
            let notRestored = texts |> Array.filter (fun s -> t.Decode(t.Encode s) <> s) |> Array.length
            Expect.equal notRestored 0 "entries not restored"
            // " the" is one token of the fixture: with ignore_merges it is one id whatever the merges do.
            Expect.equal (t.Encode " the").Length 1 "a word in the vocabulary is one id"
            Expect.equal (t.Encode "The quick brown fox") (plain.Encode "The quick brown fox") "where merges reach the whole word, the same ids"
        }
    ]

let private memoryTests =
    testList "memory" [
        test "the committed Llama-2-7B config.json has 6,738,415,616 parameters by the llama kind's count, and the embedded copy is the same file" {
            let file = Path.Combine(repoRoot, LlamaConfig.Llama2_7BFile)
            let read = LlamaConfig.Read file
            Expect.equal read.ParameterCount 6_738_415_616L "V·d·2 + L·(4d² + 3·d·I + 2d) + d"
            // By hand: 2·32000·4096 + 32·(4·4096² + 3·4096·11008 + 2·4096) + 4096.
            Expect.equal (2L * 32000L * 4096L + 32L * (4L * 4096L * 4096L + 3L * 4096L * 11008L + 2L * 4096L) + 4096L) 6_738_415_616L "the count by hand"
            Expect.equal LlamaConfig.Llama2_7B read "the estimator's embedded config is the committed file"
        }

        test "research memory prints the seed chapter's rows as given and Llama-2-7B's corrected row: 13.5 + 13.5 + 27 + 53.9 GB = 107.8 GB (16 B/param)" {
            let r = research (tempDir "hf-memory") [ "memory"; "--params"; "7e9" ]
            Expect.equal r.ExitCode 0 r.Err
            Expect.stringContains r.Out "6,738,415,616 parameters" "the 7B row's parameter count"
            Expect.stringContains r.Out LlamaConfig.Llama2_7BFile "names the config"
            Expect.stringContains r.Out "weights fp16 14 GB, optimizer states fp32 56 GB, gradients fp16 14 GB" "the seed's row as given"
            let row = r.Out.Split('\n') |> Array.find (fun l -> l.TrimStart().StartsWith "Llama-2-7B")
            let cells = row.Split(' ', StringSplitOptions.RemoveEmptyEntries)
            Expect.equal cells[1..4] [| "13.5"; "13.5"; "27"; "53.9" |] "weights, gradients, fp32 master, AdamW moments (GB)"
            Expect.stringContains r.Out "112 GB at the seed's 7e9 and 107.8 GB for Llama-2-7B's 6,738,415,616 parameters" "16 B/param × 7e9 and × 6.74e9"
            Expect.stringContains r.Out "leaves out the 28 GB fp32 master copy" "what the seed left out, at its own 7e9"
        }

        test "memory --config on a llama whose init_from is a Hugging Face folder uses the folder's config.json: its parameter count and its layers and width" {
            let dir = tempDir "hf-memory-config"
            let folder = llamaFolder dir 2259L true
            let config = runConfig dir folder ""
            let expected = (LlamaConfig.Read(Path.Combine(folder, "config.json"))).ParameterCount
            let loaded =
                let struct (m, _, o, _) = Research.Core.Training.RunBuilder.ModelState(Research.Core.Config.ConfigLoader.Load(config, []))
                use m = m
                use o = o
                m.parameters() |> Seq.sumBy (fun p -> p.numel())
            Expect.equal loaded expected "the model the run builds has the file's parameters"
            let r = research dir [ "memory"; "--config"; config ]
            Expect.equal r.ExitCode 0 r.Err
            Expect.stringContains r.Out (sprintf "llama with %s parameters" (expected.ToString("N0", inv))) "the parameters of the loaded model"
            let configJson = Path.Combine(folder, "config.json")
            Expect.stringContains r.Out $"shape from {configJson}" "says where the shape comes from"
            Expect.stringContains r.Out "estimated for 2 layers of width 32" "the activations of the file's shape, not the defaults (4 layers of 256)"
        }
    ]

let tests = testList "hf runs" [ runTests; ignoreMergesTests; memoryTests ]
