/// Each model kind through `research train` on real data (English fortunes, Fashion-MNIST), the published models loaded
/// strictly by init_from, BatchNorm statistics as state, `research generate` and `research export`.
module Research.Tests.ModelKindTests

open System
open System.IO
open Expecto
open Research.Core.Checkpoints
open Research.Core.Models
open Research.Tests.TestSupport

let private writeConfig (dir: string) (name: string) (text: string) =
    let path = Path.Combine(dir, name + ".toml")
    File.WriteAllText(path, text)
    path

let private tensorsOf (checkpoint: string) =
    TorchSharp.PyBridge.Safetensors.LoadStateDict(Path.Combine(checkpoint, WeightFile.FileName))

let private final (dir: string) = Path.Combine(onlyRunDir dir, "checkpoints", "final")

/// The models folder the tests share (fetched once from the package cache, as the ResNet and MiniLM tests do).
let private modelsDir = Path.Combine(repoRoot, "artifacts", "models")

let private bertConfig (dir: string) (extra: string) =
    writeConfig dir "bert" $"""
[run]
name = "bert"
seed = 3
[data]
dataset = "fortunes"
tokenizer = "wordpiece"
topics = ["science", "work"]
context = 32
validation_fraction = 0.05
test_fraction = 0.05
train_limit = 64
batch_size = 32
eval_batch_size = 128
[model]
kind = "bert"
init_from = "all-MiniLM-L6-v2"
models_dir = "{modelsDir}"
[optimizer]
lr = 2e-5
[schedule]
name = "constant"
[train]
epochs = 1
log_every = 1
{extra}
"""

let private resnetConfig (dir: string) (batchNorm: string) =
    writeConfig dir ("resnet-" + batchNorm) $"""
[run]
name = "resnet-{batchNorm}"
seed = 3
[data]
dataset = "fashion-mnist"
classes = [0, 1]
train_limit = 64
validation_fraction = 0.05
batch_size = 32
eval_batch_size = 500
[model]
kind = "resnet"
init_from = "resnet18-imagenet"
models_dir = "{modelsDir}"
image_side = 32
batch_norm = "{batchNorm}"
outputs = 2
[optimizer]
lr = 1e-4
[schedule]
name = "constant"
[train]
epochs = 1
log_every = 1
"""

let tests =
    testList "model kinds" [
        test "gpt on English fortunes (bytes): a causal LM trains, bits per byte = loss / ln 2 (one byte per token, 1e-9), generate is seeded and greedy is deterministic, export round-trips through GPT-2's layout" {
            let dir = tempDir "gpt"
            let r = research dir [ "train"; fortunesGptConfig dir "" ]
            Expect.equal r.ExitCode 0 r.Err
            Expect.stringContains r.Out "bits/byte" "a language model's figures"
            let runDir = onlyRunDir dir
            let losses = Research.Tests.TrainingTests.storeRows runDir "SELECT value FROM metrics WHERE key = 'train_loss' ORDER BY step" |> List.map (fun row -> Convert.ToDouble row[0])
            Expect.isLessThan (List.last losses) (List.head losses - 0.5) "the loss falls by more than 0.5 nats per token in 30 steps"
            let evals = Research.Tests.TrainingTests.storeRows runDir "SELECT e.split, e.loss, m.value FROM evaluations e JOIN metrics m ON m.step = e.step AND m.key = e.split || '_bits_per_byte'"
            Expect.hasLength evals 2 "val and test, each with bits per byte"
            for row in evals do
                let loss, bpb = Convert.ToDouble row[1], Convert.ToDouble row[2]
                Expect.floatClose { absolute = 1e-9; relative = 1e-9 } bpb (loss / Math.Log 2.0) (sprintf "%O: bits per byte" row[0])
            let generate extra = research dir ([ "generate"; runDir; "--prompt"; "Life is"; "--max-tokens"; "40" ] @ extra)
            let greedy1, greedy2 = generate [ "--greedy" ], generate [ "--greedy" ]
            Expect.equal greedy1.ExitCode 0 greedy1.Err
            Expect.isTrue (greedy1.Out.StartsWith "Life is") greedy1.Out
            Expect.equal greedy1.Out greedy2.Out "greedy decoding is deterministic"
            let s1, s2, s3 = generate [ "--seed"; "5"; "--top-k"; "20" ], generate [ "--seed"; "5"; "--top-k"; "20" ], generate [ "--seed"; "6"; "--top-k"; "20" ]
            Expect.equal s1.Out s2.Out "the same seed samples the same text"
            Expect.notEqual s1.Out s3.Out "another seed, another text"
            // Export, then train zero further steps from it: the same validation loss as the run's own checkpoint.
            let exported = Path.Combine(dir, "gpt2.safetensors")
            let e = research dir [ "export"; runDir; "-o"; exported ]
            Expect.equal e.ExitCode 0 e.Err
            let names = SafetensorsCheck.Names exported
            Expect.contains names "transformer.h.0.attn.c_attn.weight" "GPT-2's names"
            let ours = tensorsOf (final dir)
            use stored = TorchSharp.PyBridge.Safetensors.LoadStateDict(exported).["transformer.h.1.mlp.c_fc.weight"]
            Expect.isTrue (stored.allclose(ours.["h.1.mlp.c_fc.weight"].t(), 0.0, 0.0)) "Conv1D weights are stored transposed"
            let evalOurs = research dir [ "eval"; final dir ]
            let evalExported = research dir [ "eval"; final dir; "--set"; sprintf "model.init_from=\"%s\"" exported ]
            Expect.equal evalOurs.ExitCode 0 evalOurs.Err
            Expect.equal evalExported.ExitCode 0 evalExported.Err
            Expect.equal evalExported.Out.[evalExported.Out.IndexOf("  val")..] evalOurs.Out.[evalOurs.Out.IndexOf("  val")..] "the exported file evaluates as the checkpoint"
        }

        test "bert from all-MiniLM-L6-v2 on two fortune topics: init_from loads the published body strictly (101 tensors), the head is new, and a wrong tokenizer or kind is refused naming the key" {
            let dir = tempDir "bert"
            let r = research dir [ "train"; bertConfig dir "" ]
            Expect.equal r.ExitCode 0 r.Err
            Expect.stringContains r.Out "101 tensors into the BERT body" "the published body, every tensor"
            Expect.stringContains r.Out "head new" "a new head"
            let tensors = tensorsOf (final dir)
            Expect.equal tensors.["head.weight"].shape [| 2L; 384L |] "a head of two topics on the 384-wide embedding"
            Expect.isTrue (tensors.ContainsKey "encoder.layer.5.output.LayerNorm.weight") "Hugging Face's names"
            let wrongTokenizer = research dir [ "train"; bertConfig dir ""; "--set"; "data.tokenizer=\"bytes\"" ]
            Expect.equal wrongTokenizer.ExitCode 2 wrongTokenizer.Err
            Expect.stringContains wrongTokenizer.Err "data.tokenizer" "the key"
            let wrongKind = research dir [ "train"; bertConfig dir ""; "--set"; "model.kind=\"resnet\"" ]
            Expect.equal wrongKind.ExitCode 2 wrongKind.Err
            Expect.stringContains wrongKind.Err "model.kind" "the key"
        }

        test "resnet from ImageNet ResNet-18 on Fashion-MNIST: BatchNorm running statistics are checkpointed — updated by training when batch_norm = update, bitwise the published ones when frozen" {
            let dir = tempDir "resnet"
            let published =
                use w = ResNetOnnx.Read(PublishedModels.Fetch(PublishedModels.ResNet18, modelsDir).File("ResNet18.onnx"))
                w.Tensors.["layer1.0.bn1.running_mean"].clone()
            for mode, same in [ "update", false; "frozen", true ] do
                let sub = Path.Combine(dir, mode)
                Directory.CreateDirectory sub |> ignore
                let r = research sub [ "train"; resnetConfig sub mode ]
                Expect.equal r.ExitCode 0 r.Err
                Expect.stringContains r.Out "ResNet [2, 2, 2, 3]" "the published stages"
                let tensors = tensorsOf (final sub)
                Expect.equal (tensors.["layer1.0.bn1.running_mean"].allclose(published, 0.0, 0.0)) same (sprintf "batch_norm = %s: running mean %s" mode (if same then "kept" else "moved"))
        }

        test "cnn on Fashion-MNIST trains from scratch, and kinds that read other data are refused naming model.kind" {
            let dir = tempDir "cnn"
            let config = writeConfig dir "cnn" $"[run]\nname = \"cnn\"\n[data]\ndataset = \"fashion-mnist\"\ntrain_limit = 512\nbatch_size = 64\n[model]\nkind = \"cnn\"\n[train]\nlog_every = 1\n"
            let r = research dir [ "train"; config ]
            Expect.equal r.ExitCode 0 r.Err
            let tensors = tensorsOf (final dir)
            Expect.equal tensors.["conv2.weight"].shape [| 64L; 32L; 3L; 3L |] "conv2"
            for kind in [ "gpt"; "bert" ] do
                let refused = research dir [ "train"; config; "--set"; sprintf "model.kind=\"%s\"" kind ]
                Expect.equal refused.ExitCode 2 refused.Err
                Expect.stringContains refused.Err "model.kind" kind
            let lm = research dir [ "train"; config; "--set"; "data.task=\"causal-lm\"" ]
            Expect.equal lm.ExitCode 2 lm.Err
            Expect.stringContains lm.Err "data.task" "causal-lm on images"
        }
    ]
