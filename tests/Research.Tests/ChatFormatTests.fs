/// Instruction tuning on conversations (issue 30): a `messages` list of {role, content} written with a chat template,
/// the loss on the assistant's turns only; bad conversations refused naming the file and the line; packing the rows
/// into windows keeps exactly the counted tokens of the padded rows.
module Research.Tests.ChatFormatTests

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
open Research.Tests.TestSupport
open Research.Tests.FormatSourceTests
open TorchSharp

let private jsonl = DataSources.Get "jsonl"

/// The message of a conversation file's refusal.
let private refusal (o: obj) = FormatSourceTests.refusal jsonl o

let private dispose = disposeSplits

/// One JSONL line of a conversation.
let private chat (turns: (string * string) list) =
    Json.JsonSerializer.Serialize(dict [ "messages", turns |> List.map (fun (r, c) -> dict [ "role", r; "content", c ]) ])

/// (the input before, the target) of every counted target, row-major: what the shifted loss sees of each counted token.
let private countedPairs (b: Batch) =
    let ids = b[Batch.InputIds].data<int64>().ToArray()
    let targets = b[Batch.Targets].data<int64>().ToArray()
    let t = int b[Batch.InputIds].shape[1]
    [ for k in 0 .. targets.Length - 1 do
        if targets[k] <> Batch.IgnoreIndex then
            if k % t = 0 then failtestf "a counted target at a row's first position (%d), which the shifted loss never reads" k
            yield ids[k - 1], targets[k] ]

/// A message and a row of a chat dataset in Hugging Face's Parquet layout: messages a list of {role, content} structs.
type ChatMessageRow() =
    member val role = "" with get, set
    member val content = "" with get, set

type ChatRow() =
    member val messages = Collections.Generic.List<ChatMessageRow>() with get, set

let tests =
    testList "formats-chat" [
        test "chat: on a system + two user/assistant turns conversation the targets are the ids exactly on a hand-counted mask (the assistants' content and end of turn, the closing end-of-text) and −100 elsewhere; the loss Σℓ / N is the mean cross-entropy over that mask (rel. 1e-6)" {
            let dir = tempDir "chat-mask"
            let j = write (Path.Combine(dir, "chat.jsonl")) (chat [ "system", "Be brief."; "user", "hi?"; "assistant", "yes."; "user", "and?"; "assistant", "no." ] + "\n")
            let s = jsonl.Load(request (TextFileOptions(TrainFile = j, TestFile = j, Objective = "chat", MaxTokens = 128)))
            // The default template by hand; bytes tokenizer: one token per byte, row = EOT text EOT.
            let text = "<|system|>\nBe brief.\n<|user|>\nhi?\n<|assistant|>\nyes.\n<|user|>\nand?\n<|assistant|>\nno.\n"
            let ids, targets = s.Train[Batch.InputIds], s.Train[Batch.Targets]
            Expect.equal (int ids.shape[1]) (text.Length + 2) "T: the text and two end-of-text ids"
            let eot = int64 (ByteTokenizer().EndOfTextId)
            let row = ids.select(0, 0L).data<int64>().ToArray()
            Expect.equal row[0] eot "opens with end-of-text"
            Expect.equal row[row.Length - 1] eot "closes with end-of-text"
            Expect.equal (row[1 .. row.Length - 2] |> Array.map byte |> Encoding.UTF8.GetString) text "the template's text"
            let first, second = text.IndexOf "yes.\n<|user|>", text.IndexOf "no.\n"
            let counted j = (j >= 1 + first && j < 1 + first + 5) || (j >= 1 + second && j < 1 + second + 4) || j = text.Length + 1
            let tg = targets.select(0, 0L).data<int64>().ToArray()
            for j in 0 .. row.Length - 1 do
                if counted j then Expect.equal tg[j] row[j] (sprintf "position %d counts" j)
                else Expect.equal tg[j] Batch.IgnoreIndex (sprintf "position %d does not count" j)
            let task = CausalLmTask()
            Expect.equal (task.Items s.Train) 10L "N = 5 (\"yes.\\n\") + 4 (\"no.\\n\") + 1 (end-of-text)"
            use g = new torch.Generator(3UL)
            use logits = torch.randn([| 1L; int64 row.Length; 257L |], generator = g)
            use sum = task.LossSum(logits, s.Train)
            use logp = torch.nn.functional.log_softmax(logits.to_type(torch.float64), 2L)
            let hand = [ for j in 1 .. row.Length - 1 do if counted j then yield -(logp[0L, int64 (j - 1), row[j]].item<float>()) ] |> List.average
            Expect.floatClose { absolute = 0.0; relative = 1e-6 } (float (sum.item<float32>()) / 10.0) hand "Σℓ / N = the hand mask's mean cross-entropy"
            Expect.equal s.TrainUtf8Bytes 10L "bits per byte: the counted bytes and one per end"
            dispose s
        }
        test "chat: a configured template writes each message as given ({role} before, the end of turn after {content})" {
            let dir = tempDir "chat-template"
            let j = write (Path.Combine(dir, "chat.jsonl")) (chat [ "user", "2+2?"; "assistant", "4" ] + "\n")
            let s = jsonl.Load(request (TextFileOptions(TrainFile = j, TestFile = j, Objective = "chat", ChatTemplate = "### {role}: {content}</{role}>", MaxTokens = 128)))
            let row = s.Train[Batch.InputIds].select(0, 0L).data<int64>().ToArray()
            Expect.equal (row[1 .. row.Length - 2] |> Array.map byte |> Encoding.UTF8.GetString) "### user: 2+2?</user>### assistant: 4</assistant>" "the text"
            let n = CausalLmTask().Items s.Train
            Expect.equal n (int64 ("4</assistant>".Length + 1)) "counted: the assistant's content, its end of turn, end-of-text"
            dispose s
        }
        test "chat: a message without a role, an unknown role, and a conversation without an assistant turn are refused in one line naming the file and the line" {
            let dir = tempDir "chat-bad"
            let good = chat [ "user", "a"; "assistant", "b" ]
            let cases =
                [ "norole", "{\"messages\": [{\"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}", "message 1 of \"messages\" has no role (a string: system, user, assistant)"
                  "unknown", chat [ "user", "a"; "robot", "b" ], "message 2 of \"messages\" has the unknown role \"robot\" (roles: system, user, assistant)"
                  "noassistant", chat [ "system", "s"; "user", "a" ], "field \"messages\" has no assistant turn, so no token would count toward the loss"
                  "nocontent", "{\"messages\": [{\"role\": \"user\"}]}", "message 1 of \"messages\" has no content (a string)"
                  "notalist", "{\"messages\": \"hello\"}", "field \"messages\" is not a list of messages (a JSON array of {\"role\", \"content\"} objects)" ]
            for name, line, expected in cases do
                let j = write (Path.Combine(dir, name + ".jsonl")) (good + "\n" + line + "\n")
                let m = refusal (TextFileOptions(TrainFile = j, TestFile = j, Objective = "chat"))
                Expect.equal m (sprintf "%s, line 2: %s" j expected) name
                Expect.isFalse (m.Contains '\n') (name + ": one line")
        }
        test "packing: the packed windows count the same tokens as the padded rows, in the same order and each after the same previous token (instruct and chat); windows of T sharing one token, padding only in the last" {
            let dir = tempDir "chat-packing"
            let pairs = [ "Q: 2+2?\nA: ", "four"; "Say hi: ", "hello there, friend"; "x", "yz"; "Longer one: ", "and a reply"; "p", "" ]
            let sft = write (Path.Combine(dir, "sft.jsonl")) (pairs |> List.map (fun (p, r) -> Json.JsonSerializer.Serialize(dict [ "prompt", p; "response", r ])) |> String.concat "\n")
            let conv = write (Path.Combine(dir, "chat.jsonl")) ([ chat [ "user", "hi?"; "assistant", "yes." ]; chat [ "system", "s"; "user", "and then?"; "assistant", "no."; "user", "ok"; "assistant", "bye" ]; chat [ "user", "q"; "assistant", "a" ] ] |> String.concat "\n")
            // instruct at T = 16 cuts two rows (the cut rows are the same, padded or packed); chat's rows fit in 96.
            for objective, file, t in [ "instruct", sft, 16; "chat", conv, 96 ] do
                let options packing = TextFileOptions(TrainFile = file, TestFile = file, Objective = objective, MaxTokens = t, Packing = packing)
                let padded = jsonl.Load(request (options false))
                let packed = jsonl.Load(request (options true))
                let a, b = countedPairs padded.Train, countedPairs packed.Train
                Expect.isGreaterThan a.Length 10 (objective + ": some tokens count")
                Expect.equal b a (objective + ": (previous input, target) of every counted token, packed = padded")
                Expect.equal (CausalLmTask().Items packed.Train) (CausalLmTask().Items padded.Train) (objective + ": N")
                Expect.equal packed.TrainUtf8Bytes padded.TrainUtf8Bytes (objective + ": the bytes behind them")
                let paddedMask, packedIds, packedMask = padded.Train[Batch.AttentionMask], packed.Train[Batch.InputIds], packed.Train[Batch.AttentionMask]
                let tokens = paddedMask.sum().item<int64>()
                let windows = (tokens - 2L) / int64 (t - 1) + 1L
                Expect.isGreaterThan windows 1L (objective + ": more than one window")
                Expect.equal packedIds.shape [| windows; int64 t |] (objective + ": ⌈(L − 1) / (T − 1)⌉ windows of T")
                Expect.equal (packedMask.sum().item<int64>()) (tokens + windows - 1L) (objective + ": every token once, plus one shared per boundary; no padding before the last window")
                dispose padded; dispose packed
        }
        test "config: a chat_template without {content} and packing with objective classify are refused naming the key" {
            let errs = configErrors "[data]\ndataset = \"jsonl\"\ntrain_file = \"a\"\ntest_file = \"b\"\nobjective = \"chat\"\nchat_template = \"<{role}>\"\n"
            Expect.isTrue (errs |> List.exists (fun e -> e.Contains "chat_template" && e.Contains "holds no {content}")) (sprintf "chat_template: %A" errs)
            let errs2 = configErrors "[data]\ndataset = \"jsonl\"\ntrain_file = \"a\"\ntest_file = \"b\"\npacking = true\n"
            Expect.isTrue (errs2 |> List.exists (fun e -> e.Contains "packing")) (sprintf "packing: %A" errs2)
        }
        test "chat from CSV and Parquet (the messages list as JSON text in a string column, or Parquet's nested list of {role, content} structs) gives bitwise the tensors of the same conversations in JSONL" {
            let dir = tempDir "chat-csv-parquet"
            let convs = [ [ "user", "hi, \"you\"?"; "assistant", "yes." ]; [ "system", "s"; "user", "and?"; "assistant", "no.\nbye" ] ]
            let lists = convs |> List.map (fun turns -> Json.JsonSerializer.Serialize(turns |> List.map (fun (r, c) -> dict [ "role", r; "content", c ])))
            let j = write (Path.Combine(dir, "c.jsonl")) (convs |> List.map chat |> String.concat "\n")
            let c = write (Path.Combine(dir, "c.csv")) ("id,messages\n" + (lists |> List.mapi (fun i m -> sprintf "%d,\"%s\"" i (m.Replace("\"", "\"\""))) |> String.concat "\n") + "\n")
            let p = Path.Combine(dir, "c.parquet")
            FormatExport.WriteParquet(p, [| struct ("messages", (lists |> List.toArray :> Collections.Generic.IReadOnlyList<string>)) |])
            let load (source: string) (file: string) = (DataSources.Get source).Load(request (TextFileOptions(TrainFile = file, TestFile = file, Objective = "chat")))
            let a = load "jsonl" j
            // The nested layout, written by Parquet.Net's serializer from classes.
            let nested = Path.Combine(dir, "nested.parquet")
            let rows = convs |> List.map (fun turns -> ChatRow(messages = Collections.Generic.List(turns |> List.map (fun (r, c) -> ChatMessageRow(role = r, content = c)))))
            Parquet.Serialization.ParquetSerializer.SerializeAsync(rows, nested).GetAwaiter().GetResult() |> ignore
            for source, file in [ "csv", c; "parquet", p; "parquet", nested ] do
                let b = load source file
                for k in [ Batch.InputIds; Batch.AttentionMask; Batch.Targets ] do
                    Expect.isTrue (b.Train[k].shape = a.Train[k].shape && torch.eq(b.Train[k], a.Train[k]).all().item<bool>()) (sprintf "%s: %s bitwise equal" source k)
                dispose b
            dispose a
        }
    ]
