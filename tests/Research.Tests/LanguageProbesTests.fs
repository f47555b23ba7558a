/// `[probes] captions` and `[probes] text`: the batched class-word decoding against item-by-item generation, the refusals
/// of configs that cannot have them, and a VLM study that records both (each task's caption scores as a probe row and
/// as metrics; the language model's loss on its pre-training text at the start and after each task).
module Research.Tests.LanguageProbesTests

open System
open System.IO
open Expecto
open TorchSharp
open Research.Abstractions
open Research.Core
open Research.Core.Data
open Research.Core.Models
open Research.Core.Models.Kinds
open Research.Core.Text
open Research.Tests.TestSupport

/// T: room for the longest byte caption (52 bytes) with its begin and end ids.
let private context = 64L

let private vlm (seed: uint64) =
    let shape =
        DataShape("fashion-captions", InputKind.ImagesAndTokens, context, 10,
                  NextToken = true, ImageSide = 28, Tokenizer = "bytes", Vocabulary = 257)
    let modelContext = ModelContext(ModelKeys("vlm", 0, "", true, [||]), shape, ModelTarget(context, 10), "")
    let o = VlmOptions(Encoder = "cnn", LanguageModel = "gpt", PrefixTokens = 2, ConnectorHidden = 16,
                       Gpt = GptOptions(Width = 16, Layers = 1, Heads = 2))
    let kind = VlmKind()
    use g = new torch.Generator(seed)
    kind.Create(kind.Resolve(o, modelContext), modelContext, g) :?> Vlm

/// Twenty captioned random images (two of each class) in the held-out phrasings, as the test split has them.
let private captions () =
    use g = new torch.Generator(21UL)
    use images = new TensorDataset(torch.randn([| 20L; 784L |], generator = g), torch.arange(20L).remainder(torch.tensor 10L), 10)
    use stream = Seeds.Generator(3L, "captions/test")
    new TensorDataset(FashionCaptionSource.Items(images, ByteTokenizer(), int context, 0, 10, stream), 10)

let private metricValues (runDir: string) (key: string) =
    Research.Tests.TrainingTests.storeRows runDir (sprintf "SELECT step, value FROM metrics WHERE key = '%s' ORDER BY step" key)
    |> List.map (fun r -> Convert.ToInt64 r[0], Convert.ToDouble r[1])

let tests =
    testList "language-probes" [
        test "batched class-word decoding equals item-by-item greedy generation: the same tokens for each of 20 items, in batches of 7 and of 20" {
            use model = vlm 4UL
            use items = captions ()
            let t = items.Tensors
            let one =
                [| for i in 0L .. 19L ->
                    let s = t[FashionCaptionSource.WordStart].[i].item<int64>()
                    let e = t[FashionCaptionSource.WordEnd].[i].item<int64>()
                    let prompt = t[Batch.InputIds].[i].data<int64>().ToArray().[.. int s - 1]
                    use image = t[Batch.Image].narrow(0, i, 1L)
                    model.Generate(image, prompt, GenerationOptions(int (e - s), Decoding.Greedy())) |]
            for batch in [ 7; 20 ] do
                let picks = CaptionMetrics.ClassWordPicks(model, items, 20, batch)
                Expect.equal picks.Length 20 "one pick list per item"
                for i in 0 .. 19 do Expect.sequenceEqual picks[i] one[i] $"item {i}, batches of {batch}"
            // The score counts what the picks say: a word is an exact match when all its tokens are the truth's.
            let score = CaptionMetrics.Score(model, items, 20, ByteTokenizer(), 7)
            let truth i =
                let s, e = t[FashionCaptionSource.WordStart].[int64 i].item<int64>(), t[FashionCaptionSource.WordEnd].[int64 i].item<int64>()
                t[Batch.InputIds].[int64 i].data<int64>().ToArray().[int s .. int e - 1]
            let exact = [ 0 .. 19 ] |> List.filter (fun i -> one[i] = truth i) |> List.length
            let right = [ 0 .. 19 ] |> List.sumBy (fun i -> Array.zip one[i] (truth i) |> Array.filter (fun (a, b) -> a = b) |> Array.length)
            Expect.equal (score.Items, score.ExactMatches, score.CorrectTokens) (20L, int64 exact, int64 right) "the counts of the picks"
            // The named class: the first class word of the 24 tokens it goes on to write, to its end id.
            let named =
                [ for i in 0L .. 19L ->
                    let s = t[FashionCaptionSource.WordStart].[i].item<int64>()
                    let prompt = t[Batch.InputIds].[i].data<int64>().ToArray().[.. int s - 1]
                    use image = t[Batch.Image].narrow(0, i, 1L)
                    let written = model.Generate(image, prompt, GenerationOptions(CaptionMetrics.Continuation, Decoding.Greedy())) |> Array.takeWhile (fun id -> id <> 256L)
                    CaptionMetrics.FirstClass(ByteTokenizer().Decode(written |> Array.map int)) = int (t[TensorDataset.Labels].[i].item<int64>()) ]
            Expect.equal score.NamedRight (named |> List.filter id |> List.length |> int64) "named: the first class word of each continuation"
            Expect.equal score.WordTokens (int64 ([ 0 .. 19 ] |> List.sumBy (fun i -> (truth i).Length))) "every class-word token"
        }
        test "the first class word named: whole words only, the longest at a place (t-shirt, not shirt), none in a word (bagel)" {
            for text, expected in [ " grey coat, seen from the front", 4; " t-shirt", 0; " shirt", 6; " pair of trousers", 1
                                    " old bagel", -1; "sandals and a bag", 8; "", -1; "a dress or a coat", 3; "ankle boot", 9 ] do
                Expect.equal (CaptionMetrics.FirstClass text) expected $"'{text}'"
        }
        test "probes that a run cannot have are refused in one line naming the key: captions without a VLM, a missing text config, text of another tokenizer" {
            let dir = tempDir "language-probes-bad"
            let refuse (body: string) =
                let file = Path.Combine(dir, "bad.toml")
                File.WriteAllText(file, body)
                let r = research dir [ "train"; file; "--dry-run" ]
                Expect.notEqual r.ExitCode 0 $"refused: {body}"
                let lines = r.Err.Trim().Split('\n')
                Expect.equal lines.Length 1 (sprintf "one line: %A" lines)
                lines[0]
            let line = refuse "[data]\ndataset = \"fashion-mnist\"\n[probes]\ncaptions = 10\n"
            Expect.stringContains line "bad.toml: probes.captions: " "captions need a VLM"
            let line = refuse "[data]\ndataset = \"fashion-captions\"\n[model]\nkind = \"vlm\"\nencoder = \"cnn\"\n[probes]\ntext = \"missing.toml\"\n"
            Expect.stringContains line "bad.toml: probes.text: \"missing.toml\": no such config file" "a missing text config names the key and the file"
            File.WriteAllText(Path.Combine(dir, "gpt2-text.toml"), "[data]\ndataset = \"fortunes\"\ntask = \"causal-lm\"\ntokenizer = \"gpt2\"\n[model]\nkind = \"gpt\"\n")
            let line = refuse "[data]\ndataset = \"fashion-captions\"\n[model]\nkind = \"vlm\"\nencoder = \"cnn\"\n[probes]\ntext = \"gpt2-text.toml\"\n"
            Expect.stringContains line "bad.toml: probes.text: " "names the key"
            Expect.stringContains line "tokenized by gpt2" "and the tokenizers that differ"
        }
        test "a VLM study records each task's caption scores (a row of 2 per task, and metrics caption_exact_match/taskJ) and the language model's text loss: the start's at step 0, text_loss_increase = text_loss − the start's (1e-12); research generate captions a test image and a PNG, and refuses an image of another size (replay on: a replayed caption's targets are tokens, checked against the vocabulary)" {
            let dir = tempDir "language-probes-study"
            File.WriteAllText(Path.Combine(dir, "text.toml"),
                "[data]\ndataset = \"fortunes\"\ntask = \"causal-lm\"\ntokenizer = \"bytes\"\ncontext = 32\nsplit_seed = 0\n[model]\nkind = \"gpt\"\n")
            let file = Path.Combine(dir, "study.toml")
            File.WriteAllText(file, sprintf "[run]\nname = \"vlm-probes\"\nseed = 2\nthreads = 1\noutput_dir = \"%s\"\n[data]\ndataset = \"fashion-captions\"\ntrain_limit = 64\nbatch_size = 16\neval_batch_size = 64\n[model]\nkind = \"vlm\"\nencoder = \"cnn\"\nprefix_tokens = 2\n[model.gpt]\nwidth = 16\nlayers = 1\nheads = 2\n[train]\nepochs = 1\n[study]\nbenchmark = \"split-class\"\nclasses_per_task = 5\n[probes]\ncaptions = 12\ntext = \"text.toml\"\ntext_items = 8\n[[methods]]\nname = \"replay\"\nselection = \"task-balanced\"\nbudget = 16\nmix_ratio = 0.25\n" (Path.Combine(dir, "runs").Replace("\\", "/")))
            let r = research dir [ "study"; file ]
            Expect.equal r.ExitCode 0 $"the study ran: {r.Err}"
            let runDir = Directory.GetDirectories(Path.Combine(dir, "runs")) |> Array.exactlyOne
            use store = Research.Core.Tracking.RunReader.Open(Path.Combine(runDir, Research.Core.Tracking.RunStore.FileName))
            let record = Research.Core.Studies.StudyRecord.Load(store, (Seq.exactlyOne (store.Runs())).Id)
            for name in [ "caption_exact_match"; "caption_token_accuracy" ] do
                let rows = record.Probes[name]
                Expect.equal (rows |> Array.map Array.length) [| 2; 2 |] $"{name}: after each task, a value per task"
                for row in rows do for v in row do Expect.isTrue (v >= 0.0 && v <= 1.0) $"{name} {v} in [0, 1]"
            let exact1 = metricValues runDir "caption_exact_match/task1"
            Expect.equal exact1.Length 2 "task 1's captions scored after each task"
            Expect.equal (snd exact1[1]) record.Probes["caption_exact_match"].[1].[1] "the metric is the record's cell"
            let text = metricValues runDir "text_loss"
            Expect.equal text.Length 3 "the start and after each task"
            Expect.equal (fst text[0]) 0L "the start's at step 0"
            Expect.isTrue (File.Exists(Path.Combine(runDir, "probes", "text-start.safetensors"))) "the start is kept for a resume"
            let increase = metricValues runDir "text_loss_increase"
            for (step, v), (_, loss) in List.zip increase (List.tail text) do
                Expect.floatClose { absolute = 1e-12; relative = 0.0 } v (loss - snd text[0]) $"step {step}: the increase over the start"
            Expect.isGreaterThan (snd text[0]) 4.0 "an untrained language model is near ln 257 ≈ 5.5 nats per byte, not 0"
            // research generate with an image of the test split, with a 28×28 PNG file, and a file of another size.
            let generated = research dir [ "generate"; runDir; "--image"; "3"; "--greedy"; "--max-tokens"; "8" ]
            Expect.equal generated.ExitCode 0 $"generate --image 3: {generated.Err}"
            Expect.isNonEmpty (generated.Out.Trim()) "a caption is printed"
            for side in [ 28; 20 ] do
                let png = Path.Combine(dir, sprintf "grey%d.png" side)
                let made = runProcess dir "/usr/bin/python3" [ "-c"; sprintf "from PIL import Image; Image.new('L', (%d, %d), 128).save('%s')" side side png ]
                Expect.equal made.ExitCode 0 $"PIL wrote {png}: {made.Err}"
            let fromFile = research dir [ "generate"; runDir; "--image"; Path.Combine(dir, "grey28.png"); "--greedy"; "--max-tokens"; "8" ]
            Expect.equal fromFile.ExitCode 0 $"generate --image grey28.png: {fromFile.Err}"
            let wrongSize = research dir [ "generate"; runDir; "--image"; Path.Combine(dir, "grey20.png"); "--greedy" ]
            Expect.notEqual wrongSize.ExitCode 0 "a 20×20 image is refused"
            Expect.stringContains wrongSize.Err "grey20.png: 20×20 pixels; the captions' images are 28×28" "naming the file and the size"
            Expect.isFalse (wrongSize.Err.Contains "   at ") "no stack trace"
        }
    ]
