/// The convolutional models: the published ResNet-18 (copied from the package cache, read from ONNX by graph structure,
/// checked against ONNX Runtime on real images), its BatchNorm modes and checkpoints, and the small CNN on Fashion-MNIST.
module Research.Tests.ResNetTests

open System
open System.Diagnostics
open System.IO
open Expecto
open TorchSharp
open Microsoft.ML.OnnxRuntime
open Research.Core.Checkpoints
open Research.Core.Data
open Research.Core.Models

type private Tensor = torch.Tensor

/// The published model, copied once into artifacts/models (Fetch verifies it on every call).
let private onnxPath = lazy (PublishedModels.Fetch(PublishedModels.ResNet18, Path.Combine(TestSupport.repoRoot, "artifacts", "models")).File("ResNet18.onnx"))

let private prepPath = lazy (Path.Combine(Path.GetDirectoryName onnxPath.Value, "ResNetPreprocess.onnx"))

/// Fashion-MNIST from the Debian package, read once by the repository's reader.
let private fashion = lazy (FashionMnist.Load(FashionMnist.DebianDirectory))

let private shapeOf (t: Tensor) = List.ofArray t.shape

let private bitwiseEqual (a: Tensor) (b: Tensor) = torch.eq(a, b).all().item<bool>()

let private maxAbs (t: Tensor) = t.abs().max().item<float32>() |> float

let private stateKeys (m: torch.nn.Module) = m.state_dict().Keys |> List.ofSeq

/// Runs an ONNX file on one [1, 3, 224, 224] image, returning its only output as floats.
let private ortRun (session: InferenceSession) (image: Tensor) =
    let data = image.contiguous().data<float32>().ToArray()
    use input = OrtValue.CreateTensorValueFromMemory(data, [| 1L; 3L; 224L; 224L |])
    use options = new RunOptions()
    use outputs = session.Run(options, [| session.InputNames[0] |], [| input |], [| session.OutputNames[0] |])
    outputs[0].GetTensorDataAsSpan<float32>().ToArray()

let private ortSession (path: string) =
    let options = new SessionOptions(IntraOpNumThreads = 2)
    new InferenceSession(path, options)

/// The published file's graph, parsed once.
let private publishedGraph = lazy (Onnx.MessageParserExtensions.ParseFromFile(Onnx.ModelProto.Parser, onnxPath.Value).Graph)

/// The published weights, read once (by ResNetOnnx.Read, which ResNet.FromOnnx calls).
let private publishedWeights = lazy (ResNetOnnx.Read(publishedGraph.Value, onnxPath.Value))

/// The published trunk with a new head of `classes` outputs.
let private pretrained (classes: int64) =
    let weights = publishedWeights.Value
    let model = ResNet.Create(weights.Blocks, classes, new torch.Generator(1UL))
    model.LoadPretrained(weights.Tensors, onnxPath.Value, weights.Origins)
    model

/// Reads a copy of the published graph after changing it.
let private readDamaged (change: Onnx.GraphProto -> unit) =
    let graph = publishedGraph.Value.Clone()
    change graph
    ResNetOnnx.Read(graph, "damaged.onnx")

let private publishedTests =
    testList "published" [
        test "Fetch copies both ONNX files from the package cache, verified, and keeps a verified copy" {
            let models = TestSupport.tempDir "models"
            let dir = PublishedModels.Fetch(PublishedModels.ResNet18, models).Folder
            Expect.equal dir (Path.Combine(models, PublishedModels.ResNet18)) "the model's folder"
            let model = Path.Combine(dir, "ResNet18.onnx")
            Expect.equal (FileInfo(model).Length) 63653533L "ResNet18.onnx copied whole"
            Expect.isTrue (File.Exists(Path.Combine(dir, "ResNetPreprocess.onnx"))) "ResNetPreprocess.onnx copied"
            let written = File.GetLastWriteTimeUtc model
            PublishedModels.Fetch(PublishedModels.ResNet18, models) |> ignore
            Expect.equal (File.GetLastWriteTimeUtc model) written "a verified copy is not copied again"
            File.WriteAllText(model, "damaged")
            PublishedModels.Fetch(PublishedModels.ResNet18, models) |> ignore
            Expect.equal (FileInfo(model).Length) 63653533L "a damaged copy is replaced"
            Expect.isEmpty (Directory.GetFiles(dir, "*.tmp")) "no temporary file left"
        }

        test "the CNTK file maps by structure onto torchvision's names: 110 initializers, blocks [2, 2, 2, 3], 15,908,800 numbers" {
            let weights = publishedWeights.Value
            Expect.sequenceEqual weights.Blocks ResNet.CntkResNet18Blocks "a third block in layer4"
            Expect.equal (weights.Origins.Values |> Seq.distinct |> Seq.length) 110 "every initializer read, once"
            Expect.equal (weights.Tensors.Values |> Seq.sumBy (fun t -> t.numel())) 15908800L "all the numbers"
            // The projection of layer2 comes first in node order (Convolution295, before Convolution285): mapped by structure.
            Expect.equal weights.Origins["layer2.0.downsample.0.weight"] "Parameter199" "layer2's 1×1 projection"
            Expect.equal weights.Origins["layer2.0.conv1.weight"] "Parameter68" "layer2's first 3×3 conv"
            Expect.equal weights.Origins["conv1.weight"] "Parameter91" "the stem"
            Expect.equal weights.Origins["bn1.running_var"] "Constant99" "BN inputs X, scale, B, mean, var"
            Expect.sequenceEqual weights.Tensors["layer2.0.downsample.0.weight"].shape [| 128L; 64L; 1L; 1L |] "projection shape"
            Expect.isGreaterThan (maxAbs weights.Tensors["bn1.running_var"]) 1000.0 "stem variances in the thousands (0–255 input)"
            use model = new ResNet(weights.Blocks)
            let own = stateKeys model |> List.filter (fun k -> not (k.EndsWith ".num_batches_tracked")) |> set
            Expect.equal (weights.Tensors.Keys |> set) own "the file's names are exactly the model's, counts aside"
        }

        test "ours equals ONNX Runtime on 32 Fashion-MNIST test images at 224 px: max |ours − ORT| ≤ 1e-4 · max |ORT|" {
            use _ = torch.NewDisposeScope()
            let struct (_, testSet) = fashion.Value
            let images = ResNetInput.FromFashionMnist(testSet.Inputs.narrow(0L, 0L, 32L), 224L)
            use model = ResNet.FromOnnx(onnxPath.Value, 0L, new torch.Generator(1UL))
            model.eval()
            let ours = using (torch.no_grad()) (fun _ -> model.forward images)
            Expect.sequenceEqual ours.shape [| 32L; 512L |] "pooled features"
            use session = ortSession onnxPath.Value
            let reference = torch.tensor(Array.concat [ for i in 0L .. 31L -> ortRun session (images[i].unsqueeze(0L)) ]).reshape(32L, 512L)
            let err, scale = maxAbs (ours - reference), maxAbs reference
            printfn "resnet reference: max |ours − ORT| = %.3g, max |ORT| = %.4g, ratio %.3g (32 images, 224 px)" err scale (err / scale)
            Expect.isLessThanOrEqual err (1e-4 * scale) "features equal ONNX Runtime's"
            Expect.isGreaterThan scale 0.1 "the features are not all zero"
        }

        test "ResNetInput matches the published preprocessing up to its mean image: grey in 0–255 BGR minus means" {
            use _ = torch.NewDisposeScope()
            let struct (_, testSet) = fashion.Value
            let x = testSet.Inputs.narrow(0L, 0L, 4L)
            let ours = ResNetInput.FromFashionMnist(x, 224L)
            Expect.sequenceEqual ours.shape [| 4L; 3L; 224L; 224L |] "[B, 3, S, S]"
            // The published chain: RGB on 0–255 into ResNetPreprocess.onnx (RGB → BGR, minus the mean image).
            let rgb = ours + torch.tensor(Seq.toArray ResNetInput.BgrMeans).reshape(1L, 3L, 1L, 1L)
            use prep = ortSession prepPath.Value
            let theirs = torch.tensor(Array.concat [ for i in 0L .. 3L -> ortRun prep (rgb[i].unsqueeze(0L)) ]).reshape(4L, 3L, 224L, 224L)
            let diff = maxAbs (ours - theirs)
            printfn "resnet preprocessing: max |channel means − mean image| = %.2f (0–255 scale)" diff
            Expect.isLessThan diff 13.0 "the mean image stays within 13 of its channel means"
            let white = ResNetInput.FromGrey(torch.ones(1L, 28L, 28L), 64L)
            Expect.sequenceEqual white.shape [| 1L; 3L; 64L; 64L |] "resized to 64"
            for c in 0 .. 2 do
                Expect.floatClose { absolute = 1e-3; relative = 0.0 } (white[0L, int64 c].mean().item<float32>() |> float) (255.0 - float ResNetInput.BgrMeans[c]) "white is 255 − the channel's mean"
        }
    ]

let private loaderTests =
    testList "loader" [
        test "parameter and buffer names are torchvision's, in torchvision's order (parameters, then buffers)" {
            use model = ResNet.Create(ResNet.ResNet18Blocks, 10L, new torch.Generator(1UL))
            let bn p = [ "weight"; "bias"; "running_mean"; "running_var"; "num_batches_tracked" ] |> List.map (sprintf "%s.%s" p)
            let block s b =
                let p = sprintf "layer%d.%d" s b
                [ p + ".conv1.weight" ] @ bn (p + ".bn1") @ [ p + ".conv2.weight" ] @ bn (p + ".bn2")
                @ (if s > 1 && b = 0 then [ p + ".downsample.0.weight" ] @ bn (p + ".downsample.1") else [])
            let expected =
                [ "conv1.weight" ] @ bn "bn1" @ [ for s in 1 .. 4 do for b in 0 .. 1 do yield! block s b ] @ [ "head.weight"; "head.bias" ]
            let isBuffer (k: string) = k.EndsWith "running_mean" || k.EndsWith "running_var" || k.EndsWith "num_batches_tracked"
            // TorchSharp's state_dict lists every parameter, then every buffer (PyTorch interleaves them by module).
            Expect.sequenceEqual (stateKeys model) (List.filter (isBuffer >> not) expected @ List.filter isBuffer expected) "state_dict keys"
            Expect.equal (model.parameters() |> Seq.sumBy (fun p -> p.numel())) (11176512L + 5130L) "torchvision's ResNet-18 trunk and a 10-class head"
        }

        test "LoadPretrained refuses a missing or mis-shaped tensor naming it, and changes nothing" {
            use model = ResNet.Create(ResNet.ResNet18Blocks, 0L, new torch.Generator(1UL))
            use donor = ResNet.Create(ResNet.ResNet18Blocks, 0L, new torch.Generator(2UL))
            let before = (model.state_dict()["layer1.0.conv1.weight"]).clone()
            let complete = donor.state_dict() |> Seq.map (fun kv -> kv.Key, kv.Value) |> dict
            let without = complete |> Seq.filter (fun kv -> kv.Key <> "layer3.1.bn2.running_var") |> Seq.map (fun kv -> kv.Key, kv.Value) |> readOnlyDict
            let e = Expect.throwsC (fun () -> model.LoadPretrained(without, "donor")) id
            Expect.stringContains e.Message "missing [layer3.1.bn2.running_var]" "names the missing tensor"
            let reshaped = complete |> Seq.map (fun kv -> kv.Key, (if kv.Key = "conv1.weight" then kv.Value.reshape(64L, 3L, 49L) else kv.Value)) |> readOnlyDict
            let e = Expect.throwsC (fun () -> model.LoadPretrained(reshaped, "donor")) id
            Expect.stringContains e.Message "conv1.weight: model [64×3×7×7], file [64×3×49]" "names the mis-shaped tensor and both shapes"
            Expect.isTrue (bitwiseEqual (model.state_dict()["layer1.0.conv1.weight"]) before) "nothing loaded"
            model.LoadPretrained(complete |> Seq.map (fun kv -> kv.Key, kv.Value) |> readOnlyDict, "donor")
            Expect.isTrue (bitwiseEqual (model.state_dict()["layer1.0.conv1.weight"]) complete["layer1.0.conv1.weight"]) "a complete set loads"
        }

        test "the ONNX reader refuses a missing or mis-shaped initializer naming it and the layer" {
            let e = Expect.throwsC (fun () -> (readDamaged (fun g -> g.Initializer.Remove(g.Initializer |> Seq.find (fun t -> t.Name = "Parameter68")) |> ignore)).Dispose()) id
            Expect.stringContains e.Message "damaged.onnx: layer2.0.conv1.weight (input 1 of Conv Convolution285): initializer Parameter68 is missing" "names it"
            use reshaped = readDamaged (fun g ->
                let t = g.Initializer |> Seq.find (fun t -> t.Name = "Parameter91")
                t.Dims.Clear()
                t.Dims.AddRange [ 64L; 3L; 49L ])
            use model = new ResNet(reshaped.Blocks)
            let e = Expect.throwsC (fun () -> model.LoadPretrained(reshaped.Tensors, "damaged.onnx", reshaped.Origins)) id
            Expect.stringContains e.Message "conv1.weight (Parameter91): model [64×3×7×7], file [64×3×49]" "names it, its initializer and both shapes"
            let e = Expect.throwsC (fun () -> (readDamaged (fun g -> g.Initializer.[0].Dims.Add 2L)).Dispose()) id
            Expect.stringContains e.Message "initializer Parameter10 holds 2359296 numbers, its dims [512, 512, 3, 3, 2] promise 4718592" "dims that promise more numbers than the file holds"
            let e = Expect.throwsC (fun () -> (readDamaged (fun g ->
                let pads = (g.Node |> Seq.find (fun n -> n.Name = "Convolution285")).Attribute |> Seq.find (fun a -> a.Name = "pads")
                pads.Ints.Clear()
                pads.Ints.AddRange [ 1L; 1L; 1L; 1L ])).Dispose()) id
            Expect.stringContains e.Message "Conv Convolution285 has pads [1, 1, 1, 1]; the ResNet this reads into computes [1, 1, 0, 0]" "a computation we do not do is refused"
            let e = Expect.throwsC (fun () -> ResNetOnnx.Read(Path.Combine(TestSupport.tempDir "resnet-onnx", "absent.onnx")).Dispose()) id
            Expect.stringContains e.Message "absent.onnx: no such ONNX file" "a missing file"
        }

        test "image sides that are not multiples of 32 are refused; 64 and 224 give features [B, 512]" {
            use model = ResNet.Create(ResNet.ResNet18Blocks, 0L, new torch.Generator(1UL))
            model.eval()
            use _ = torch.no_grad()
            for side in [ 64L; 96L ] do
                Expect.sequenceEqual (model.forward(torch.zeros(2L, 3L, side, side)).shape) [| 2L; 512L |] (sprintf "features at %d px" side)
            let e = Expect.throwsC (fun () -> model.forward(torch.zeros(1L, 3L, 48L, 48L)) |> ignore) id
            Expect.stringContains e.Message "multiples of 32" "says why"
        }
    ]

/// A small batch at 64 px for BatchNorm tests.
let private batch64 seed = torch.randn([| 4L; 3L; 64L; 64L |], generator = new torch.Generator(uint64 seed)).mul(torch.tensor 60.0f)

let private batchNormTests =
    testList "batchnorm" [
        test "running statistics are state_dict buffers and round-trip through the checkpoint writer" {
            use a = ResNet.Create(ResNet.ResNet18Blocks, 3L, new torch.Generator(1UL))
            a.train()
            using (torch.no_grad()) (fun _ -> a.forward(batch64 3) |> ignore)
            let sd = a.state_dict()
            Expect.equal (sd["layer4.1.bn2.num_batches_tracked"].item<int64>()) 1L "one batch counted"
            Expect.isFalse (bitwiseEqual sd["bn1.running_mean"] (torch.zeros(64L))) "a training forward moved the running mean"
            let buffers = a.named_buffers() |> Seq.map (fun struct (n, _) -> n) |> set
            Expect.equal buffers.Count (20 * 3) "mean, variance and count of each of the 20 BatchNorm layers"
            Expect.isTrue (buffers |> Set.forall (fun n -> sd.ContainsKey n)) "every buffer is in state_dict"
            let file = Path.Combine(TestSupport.tempDir "resnet-ckpt", WeightFile.FileName)
            WeightFile.Save(a, file)
            use b = ResNet.Create(ResNet.ResNet18Blocks, 3L, new torch.Generator(2UL))
            let report = WeightFile.Load(b, file, true, [||])
            Expect.isTrue report.IsComplete "strict load of every key"
            for KeyValue (k, v) in b.state_dict() do Expect.isTrue (bitwiseEqual v sd[k]) (sprintf "%s round-trips" k)
            a.eval(); b.eval()
            use _ = torch.no_grad()
            let x = batch64 4
            Expect.isTrue (bitwiseEqual (a.forward x) (b.forward x)) "equal eval outputs"
        }

        test "frozen statistics: a training step changes the weights and leaves running_mean and the counts unchanged" {
            use model = pretrained 10L
            model.FreezeBatchNormStatistics <- true
            model.train()
            Expect.isTrue model.training "the model trains"
            let bns = model.modules() |> Seq.filter (fun m -> m :? Modules.BatchNorm2d) |> List.ofSeq
            Expect.equal bns.Length 22 "22 BatchNorm layers in the CNTK ResNet"
            Expect.isTrue (bns |> List.forall (fun m -> not m.training)) "every BatchNorm layer in eval mode"
            let sd = model.state_dict()
            let before = sd |> Seq.map (fun kv -> kv.Key, kv.Value.clone()) |> dict
            use opt = torch.optim.AdamW(model.parameters(), 1e-3)
            use _ = torch.NewDisposeScope()
            let y = torch.tensor([| 0L; 1L; 2L; 3L |])
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model.forward(batch64 5), y).backward()
            opt.step() |> ignore
            for k in [ "bn1.running_mean"; "layer2.0.bn1.running_mean"; "layer4.2.bn2.running_var"; "layer3.0.downsample.1.running_mean"; "bn1.num_batches_tracked" ] do
                Expect.isTrue (bitwiseEqual sd[k] before[k]) (sprintf "%s unchanged" k)
            for k in [ "conv1.weight"; "layer4.2.conv2.weight"; "bn1.weight"; "head.weight" ] do
                Expect.isFalse (bitwiseEqual sd[k] before[k]) (sprintf "%s changed" k)
            model.FreezeBatchNormStatistics <- false
            Expect.isTrue (bns |> List.forall (fun m -> m.training)) "unfrozen: the BatchNorm layers train again"
        }

        test "eval mode: an image's features do not depend on its batch-mates and the statistics stay; train mode: both change" {
            use model = pretrained 0L
            use _ = torch.no_grad()
            let x = ResNetInput.FromGrey(torch.rand([| 4L; 28L; 28L |], generator = new torch.Generator(6UL)), 64L)
            let mean () = (model.state_dict()["layer1.0.bn1.running_mean"]).clone()
            model.eval()
            let m0 = mean ()
            let alone, inBatch = model.forward(x.narrow(0L, 0L, 1L)), model.forward(x).narrow(0L, 0L, 1L)
            Expect.isLessThanOrEqual (maxAbs (alone - inBatch)) (1e-4 * maxAbs alone) "eval: same features alone or in a batch"
            Expect.isTrue (bitwiseEqual (mean ()) m0) "eval: running mean unchanged"
            model.train()
            let trainAlone, trainInBatch = model.forward(x.narrow(0L, 0L, 2L)).narrow(0L, 0L, 1L), model.forward(x).narrow(0L, 0L, 1L)
            Expect.isGreaterThan (maxAbs (trainAlone - trainInBatch)) (1e-2 * maxAbs trainAlone) "train: batch statistics differ between batches"
            Expect.isFalse (bitwiseEqual (mean ()) m0) "train: running mean moved"
            Expect.isGreaterThan (maxAbs (trainInBatch - inBatch)) (1e-2 * maxAbs inBatch) "train and eval outputs differ"
        }
    ]

let private cnnTests =
    testList "cnn" [
        test "names conv1, conv2, fc, head; 421,642 parameters for 10 classes; [B, 784] equals [B, 1, 28, 28]; seeded" {
            use a = Cnn.Create(10L, new torch.Generator(7UL))
            let names = a.named_parameters() |> Seq.map (fun struct (n, _) -> n) |> List.ofSeq
            Expect.sequenceEqual names [ for l in [ "conv1"; "conv2"; "fc"; "head" ] do for p in [ "weight"; "bias" ] -> l + "." + p ] "parameter names"
            Expect.equal (a.parameters() |> Seq.sumBy (fun p -> p.numel())) 421642L "parameter count"
            torch.rand([| 100L |]).Dispose()
            use b = Cnn.Create(10L, new torch.Generator(7UL))
            for (p, q) in Seq.zip (a.parameters()) (b.parameters()) do Expect.isTrue (bitwiseEqual p q) "same seed, same weights"
            let bound = 1.0 / sqrt 9.0
            Expect.isLessThanOrEqual (maxAbs (a.parameters() |> Seq.head)) bound "conv1 ~ U(±1/√(1·3·3))"
            use _ = torch.no_grad()
            let x = torch.randn([| 3L; 784L |], generator = new torch.Generator(8UL))
            Expect.isTrue (bitwiseEqual (a.forward x) (a.forward(x.view(3L, 1L, 28L, 28L)))) "flat and image inputs agree"
            Expect.throwsC (fun () -> a.forward(torch.zeros(2L, 785L)) |> ignore) id |> ignore
        }

        test "trains on 2,000 Fashion-MNIST images to ≥ 0.80 accuracy on 1,000 held-out ones" {
            let struct (trainSet, testSet) = fashion.Value
            use model = Cnn.Create(10L, new torch.Generator(11UL))
            use opt = torch.optim.AdamW(model.parameters(), 2e-3)
            let x, y = trainSet.Inputs.narrow(0L, 0L, 2000L), trainSet.Targets.narrow(0L, 0L, 2000L)
            let order = new torch.Generator(12UL)
            let clock = Stopwatch.StartNew()
            let steps = 300
            model.train()
            for step in 0 .. steps - 1 do
                use _ = torch.NewDisposeScope()
                let idx = torch.randint(0L, 2000L, [| 32L |], generator = order)
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model.forward(x.index_select(0L, idx)), y.index_select(0L, idx)).backward()
                opt.step() |> ignore
            model.eval()
            let accuracy =
                use _ = torch.no_grad()
                let predicted = model.forward(testSet.Inputs.narrow(0L, 0L, 1000L)).argmax(1L)
                torch.eq(predicted, testSet.Targets.narrow(0L, 0L, 1000L)).to_type(torch.float32).mean().item<float32>() |> float
            printfn "cnn: %d AdamW steps of 32 on 2,000 images, held-out accuracy %.3f on 1,000 test images, %.1f s" steps accuracy clock.Elapsed.TotalSeconds
            Expect.isGreaterThanOrEqual accuracy 0.80 "held-out accuracy"
        }
    ]

let tests =
    testSequenced <| testList "resnet" [ publishedTests; loaderTests; batchNormTests; cnnTests ]
