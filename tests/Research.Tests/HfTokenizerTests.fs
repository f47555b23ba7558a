/// Hugging Face tokenizer.json (byte-level BPE) read through Microsoft.ML.Tokenizers (HfBpeTokenizer), checked against
/// an independent Python byte-level BPE (tests/Fixtures/hf-tokenizer/make.py) on every English fortune entry.
module Research.Tests.HfTokenizerTests

open System
open System.IO
open System.IO.Compression
open System.Security.Cryptography
open System.Text
open System.Text.Json.Nodes
open Expecto
open Research.Core.Text
open Research.Tests.TestSupport

let private fixture = Path.Combine(repoRoot, "tests", "Fixtures", "hf-tokenizer")
let private entries = lazy (Fortunes.English().Entries |> Seq.map (fun e -> e.Text) |> Array.ofSeq)
let private config = Path.Combine(fixture, "tokenizer_config.json")
let private plain = lazy (HfBpeTokenizer.FromFile(Path.Combine(fixture, "tokenizer.json"), config))
let private split = lazy (HfBpeTokenizer.FromFile(Path.Combine(fixture, "tokenizer-split.json"), config))

/// The first 12 hex digits of SHA-256, as make.py writes them.
let private sha12 (s: string) = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes s)).ToLowerInvariant().Substring(0, 12)
let private idText (ids: int[]) = String.Join(" ", ids)

let private gzLines name =
    use stream = new GZipStream(File.OpenRead(Path.Combine(fixture, name)), CompressionMode.Decompress)
    use reader = new StreamReader(stream, Encoding.ASCII)
    reader.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries)

/// Entries where decode(encode(t)) ≠ t, with the first one shown.
let private roundTripFailures (t: HfBpeTokenizer) =
    let bad = entries.Value |> Array.filter (fun s -> t.Decode(t.Encode s) <> s)
    bad.Length, (if bad.Length > 0 then sprintf "first: %A" bad[0] else "")

/// A copy of the fixture's tokenizer.json with one edit, in a temp folder; its path.
let private edited (edit: JsonNode -> unit) =
    let node = JsonNode.Parse(File.ReadAllText(Path.Combine(fixture, "tokenizer.json")))
    edit node
    let path = Path.Combine(tempDir "hftok", "tokenizer.json")
    File.WriteAllText(path, node.ToJsonString())
    path

let private refusal (path: string) (configPath: string) =
    try
        HfBpeTokenizer.FromFile(path, configPath) |> ignore
        failwith "read without a refusal"
    with :? InvalidDataException as e -> e.Message

let tests =
    testList "hf tokenizer" [
        test "ids equal make.py's transcription on every English fortune entry (tokenizer.json: ByteLevel with GPT-2's regex, 2,000 merges)" {
            let lines = gzLines "fortunes-en.ids.gz"
            let texts = entries.Value
            Expect.equal lines.Length texts.Length "one transcribed line per English fortune entry"
            let t = plain.Value
            let mutable textMismatch, idMismatch, tokens, first = 0, 0, 0, ""
            for i in 0 .. texts.Length - 1 do
                let parts = lines[i].Split('\t')
                if parts[0] <> sha12 texts[i] then textMismatch <- textMismatch + 1
                let ids = t.Encode texts[i]
                tokens <- tokens + ids.Length
                if idText ids <> parts[1] then
                    idMismatch <- idMismatch + 1
                    if first = "" then first <- sprintf "entry %d %A: ours %s, reference %s" i texts[i] (idText ids) parts[1]
            Expect.equal textMismatch 0 "the transcription is of the same entries, in the same order (SHA-256 of each text)"
            Expect.equal idMismatch 0 $"entries whose ids differ from the reference ({first})"
            Expect.equal tokens 911_128 "tokens over the corpus, as make.py counted them"
            let bytes = texts |> Array.sumBy (fun s -> Encoding.UTF8.GetByteCount s)
            Expect.equal bytes 2_513_814 "UTF-8 bytes over the corpus (0.3624 tokens per byte, as docs/models-and-text.md says)"
        }

        test "the transcription check can fail: without its last merge (rank 1,999), the tokenizer gives other ids on some entries" {
            let path = edited (fun n -> let m = (n.["model"].["merges"]).AsArray() in m.RemoveAt(m.Count - 1))
            let cut = HfBpeTokenizer.FromFile(path, config)
            let differ = entries.Value |> Array.filter (fun s -> cut.Encode s <> plain.Value.Encode s) |> Array.length
            Expect.isGreaterThan differ 0 "entries whose ids change when one merge is missing"
        }

        test "ids under tokenizer-split.json (Sequence[Split(Llama 3's regex), ByteLevel], NFC) have make.py's SHA-256 on every English fortune entry" {
            let lines = gzLines "fortunes-en-split.sha.gz"
            let texts = entries.Value
            Expect.equal lines.Length texts.Length "one transcribed digest per English fortune entry"
            let t = split.Value
            let bad = [| for i in 0 .. texts.Length - 1 do if sha12 (idText (t.Encode texts[i])) <> lines[i] then i |]
            Expect.equal bad.Length 0 $"entries whose ids' digest differs (first: %A{bad |> Array.tryHead |> Option.map (fun i -> texts[i])})"
            // The two pre-tokenizers really differ: the digests do not all equal the GPT-2-regex ids' digests.
            let differ = texts |> Array.filter (fun s -> idText (t.Encode s) <> idText (plain.Value.Encode s)) |> Array.length
            Expect.equal differ 8_594 "entries split differently by Llama 3's regex than by GPT-2's (make.py counted 8,594)"
        }

        test "Decode(Encode(t)) = t on every English fortune entry, under both pre-tokenizers" {
            let n, first = roundTripFailures plain.Value
            Expect.equal n 0 $"ByteLevel: entries not restored ({first})"
            let n, first = roundTripFailures split.Value
            Expect.equal n 0 $"Split + ByteLevel + NFC: entries not restored ({first})"
            Expect.isTrue plain.Value.IsLossless "no normalizer: lossless"
            Expect.isFalse split.Value.IsLossless "NFC rewrites text that is not NFC: not lossless in general"
        }

        test "special tokens map to their ids, are matched inside text, and decode to their written form" {
            let t = plain.Value
            Expect.equal t.VocabSize 2259 "256 bytes + 2,000 merges + 3 added tokens"
            Expect.equal t.EndOfTextId 2256 "eos_token <|endoftext|> from tokenizer_config.json"
            Expect.equal t.PadId 2256 "pad_token <|endoftext|>"
            Expect.isEmpty t.SequencePrefix "add_bos_token false: nothing before a sequence"
            for token, id in [ "<|endoftext|>", 2256; "<|im_start|>", 2257; "<|im_end|>", 2258 ] do
                Expect.equal (t.Encode token) [| id |] $"{token} alone"
                Expect.equal (t.Decode [| id |]) token $"{token} decodes to its text"
            let text = "<|im_start|>user\nWhat is a fortune?<|im_end|>\n<|endoftext|>"
            let expected = Array.concat [ [| 2257 |]; t.Encode "user\nWhat is a fortune?"; [| 2258 |]; t.Encode "\n"; [| 2256 |] ]
            Expect.equal (t.Encode text) expected "added tokens are cut out before the pre-tokenizer; the pieces between encode alone"
            Expect.equal (t.Decode(t.Encode text)) text "and the whole decodes back"
            Expect.throwsT<ArgumentOutOfRangeException> (fun () -> t.Decode [| 2259 |] |> ignore) "an id ≥ V is refused"
        }

        test "the older schema (merges as \"a b\" strings, <|endoftext|> also in model.vocab, as GPT-2's file) gives the same ids on every English fortune entry" {
            let path =
                edited (fun n ->
                    let merges = (n.["model"].["merges"]).AsArray()
                    let strings = JsonArray()
                    for m in merges do strings.Add(JsonValue.Create(sprintf "%s %s" (m.[0].GetValue<string>()) (m.[1].GetValue<string>())))
                    n.["model"].["merges"] <- strings
                    n.["model"].["vocab"].["<|endoftext|>"] <- JsonValue.Create 2256)
            let old = HfBpeTokenizer.FromFile(path, config)
            let differ = entries.Value |> Array.filter (fun s -> old.Encode s <> plain.Value.Encode s) |> Array.length
            Expect.equal differ 0 "entries whose ids differ between the two schemas"
            Expect.equal (old.Encode "a<|endoftext|>") [| 97; 2256 |] "the special token still cut out of text"
        }

        test "unsupported tokenizer.json kinds are refused with one line naming the file and the field" {
            let cases: (string * (JsonNode -> unit)) list = [
                "model.type", (fun n -> n["model"]["type"] <- JsonValue.Create "WordPiece")
                "model.type", (fun n -> n["model"]["type"] <- JsonValue.Create "Unigram")
                "model.byte_fallback", (fun n -> n["model"]["byte_fallback"] <- JsonValue.Create true)
                "model.continuing_subword_prefix", (fun n -> n["model"]["continuing_subword_prefix"] <- JsonValue.Create "##")
                "normalizer.type", (fun n -> n["normalizer"] <- JsonNode.Parse """{"type":"Lowercase"}""")
                "pre_tokenizer.type", (fun n -> n["pre_tokenizer"] <- JsonNode.Parse """{"type":"Whitespace"}""")
                "pre_tokenizer.add_prefix_space", (fun n -> n["pre_tokenizer"]["add_prefix_space"] <- JsonValue.Create true)
                "decoder.type", (fun n -> n["decoder"] <- JsonNode.Parse """{"type":"WordPiece","prefix":"##"}""")
                "added_tokens[1].lstrip", (fun n -> let t = n["added_tokens"].[1] in t["lstrip"] <- JsonValue.Create true)
                "model.merges[0]", (fun n -> let m = n["model"]["merges"] in m.[0] <- JsonValue.Create "a b c")
            ]
            for field, edit in cases do
                let path = edited edit
                let message = refusal path config
                Expect.stringContains message path $"{field}: the message names the file"
                Expect.stringContains message field $"{field}: the message names the field"
                Expect.isFalse (message.Contains '\n') $"{field}: one line"
            // A tokenizer_config.json naming a token the file lacks: the config file and the field are named.
            let dir = tempDir "hftok-config"
            let badConfig = Path.Combine(dir, "tokenizer_config.json")
            File.WriteAllText(badConfig, """{"eos_token": "</s>"}""")
            let message = refusal (Path.Combine(fixture, "tokenizer.json")) badConfig
            Expect.stringContains message badConfig "names the config file"
            Expect.stringContains message "eos_token" "names the field"
        }
    ]
