/// Text corpora, tokenizers, LM windows and classification rows. Corpus tests read the real Debian fortunes
/// (`fortunes`, `fortunes-de`; .ci/run installs them); tokenizer round trips run over every entry of both corpora.
module Research.Tests.TextTests

open System
open System.IO
open System.Text
open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Research.Abstractions
open Research.Core.Tasks
open Research.Core.Text
open Research.Tests.TestSupport

let private english = lazy (Fortunes.English())
let private german = lazy (Fortunes.German())
let private texts (c: TextCorpus) = c.Entries |> Seq.map (fun e -> e.Text) |> Array.ofSeq

/// The English training split every restricted-vocabulary test trains on (10% validation, 10% test, seed 1).
let private englishTrain = lazy (english.Value.Split(0.1, 0.1, 1L).Train |> Seq.map (fun e -> e.Text) |> Array.ofSeq)
let private restricted8k = lazy (RestrictedGpt2Tokenizer.Train(englishTrain.Value))

/// GPT-2 ids of every entry, computed once (GPT-2 encoding of both corpora takes ~2 s).
let private gpt2Ids = lazy (
    let g = Gpt2Tokenizer.Shared
    Map [ "en", texts english.Value |> Array.map g.Encode; "de", texts german.Value |> Array.map g.Encode ])

/// The first entry (in corpus order) where Decode(Encode(t)) ≠ t, shown with both texts.
let private roundTrip (tok: ITextTokenizer) (name: string) (entries: string[]) (encoded: string -> int[]) =
    for t in entries do
        let back = tok.Decode(encoded t)
        if back <> t then failtestf "%s on %s: Decode(Encode(t)) ≠ t for\n%A\ngot\n%A" tok.Name name t back

let private utf8 (s: string) = Encoding.UTF8.GetBytes s

/// Writes files into a fresh folder: (name, bytes).
let private folderWith (files: (string * byte[]) list) =
    let dir = tempDir "fortunes"
    for name, bytes in files do File.WriteAllBytes(Path.Combine(dir, name), bytes)
    dir

let private refusal (f: unit -> 'a) =
    try
        f () |> ignore
        failtest "expected a refusal"
    with
    | :? InvalidDataException as e -> e.Message
    | :? Research.Core.Files.NotAFileException as e -> e.Message
    | :? DirectoryNotFoundException as e -> e.Message
    | :? FileNotFoundException as e -> e.Message

/// A tiny BERT vocabulary: the five specials, a few words and pieces (no ä/ö/ü, as MiniLM's), ß as a piece.
let private bertVocab =
    [ "[PAD]"; "[UNK]"; "[CLS]"; "[SEP]"; "[MASK]"; "uber"; "gro"; "##ße"; "schon"; "stra"; "arger"; "!"; ","; "."
      "hello"; "world"; "##s"; "a"; "o"; "u"; "ß"; "der"; "die"; "das"; "und" ]

let private bertTokenizer = lazy (
    let dir = tempDir "wordpiece"
    let path = Path.Combine(dir, "vocab.txt")
    File.WriteAllText(path, String.Join("\n", bertVocab) + "\n")
    WordPieceTextTokenizer.FromVocabFile path)

let private idOf (token: string) = List.findIndex ((=) token) bertVocab

/// Hugging Face's BertTokenizer(do_lower_case=True), transcribed from transformers' tokenization_bert.py
/// (BasicTokenizer: _clean_text, _tokenize_chinese_chars, NFC, whitespace split, lower + _run_strip_accents,
/// _run_split_on_punc; WordpieceTokenizer: greedy longest match, "##" continuations, [UNK] for a word with no split or
/// over 100 characters; special tokens written in the text matched first): the reference the library is checked against.
module private HfBert =
    open System.Globalization
    let private category (r: Rune) = Rune.GetUnicodeCategory r
    let private isPunctuation (r: Rune) =
        let cp = r.Value
        (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126)
        || (match category r with
            | UnicodeCategory.ConnectorPunctuation | UnicodeCategory.DashPunctuation | UnicodeCategory.OpenPunctuation
            | UnicodeCategory.ClosePunctuation | UnicodeCategory.InitialQuotePunctuation | UnicodeCategory.FinalQuotePunctuation
            | UnicodeCategory.OtherPunctuation -> true
            | _ -> false)
    let private isWhitespace (r: Rune) = r.Value = 32 || r.Value = 9 || r.Value = 10 || r.Value = 13 || category r = UnicodeCategory.SpaceSeparator
    let private isControl (r: Rune) =
        r.Value <> 9 && r.Value <> 10 && r.Value <> 13
        && (match category r with
            | UnicodeCategory.Control | UnicodeCategory.Format | UnicodeCategory.Surrogate | UnicodeCategory.PrivateUse
            | UnicodeCategory.OtherNotAssigned -> true
            | _ -> false)
    let private isCjk cp =
        (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F)
        || (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) || (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F)
    let private splitOnPunctuation (word: string) =
        let pieces = Collections.Generic.List<string>()
        let current = StringBuilder()
        for r in word.EnumerateRunes() do
            if isPunctuation r then
                if current.Length > 0 then pieces.Add(current.ToString()); current.Clear() |> ignore
                pieces.Add(r.ToString())
            else current.Append(r.ToString()) |> ignore
        if current.Length > 0 then pieces.Add(current.ToString())
        List.ofSeq pieces
    let private stripAccents (s: string) =
        s.Normalize(NormalizationForm.FormD).EnumerateRunes() |> Seq.filter (fun r -> category r <> UnicodeCategory.NonSpacingMark)
        |> Seq.map string |> String.Concat
    let basic (text: string) =
        let cleaned =
            text.EnumerateRunes() |> Seq.choose (fun r ->
                if r.Value = 0 || r.Value = 0xFFFD || isControl r then None
                elif isWhitespace r then Some " "
                elif isCjk r.Value then Some(" " + string r + " ")
                else Some(string r))
            |> String.Concat
        cleaned.Normalize(NormalizationForm.FormC).Split((null: char[]), StringSplitOptions.RemoveEmptyEntries)
        |> List.ofArray |> List.collect (fun w -> splitOnPunctuation (stripAccents (w.ToLowerInvariant())))
    let wordPiece (vocab: Collections.Generic.IReadOnlyDictionary<string, int>) (word: string) =
        let runes = word.EnumerateRunes() |> Seq.map string |> Array.ofSeq
        if runes.Length > 100 then [ vocab["[UNK]"] ]
        else
            let rec pieces start acc =
                if start = runes.Length then Some(List.rev acc)
                else
                    let found =
                        seq { runes.Length .. -1 .. start + 1 } |> Seq.tryPick (fun stop ->
                            let piece = (if start > 0 then "##" else "") + String.Concat(runes[start .. stop - 1])
                            match vocab.TryGetValue piece with
                            | true, id -> Some(stop, id)
                            | _ -> None)
                    match found with
                    | Some(stop, id) -> pieces stop (id :: acc)
                    | None -> None
            defaultArg (pieces 0 []) [ vocab["[UNK]"] ]
    let encode (vocab: Collections.Generic.IReadOnlyDictionary<string, int>) (text: string) =
        let specials = RegularExpressions.Regex(@"\[(?:PAD|UNK|CLS|SEP|MASK)\]")
        let words (piece: string) = basic piece |> List.collect (wordPiece vocab)
        let mutable last = 0
        [ for m in specials.Matches text do
            yield! words (text.Substring(last, m.Index - last))
            yield vocab[m.Value]
            last <- m.Index + m.Length
          yield! words (text.Substring last) ]

/// A WordPiece vocabulary of German fortunes as the reference splits them: the 3,000 most frequent words, every
/// character alone and as a "##" continuation, endings of 2–5 characters of the 600 most frequent words as "##" pieces —
/// without any token holding ü, so that [UNK] and the fallback to shorter pieces are exercised.
let private germanVocab = lazy (
    let counts = Collections.Generic.Dictionary<string, int>()
    for e in german.Value.Entries do
        for w in HfBert.basic e.Text do counts[w] <- (match counts.TryGetValue w with | true, c -> c + 1 | _ -> 1)
    let words = counts |> Seq.sortBy (fun kv -> -kv.Value, kv.Key) |> Seq.map (fun kv -> kv.Key) |> Seq.truncate 3000 |> List.ofSeq
    let chars = words |> Seq.collect (fun w -> w.EnumerateRunes() |> Seq.map string) |> Seq.distinct |> Seq.sort |> List.ofSeq
    let endings = words |> List.truncate 600 |> List.collect (fun w -> [ for i in 2 .. min (w.Length - 1) 5 -> "##" + w.Substring i ])
    let tokens =
        [ "[PAD]"; "[UNK]"; "[CLS]"; "[SEP]"; "[MASK]" ] @ words @ chars @ (chars |> List.map ((+) "##")) @ endings
        |> List.distinct |> List.filter (fun t -> not (t.Contains 'ü'))
    let path = Path.Combine(tempDir "wordpiece-de", "vocab.txt")
    File.WriteAllText(path, String.Join("\n", tokens) + "\n")
    readOnlyDict (tokens |> List.mapi (fun i t -> t, i)), WordPieceTextTokenizer.FromVocabFile path)

/// Strings over an alphabet with ASCII, umlauts, ß, accents, combining marks, backspaces, tabs, newlines, an emoji and
/// '%': enough to reach every branch of cleaning and every byte length of UTF-8.
let private textGen =
    let pieces = [| "a"; "e"; "x"; "_"; "'"; "\""; "^"; "`"; ","; "~"; " "; "\t"; "\n"; "\b"; "%"; "\n%\n"; "ä"; "Ö"; "ß"; "é"
                    "e\u0301"; "\u0308"; "€"; "😀"; "\u0007"; "\r\n"; "Größe"; "über" |]
    Gen.choose (0, 40) |> Gen.bind (fun n -> Gen.arrayOfLength n (Gen.elements pieces)) |> Gen.map String.Concat

let private withText (name: string) (property: string -> bool) =
    testPropertyWithConfig propConfig name (Prop.forAll (Arb.fromGen textGen) property)

let private cleaningTests =
    testList "cleaning" [
        test "overstrikes resolve as a teletype prints them: x\\bx → x, _\\bx → x, x\\b_ → x, ___\\b\\b\\bnot → not, '\\be → é, \"\\bu → ü, ,\\bc → ç" {
            let cases =
                [ "b\bbold", "bold"; "_\bu_\bn_\bd_\be_\br", "under"; "u\b_", "u"; "I *___\b\b\bnot* said", "I *not* said"
                  "Honor'\be de Balzac", "Honoré de Balzac"; "m\"\buller", "müller"; "Plus ,\bca change", "Plus ça change"
                  "Tin'\buviel", "Tinúviel"; "m^\beme", "même"; "`\ba Kempis", "à Kempis"; "\bstart", "start"; "ab\b", "ab"
                  "a\bb", "b"; "line one\nx\bx two", "line one\nx two"; "no backspace", "no backspace" ]
            for input, expected in cases do
                Expect.equal (TextCleaning.ResolveOverstrikes input) expected (sprintf "%A" input)
        }
        test "cleaning: ASCII controls go (BEL, ESC), TAB and LF stay, CRLF → LF, NFC composes e + U+0301 → é, blank lines at the ends go" {
            Expect.equal (TextCleaning.Clean "\n  \nBell\u0007\u0007 rings\u001b[0m\r\n\tCafe\u0301  \n\n") "Bell rings[0m\n\tCafé" "cleaned"
            Expect.equal (TextCleaning.Clean "A\u030A") "\u00C5" "A + ring above → Å (NFC)"
            Expect.equal (TextCleaning.Clean "  indented") "  indented" "leading spaces of the first line stay"
        }
        withText "cleaning is idempotent: Clean(Clean(t)) = Clean(t), and its result is NFC with no backspace or ASCII control but TAB and LF" (fun t ->
            let c = TextCleaning.Clean t
            TextCleaning.Clean c = c && c.IsNormalized(NormalizationForm.FormC)
            && c |> Seq.forall (fun ch -> ch = '\n' || ch = '\t' || (ch >= ' ' && ch <> '\u007f')))
        test "entries: a line that is exactly % separates; %DCL… inside a line is text; the last entry needs no separator; empty entries appear empty" {
            let entries = Fortunes.SplitEntries "%\nfirst\nline\n%\n%DCL-MEM-BAD, bad memory\n%\n\n%\nlast\n"
            Expect.sequenceEqual entries [ ""; "first\nline"; "%DCL-MEM-BAD, bad memory"; ""; "last\n" ] "entries"
        }
    ]

let private readerTests =
    testList "reader" [
        test "a fortune folder: .dat skipped, a .u8 link read once under its target's name, subfolders not read, duplicates kept once under their first topic, dropped files not read" {
            let dir = folderWith [ "beta", utf8 "Same text.\n%\nOnly in beta.\n%\n"
                                   "alpha", utf8 "%\nSame text.\n%\n  Alpha's own.\n%\n"
                                   "alpha.dat", [| 0uy; 1uy; 2uy |]
                                   "pictures", utf8 "/\\_/\\\n%\n" ]
            File.CreateSymbolicLink(Path.Combine(dir, "alpha.u8"), "alpha") |> ignore
            Directory.CreateDirectory(Path.Combine(dir, "off")) |> ignore
            File.WriteAllText(Path.Combine(dir, "off", "rude"), "Not read.\n%\n")
            let corpus = Fortunes.Read(dir, "test", readOnlyDict [ "pictures", "art" ])
            Expect.sequenceEqual (corpus.Entries |> Seq.map (fun e -> e.Topic, e.Text))
                [ "alpha", "Same text."; "alpha", "  Alpha's own."; "beta", "Only in beta." ] "entries in file order, first topic kept"
            Expect.sequenceEqual corpus.Report.Files [ "alpha"; "beta" ] "files read"
            Expect.equal corpus.Report.Dropped.Count 1 "pictures dropped"
            Expect.equal (corpus.Report.RawEntries, corpus.Report.EmptyEntries, corpus.Report.Duplicates) (5, 1, 1) "raw, empty, duplicates"
        }
        test "a fortune folder is refused naming the file: a FIFO, an empty file, bytes that are not UTF-8, a link to nowhere; a missing folder names the packages" {
            let cases : (string * (string -> unit) * string) list =
                [ "a FIFO", (fun p -> runProcess (Path.GetDirectoryName p) "mkfifo" [ p ] |> ignore), "is a FIFO (named pipe), not a regular file"
                  "an empty file", (fun p -> File.WriteAllBytes(p, [||])), "is empty"
                  "Latin-1 bytes", (fun p -> File.WriteAllBytes(p, [| 0x47uy; 0x72uy; 0xF6uy; 0xDFuy; 0x65uy |])), "is not UTF-8 text"
                  "a link to nowhere", (fun p -> File.CreateSymbolicLink(p, "missing") |> ignore), "is a symbolic link to nothing (missing)" ]
            for what, make, expected in cases do
                let dir = folderWith [ "good", utf8 "Fine.\n%\n" ]
                let bad = Path.Combine(dir, "bad")
                make bad
                let message = refusal (fun () -> Fortunes.Read(dir, "test", readOnlyDict []))
                Expect.stringContains message bad (sprintf "%s: the message names the file" what)
                Expect.stringContains message expected what
                Expect.isFalse (message.Contains '\n') (sprintf "%s: one line" what)
            let missing = refusal (fun () -> Fortunes.English(Path.Combine(tempDir "none", "fortunes")))
            Expect.stringContains missing "apt-get install fortunes fortunes-de" "names the packages"
        }
    ]

let private corpusTests =
    testList "fortunes" [
        test "English and German fortunes: every entry NFC, free of backspaces and ASCII controls, unique; the ASCII-art files dropped; counts printed" {
            for corpus, dropped, files in [ english.Value, "ascii-art", 42; german.Value, "asciiart", 48 ] do
                let r = corpus.Report
                printfn "%s: %d files read, dropped %s; raw entries %d, empty %d, duplicates %d; kept %d entries, %d characters, %d UTF-8 bytes, %d topics"
                    corpus.Name r.Files.Count (String.Join(", ", r.Dropped.Keys)) r.RawEntries r.EmptyEntries r.Duplicates
                    corpus.Entries.Count corpus.Characters corpus.Utf8Bytes corpus.TopicCounts.Count
                Expect.equal r.Files.Count files "files read (the package's topic files less the art file)"
                Expect.isTrue (r.Dropped.ContainsKey dropped) "the art file is dropped"
                Expect.isFalse (corpus.TopicCounts.ContainsKey dropped) "no entry from the art file"
                Expect.equal corpus.Entries.Count (r.RawEntries - r.EmptyEntries - r.Duplicates) "kept = raw − empty − duplicates"
                let distinct = corpus.Entries |> Seq.map (fun e -> e.Text) |> Seq.distinct |> Seq.length
                Expect.equal distinct corpus.Entries.Count "entries are unique"
                for e in corpus.Entries do
                    if not (e.Text.IsNormalized NormalizationForm.FormC) then failtestf "%s/%s: not NFC: %A" corpus.Name e.Topic e.Text
                    if e.Text |> Seq.exists (fun c -> (c < ' ' && c <> '\n' && c <> '\t') || c = '\u007f') then
                        failtestf "%s/%s: a control character remains: %A" corpus.Name e.Topic e.Text
                    if e.Text.Length = 0 || e.Text <> e.Text.TrimEnd() then failtestf "%s/%s: empty or trailing whitespace: %A" corpus.Name e.Topic e.Text
            Expect.isGreaterThan english.Value.Entries.Count 14000 "English: ~15k entries"
            Expect.isGreaterThan german.Value.Entries.Count 17000 "German: ~18k entries"
            let balzac = english.Value.Entries |> Seq.filter (fun e -> e.Text.Contains "Honoré de Balzac") |> Seq.length
            Expect.isGreaterThan balzac 3 "the overstruck Honor'\\be de Balzac reads Honoré"
            Expect.isTrue (german.Value.Entries |> Seq.exists (fun e -> e.Text.Contains "ä" && e.Text.Contains "ß")) "German text keeps its umlauts and ß"
        }
        test "topics with at least N entries: each has ≥ N, every topic left out has < N; class order is ordinal" {
            for corpus in [ english.Value; german.Value ] do
                for n in [ 1; 100; 500 ] do
                    let chosen = corpus.TopicsWithAtLeast n
                    for t in chosen do Expect.isGreaterThanOrEqual (corpus.TopicCounts[t]) n t
                    for KeyValue(t, c) in corpus.TopicCounts do
                        if not (Seq.contains t chosen) then Expect.isLessThan c n t
                    Expect.sequenceEqual chosen (chosen |> Seq.sortWith (fun a b -> String.CompareOrdinal(a, b))) "ordinal order"
                printfn "%s topics with ≥ 500 entries: %s" corpus.Name
                    (String.Join(", ", corpus.TopicsWithAtLeast 500 |> Seq.map (fun t -> sprintf "%s %d" t corpus.TopicCounts[t])))
            let sub = english.Value.WithTopics(english.Value.TopicsWithAtLeast 500)
            Expect.isTrue (sub.Entries |> Seq.forall (fun e -> english.Value.TopicCounts[e.Topic] >= 500)) "WithTopics keeps only those"
        }
        test "the English split (10% / 10%, seed 1) holds every entry once; the same seed in another call gives the same split" {
            let c = english.Value
            let a = c.Split(0.1, 0.1, 1L)
            let b = c.Split(0.1, 0.1, 1L)
            Expect.sequenceEqual a.Train b.Train "train"
            Expect.sequenceEqual a.Test b.Test "test"
            let n = c.Entries.Count
            Expect.equal (a.Validation.Count, a.Test.Count) (int (ceil (0.1 * float n)), int (ceil (0.1 * float n))) "⌈f·N⌉"
            let all = Seq.concat [ a.Train; a.Validation; a.Test ] |> Seq.map (fun e -> e.Text) |> Set.ofSeq
            Expect.equal all.Count n "disjoint, and together every entry"
        }
        testPropertyWithConfig propConfig "split: parts disjoint, their union the corpus, sizes ⌈f_val·N⌉ and ⌈f_test·N⌉, each in corpus order, a function of the seed" <|
            fun (size: byte) (seed: int64) (fv: byte) (ft: byte) ->
                let n = int size
                let fVal, fTest = float (fv % 50uy) / 100.0, float (ft % 50uy) / 100.0
                let corpus = TextCorpus("p", [| for i in 0 .. n - 1 -> TextEntry(string i, "t") |], CorpusReport([||], readOnlyDict [], n, 0, 0))
                let s = corpus.Split(fVal, fTest, seed)
                let again = corpus.Split(fVal, fTest, seed)
                let index (e: TextEntry) = int e.Text
                let ordered (part: Collections.Generic.IReadOnlyList<TextEntry>) = part |> Seq.map index |> Seq.pairwise |> Seq.forall (fun (a, b) -> a < b)
                let nVal = int (ceil (fVal * float n))
                let all = Seq.concat [ s.Train; s.Validation; s.Test ] |> Seq.map index |> Seq.sort |> List.ofSeq
                all = [ 0 .. n - 1 ] && s.Validation.Count = nVal && s.Test.Count = min (int (ceil (fTest * float n))) (n - nVal)
                && ordered s.Train && ordered s.Validation && ordered s.Test
                && Seq.forall2 (=) (s.Validation |> Seq.map index) (again.Validation |> Seq.map index)
                && Seq.forall2 (=) (s.Test |> Seq.map index) (again.Test |> Seq.map index)
        test "another seed gives another split (N = 1,000: the chance of the same 100-entry validation split is nil)" {
            let corpus = TextCorpus("p", [| for i in 0 .. 999 -> TextEntry(string i, "t") |], CorpusReport([||], readOnlyDict [], 1000, 0, 0))
            Expect.notEqual (List.ofSeq (corpus.Split(0.1, 0.1, 1L).Validation)) (List.ofSeq (corpus.Split(0.1, 0.1, 2L).Validation)) "seeds 1 and 2"
        }
    ]

let private tokenizerTests =
    testList "tokenizers" [
        test "GPT-2 BPE: 'Hello world' is [15496; 995] (GPT-2's ids), <|endoftext|> is 50256, V = 50,257; German umlauts and ß round-trip" {
            let g = Gpt2Tokenizer.Shared
            Expect.sequenceEqual (g.Encode "Hello world") [ 15496; 995 ] "GPT-2's ids"
            Expect.equal (g.EndOfTextId, g.PadId, g.VocabSize) (50256, 50256, 50257) "specials and V"
            for s in [ "Größe"; "Über schöne Äpfel, Öl und Übermaß."; "ÄÖÜäöüß"; "€ 😀 naïve café" ] do
                Expect.equal (g.Decode(g.Encode s)) s s
        }
        test "GPT-2 BPE: Decode(Encode(t)) = t for every English and German entry" {
            let g = Gpt2Tokenizer.Shared
            for name, corpus in [ "en", english.Value; "de", german.Value ] do
                let ids = gpt2Ids.Value[name]
                texts corpus |> Array.iteri (fun i t ->
                    let back = g.Decode ids[i]
                    if back <> t then failtestf "gpt2 on %s: Decode(Encode(t)) ≠ t for\n%A\ngot\n%A" name t back)
        }
        test "GPT-2 token bytes: each of the 50,257 ids' bytes decode as the library decodes the id, and the bytes of an entry's tokens are its UTF-8, for every entry" {
            let g = Gpt2Tokenizer.Shared
            let strict = UTF8Encoding(false, true)
            let mutable valid = 0
            for id in 0 .. g.VocabSize - 1 do
                let bytes = g.TokenBytes(id).ToArray()
                let text = try Some(strict.GetString bytes) with _ -> None
                match text with
                | Some t ->
                    valid <- valid + 1
                    Expect.equal (g.Decode [| id |]) t (sprintf "id %d" id)
                | None -> ()
            Expect.isGreaterThan valid 49000 "most tokens are whole characters"
            for name, corpus in [ "en", english.Value; "de", german.Value ] do
                let ids = gpt2Ids.Value[name]
                texts corpus |> Array.iteri (fun i t ->
                    let bytes = ids[i] |> Array.collect (fun id -> g.TokenBytes(id).ToArray())
                    if bytes <> utf8 t then failtestf "%s: token bytes ≠ UTF-8 of %A" name t)
        }
        test "bytes: ids are the UTF-8 bytes, V = 257, Decode(Encode(t)) = t for every English and German entry" {
            let b = ByteTokenizer()
            Expect.equal (b.VocabSize, b.EndOfTextId) (257, 256) "V and end-of-text"
            Expect.sequenceEqual (b.Encode "Öl") [ 0xC3; 0x96; 0x6C ] "Ö is C3 96"
            for name, corpus in [ "en", english.Value; "de", german.Value ] do roundTrip b name (texts corpus) b.Encode
        }
        test "restricted GPT-2 (K = 8,192, the English training split): V ≤ K, Decode(Encode(t)) = t for every English and German entry, the same vocabulary when trained again" {
            let r = restricted8k.Value
            Expect.isLessThanOrEqual r.VocabSize 8192 "V ≤ K"
            Expect.equal r.VocabSize 8192 "the English training text has more than 8,192 distinct tokens"
            for name, corpus in [ "en", english.Value; "de", german.Value ] do roundTrip r name (texts corpus) r.Encode
            let again = RestrictedGpt2Tokenizer.Train(englishTrain.Value)
            Expect.sequenceEqual again.KeptGpt2Ids r.KeptGpt2Ids "deterministic"
            let rebuilt = RestrictedGpt2Tokenizer(r.KeptGpt2Ids)
            Expect.sequenceEqual (rebuilt.Encode german.Value.Entries[0].Text) (r.Encode german.Value.Entries[0].Text) "rebuilt from its kept ids"
        }
        test "restricted GPT-2 keeps the most frequent tokens: every kept token occurs at least as often in the training text as every multi-byte token left out" {
            let r = restricted8k.Value
            let g = Gpt2Tokenizer.Shared
            let counts = Array.zeroCreate<int64> g.VocabSize
            for t in englishTrain.Value do for id in g.Encode t do counts[id] <- counts[id] + 1L
            let kept = Set.ofSeq r.KeptGpt2Ids
            let minKept = r.KeptGpt2Ids |> Seq.map (fun id -> counts[id]) |> Seq.min
            let maxLeft = seq { 0 .. g.EndOfTextId - 1 } |> Seq.filter (fun id -> not (kept.Contains id) && g.TokenBytes(id).Length >= 2) |> Seq.map (fun id -> counts[id]) |> Seq.max
            Expect.isGreaterThanOrEqual minKept maxLeft "frequency order"
            Expect.isTrue (r.KeptGpt2Ids |> Seq.map (fun id -> counts[id]) |> Seq.pairwise |> Seq.forall (fun (a, b) -> a >= b)) "ids 257… by falling frequency"
        }
        testPropertyWithConfig { propConfig with maxTest = 40 } "restricted GPT-2 for any K ≥ 257: V ≤ K and Decode(Encode(t)) = t, trained on random text" <|
            fun (k: uint16) ->
                Prop.forAll (Arb.fromGen (Gen.arrayOfLength 5 textGen)) (fun training ->
                    let maxVocab = 257 + int k % 600
                    let r = RestrictedGpt2Tokenizer.Train(training, maxVocab)
                    r.VocabSize <= maxVocab && training |> Array.forall (fun t -> r.Decode(r.Encode t) = t))
        test "restricted GPT-2 refuses K < 257 and an unknown id" {
            Expect.throwsT<ArgumentOutOfRangeException> (fun () -> RestrictedGpt2Tokenizer.Train([ "a" ], 256) |> ignore) "K = 256"
            Expect.throwsT<ArgumentOutOfRangeException> (fun () -> restricted8k.Value.Decode [| 8192 |] |> ignore) "id = V"
        }
        test "WordPiece, uncased as Hugging Face's BertTokenizer: Ä/ä → a, Ö/ö → o, Ü/ü → u, ß stays ß; longest pieces first; a word with no split is [UNK]; [CLS] … [SEP] around a sequence" {
            let w = bertTokenizer.Value
            let ids (tokens: string list) = tokens |> List.map idOf
            Expect.sequenceEqual (w.Encode "Über Größe, schön!") (ids [ "uber"; "gro"; "##ße"; ","; "schon"; "!" ]) "umlauts stripped, ß kept"
            Expect.sequenceEqual (w.Encode "Ärger STRAẞE Zebra") (ids [ "arger"; "stra"; "##ße"; "[UNK]" ]) "ẞ lower-cases to ß; a word with no split is [UNK]"
            Expect.sequenceEqual (w.Encode "Hello worlds.") (ids [ "hello"; "world"; "##s"; "." ]) "pieces"
            Expect.sequenceEqual (w.Encode "ä ö ü ß") (ids [ "a"; "o"; "u"; "ß" ]) "single letters"
            Expect.equal (List.ofSeq w.SequencePrefix, List.ofSeq w.SequenceSuffix, w.PadId, w.VocabSize) ([ idOf "[CLS]" ], [ idOf "[SEP]" ], 0, bertVocab.Length) "specials and V"
            Expect.isFalse w.IsLossless "lossy"
            Expect.equal (w.Decode(w.Encode "Über Größe, schön!")) "uber große, schon!" "decodes to the normalised words"
        }
        test "WordPiece equals the transcription of Hugging Face's BertTokenizer on every German entry and on symbols, controls, format characters, CJK, special tokens in text (a German vocabulary: the 3,000 most frequent words, characters, endings; no ü)" {
            let vocab, w = germanVocab.Value
            let edge = [ "foo_bar $5 + 3 = 8 < 9 > 7 | ~x ^y `z`"; "emoji 😀 and °C ©"; "中文字符 mixed 日本"; "zero\u200Bwidth soft\u00ADhyphen"
                         "tab\tsep\r\nnext\u0007bell"; "a\u00a0b\u2028c\u3000d"; "[UNK] [CLS] x[SEP]y"; String('a', 150); "naïve café Ångström"
                         "‚Deutsch‘ „Zitat“ – dash — …"; "Über Größe\nund Übermaß" ]
            let mutable tokens, unknown = 0, 0
            for t in Seq.append (texts german.Value) edge do
                let expected = HfBert.encode vocab t
                let actual = w.Encode t
                tokens <- tokens + actual.Length
                unknown <- unknown + (actual |> Array.filter ((=) w.UnknownId) |> Array.length)
                if List.ofArray actual <> expected then failtestf "WordPiece differs from Hugging Face's on\n%A\nexpected %A\nactual   %A" t expected actual
            printfn "WordPiece (%d-token German vocabulary) on German fortunes and the edge cases: %d ids, %d [UNK]" vocab.Count tokens unknown
        }
        test "WordPiece: Encode(Decode(Encode(t))) = Encode(t) on every German entry (decoded text, [UNK] included, encodes back to the same ids)" {
            let _, w = germanVocab.Value
            for t in texts german.Value do
                let ids = w.Encode t
                let again = w.Encode(w.Decode ids)
                if again <> ids then failtestf "re-encoding changed the ids of\n%A\n%A\n%A" t ids again
        }
        test "a WordPiece vocabulary is refused naming the file: empty, without [CLS], not UTF-8, missing" {
            let dir = tempDir "wordpiece-bad"
            for name, bytes, expected in [ "empty.txt", [||], "is empty"
                                           "nocls.txt", utf8 "[PAD]\n[UNK]\n[SEP]\n[MASK]\na\n", "lacks the special token(s) [CLS]"
                                           "latin1.txt", [| 0x5Buy; 0x50uy; 0xF6uy; 0x0Auy |], "is not UTF-8 text" ] do
                let path = Path.Combine(dir, name)
                File.WriteAllBytes(path, bytes)
                let message = refusal (fun () -> WordPieceTextTokenizer.FromVocabFile path)
                Expect.stringContains message path name
                Expect.stringContains message expected name
            Expect.stringContains (refusal (fun () -> WordPieceTextTokenizer.FromVocabFile(Path.Combine(dir, "none.txt")))) "none.txt" "missing"
        }
        test "compression in tokens per UTF-8 byte on English and German fortunes (printed); bytes = 1 exactly; GPT-2 < restricted 8k < bytes; German costs GPT-2 more than English" {
            let g = Gpt2Tokenizer.Shared
            let r = restricted8k.Value
            let b = ByteTokenizer()
            let rows =
                [ for name, corpus in [ "en", english.Value; "de", german.Value ] do
                    let bytes = float corpus.Utf8Bytes
                    let gpt2 = gpt2Ids.Value[name] |> Array.sumBy (fun ids -> int64 ids.Length) |> float
                    let restrictedTokens = texts corpus |> Array.sumBy (fun t -> int64 (r.Encode t).Length) |> float
                    let byteTokens = texts corpus |> Array.sumBy (fun t -> int64 (b.Encode t).Length) |> float
                    printfn "%s: %d bytes; tokens per byte: gpt2 %.4f (%d tokens), %s %.4f (%d), bytes %.4f" name corpus.Utf8Bytes
                        (gpt2 / bytes) (int64 gpt2) r.Name (restrictedTokens / bytes) (int64 restrictedTokens) (byteTokens / bytes)
                    yield name, gpt2 / bytes, restrictedTokens / bytes, byteTokens / bytes ]
            for name, gpt2, restricted, bytes in rows do
                Expect.equal bytes 1.0 (sprintf "%s: one byte token per byte" name)
                Expect.isLessThan gpt2 restricted (sprintf "%s: GPT-2 < restricted" name)
                Expect.isLessThan restricted bytes (sprintf "%s: restricted < bytes" name)
            let gpt2Of lang = rows |> List.pick (fun (n, g, _, _) -> if n = lang then Some g else None)
            Expect.isLessThan (gpt2Of "en") (gpt2Of "de") "German costs more GPT-2 tokens per byte"
        }
    ]

/// Counted stream positions of packed windows: (position, id) for every target ≠ −100.
let private countedPositions (w: LmWindows) (stride: int) =
    [ for row in 0 .. w.Rows - 1 do
        for j in 0 .. w.Context - 1 do
            let t = w.Targets[row * w.Context + j]
            if t <> Batch.IgnoreIndex then yield row * stride + j, t ]

let private windowTests =
    testList "windows" [
        testPropertyWithConfig propConfig "packing: every stream position p ≥ 1 is counted exactly once, with its own id, and position 0 never, for any 1 ≤ stride ≤ T − 1" <|
            fun (length: byte) (context: byte) (strideSeed: byte) ->
                let t = 2 + int context % 40
                let stride = 1 + int strideSeed % (t - 1)
                let stream = [| for i in 0 .. int length - 1 -> 1000 + i |]
                let w = LmWindows.Pack(stream, t, stride, -1)
                let counted = countedPositions w stride
                (counted |> List.map fst |> List.sort) = [ 1 .. stream.Length - 1 ]
                && counted |> List.forall (fun (p, id) -> id = int64 stream[p])
                && w.CountedTargets = int64 (max (stream.Length - 1) 0)
        testPropertyWithConfig propConfig "packing: rows are the stream from k·stride on, padding after its end (mask 0, target −100), and a counted token at p has ≥ min(p, T − stride) tokens of context in its row" <|
            fun (length: byte) (context: byte) (strideSeed: byte) ->
                let t = 2 + int context % 40
                let stride = 1 + int strideSeed % (t - 1)
                let stream = [| for i in 0 .. int length - 1 -> 1000 + i |]
                let w = LmWindows.Pack(stream, t, stride, -7)
                let cellOk row j =
                    let p = row * stride + j
                    let i = row * t + j
                    if p < stream.Length then w.InputIds[i] = int64 stream[p] && w.AttentionMask[i] = 1L
                    else w.InputIds[i] = -7L && w.AttentionMask[i] = 0L && w.Targets[i] = Batch.IgnoreIndex
                let contextOk =
                    [ for row in 0 .. w.Rows - 1 do
                        for j in 0 .. t - 1 do
                            if w.Targets[row * t + j] <> Batch.IgnoreIndex then yield j >= min (row * stride + j) (t - stride) ]
                List.forall id contextOk && Seq.forall (fun row -> Seq.forall (cellOk row) [ 0 .. t - 1 ]) [ 0 .. w.Rows - 1 ]
        test "packing refuses stride 0, stride = T (each window's first token would go unpredicted) and T < 2" {
            for context, stride in [ 8, 0; 8, 8; 8, 9; 1, 1 ] do
                Expect.throwsT<ArgumentOutOfRangeException> (fun () -> LmWindows.Pack([| 1; 2; 3 |], context, stride, 0) |> ignore) (sprintf "T=%d stride=%d" context stride)
        }
        test "a German stream [EOT] d₁ [EOT] … as a batch: input_ids, attention_mask, targets [N, T] int64; the causal-LM task counts exactly the stream's predicted tokens" {
            let r = restricted8k.Value
            let docs = german.Value.Entries |> Seq.take 200 |> Seq.map (fun e -> e.Text) |> Array.ofSeq
            let stream = TokenStream.FromDocuments(docs, r)
            Expect.equal stream.Ids[0] r.EndOfTextId "starts with end-of-text"
            Expect.equal (stream.Ids |> Seq.filter ((=) r.EndOfTextId) |> Seq.length) (docs.Length + 1) "one end-of-text per document, and one before"
            Expect.equal stream.Utf8Bytes (docs |> Array.sumBy (fun d -> int64 (Encoding.UTF8.GetByteCount d) + 1L)) "bytes: documents and one per end-of-text"
            for stride in [ 63; 32; 1 ] do
                let w = LmWindows.Pack(stream, 64, stride, r.PadId)
                let batch = w.ToBatch()
                try
                    Expect.sequenceEqual batch[Batch.InputIds].shape [| int64 w.Rows; 64L |] "input_ids [N, T]"
                    Expect.equal batch[Batch.Targets].dtype torch.int64 "int64 targets"
                    Expect.equal batch[Batch.AttentionMask].dtype torch.int64 "int64 mask"
                    Expect.equal (CausalLmTask().Items batch) stream.PredictedTokens (sprintf "stride %d: the task counts every predicted token once" stride)
                finally batch.DisposeTensors()
        }
    ]

let private classificationTests =
    testList "classification" [
        test "classification rows: [CLS] text [SEP] cut to ≤ L, padded to the longest, mask 1 on ids; the label is the topic's index" {
            let w = bertTokenizer.Value
            let entries = [| TextEntry("Hello worlds.", "b"); TextEntry("Über Größe, schön! Hello world hello world hello.", "a"); TextEntry("ä", "b") |]
            let data = TextClassificationData.Build(entries, [| "a"; "b" |], w, 8)
            Expect.equal (data.Rows, data.Length, data.Truncated) (3, 8, 1) "rows, T ≤ L, one cut"
            Expect.sequenceEqual data.Labels [ 1L; 0L; 1L ] "labels"
            let row i = data.InputIds[i * data.Length .. i * data.Length + data.Length - 1] |> Array.map int
            Expect.sequenceEqual (row 0) [ idOf "[CLS]"; idOf "hello"; idOf "world"; idOf "##s"; idOf "."; idOf "[SEP]"; 0; 0 ] "row 0, padded"
            Expect.sequenceEqual (row 1) [ idOf "[CLS]"; idOf "uber"; idOf "gro"; idOf "##ße"; idOf ","; idOf "schon"; idOf "!"; idOf "[SEP]" ] "row 1, cut, [SEP] kept"
            Expect.sequenceEqual (data.AttentionMask[16..23]) [ 1L; 1L; 1L; 0L; 0L; 0L; 0L; 0L ] "mask of row 2"
            let batch = data.ToBatch()
            try
                Expect.sequenceEqual batch[Batch.Targets].shape [| 3L |] "targets [N]"
                Expect.sequenceEqual batch[Batch.InputIds].shape [| 3L; 8L |] "input_ids [N, T]"
            finally batch.DisposeTensors()
            Expect.throwsT<ArgumentException> (fun () -> TextClassificationData.Build(entries, [| "a" |], w, 8) |> ignore) "a topic that is no class"
            Expect.throwsT<ArgumentOutOfRangeException> (fun () -> TextClassificationData.Build(entries, [| "a"; "b" |], w, 2) |> ignore) "L = 2 leaves no room"
        }
        test "classification over English topics with ≥ 500 entries, GPT-2 ids, L = 128: labels in [0, C), rows ≤ 128, mask sums = row lengths" {
            let topics = english.Value.TopicsWithAtLeast 500
            let entries = english.Value.WithTopics(topics).Entries |> Seq.take 2000 |> Array.ofSeq
            let g = Gpt2Tokenizer.Shared
            let data = TextClassificationData.Build(entries, topics, g, 128)
            Expect.isLessThanOrEqual data.Length 128 "T ≤ L"
            Expect.isTrue (data.Labels |> Array.forall (fun l -> l >= 0L && l < int64 topics.Count)) "labels"
            for i in 0 .. data.Rows - 1 do
                let n = min (g.Encode entries[i].Text).Length 128
                let mask = data.AttentionMask[i * data.Length .. i * data.Length + data.Length - 1] |> Array.sum
                if mask <> int64 n then failtestf "row %d: mask sum %d, ids %d" i mask n
        }
    ]

let private metricTests =
    testList "metrics" [
        test "bits per byte = Σℓ / ln 2 / bytes: a byte model with loss ln 2 per byte gives 1 bit per byte; uniform over 256 bytes gives 8; perplexity = exp(ℓ̄)" {
            Expect.floatClose Accuracy.veryHigh (LanguageModelMetrics.BitsPerByte(1000.0 * log 2.0, 1000L)) 1.0 "ln 2 nats per byte"
            Expect.floatClose Accuracy.veryHigh (LanguageModelMetrics.BitsPerByte(500.0 * log 256.0, 500L)) 8.0 "uniform over bytes"
            Expect.floatClose Accuracy.veryHigh (LanguageModelMetrics.Perplexity(log 256.0)) 256.0 "perplexity of uniform bytes"
            // A BPE model: 250 tokens at 2.0 nats each over 1,000 bytes → 500 nats → 721.35 bits → 0.72135 bits per byte.
            Expect.floatClose Accuracy.veryHigh (LanguageModelMetrics.BitsPerByte(250.0 * 2.0, 1000L)) 0.7213475204444817 "ℓ̄/ln 2 · tokens/bytes = 2.0/0.693147 · 0.25"
            Expect.throwsT<ArgumentOutOfRangeException> (fun () -> LanguageModelMetrics.BitsPerByte(1.0, 0L) |> ignore) "no bytes"
        }
    ]

let tests =
    testList "text" [ cleaningTests; readerTests; corpusTests; tokenizerTests; windowTests; classificationTests; metricTests ]
