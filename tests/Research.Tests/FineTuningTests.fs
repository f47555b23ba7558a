/// What the fine-tuning studies are built from: a study over datasets (English then German fortunes), a task of 0 epochs
/// that a pre-trained model has already learned, every task's validation split at each evaluation, a task-balanced
/// replay memory, the head fitted as a linear probe (LP, LP-FT) and the representation probes of a run.
module Research.Tests.FineTuningTests

open System
open System.IO
open Expecto
open Research.Core.Checkpoints
open Research.Core.Config
open Research.Core.Plugins
open Research.Core.Probes
open Research.Core.Training
open Research.Tests.TestSupport

let private host = lazy (PluginHost.Load([]))

let private rows (runDir: string) sql = Research.Tests.TrainingTests.storeRows runDir sql

let private metric (runDir: string) (key: string) =
    match rows runDir (sprintf "SELECT value FROM metrics WHERE key = '%s' ORDER BY step DESC LIMIT 1" key) with
    | [ r ] -> Convert.ToDouble r[0]
    | rs -> failtestf "metric %s: %d rows" key rs.Length

/// A 2-task study of a tiny GPT (d 32, 1 layer, 32-byte windows) over English then German fortunes, 48 training windows
/// per task, with extra TOML.
let private textStudy (dir: string) (extra: string) =
    let path = Path.Combine(dir, "lm.toml")
    File.WriteAllText(path, sprintf """
[run]
name = "lm"
seed = 2
threads = 1
output_dir = "%s"
[data]
dataset = "fortunes"
task = "causal-lm"
tokenizer = "bytes"
context = 32
train_limit = 48
batch_size = 8
eval_batch_size = 64
validation_fraction = 0.01
test_fraction = 0.01
[model]
kind = "gpt"
width = 32
layers = 1
heads = 2
[optimizer]
lr = 1e-3
[train]
epochs = 1
eval_every = 3
%s
""" (Path.Combine(dir, "runs").Replace("\\", "/")) extra)
    Trainer.Run(ConfigLoader.Load(path), host.Value, kind = RunKind.Study)

/// The refusal of a config as the study or run command builds it: every error line.
let private refusals (kind: RunKind) (dir: string) (toml: string) =
    let path = Path.Combine(dir, "bad.toml")
    File.WriteAllText(path, sprintf "[run]\noutput_dir = \"%s\"\n%s" (Path.Combine(dir, "runs").Replace("\\", "/")) toml)
    try
        Trainer.Run(ConfigLoader.Load(path), host.Value, kind = kind, dryRun = true) |> ignore
        failtest "the config was accepted"
    with :? ConfigException as e -> e.Errors |> Seq.map string |> List.ofSeq

let private tensorsEqual (a: string) (b: string) =
    let x = Checkpoint.Load(Path.GetDirectoryName a, Path.GetFileName a)
    let y = Checkpoint.Load(Path.GetDirectoryName b, Path.GetFileName b)
    Expect.equal (set x.Keys) (set y.Keys) "the same tensors"
    for KeyValue(name, t) in x do
        Expect.isTrue (t.equal(y[name]).all().item<bool>()) (sprintf "%s is bitwise equal" name)

let tests =
    testList "fine-tuning studies" [
        test "a datasets study of text: task 0 with 0 epochs is not trained (its end snapshot is the start, bitwise), each evaluation records every task's validation split, a task-balanced replay memory fills from the untrained task's consolidation_items, and EWC's sampled Fisher over its windows penalises task 1" {
            let dir = tempDir "lm-study"
            let o =
                textStudy dir """
[study]
benchmark = "datasets"
datasets = ["fortunes", "fortunes-de"]
epochs = [0, 1]
eval_all_tasks = true
consolidation_items = 12
[[methods]]
name = "replay"
selection = "task-balanced"
budget = 20
mix_ratio = 0.25
[[methods]]
name = "ewc"
lambda = 10.0
fisher = "sampled"
"""
            let snapshot name = Path.Combine(o.RunDir, "tasks", name, WeightFile.FileName)
            tensorsEqual (snapshot "initial") (snapshot "task-0")
            Expect.equal (o.Record.Tasks |> List.ofSeq) [ "fortunes"; "fortunes-de" ] "one task per dataset, named by it"
            // Task 1: 48 windows in batches of 8 → 6 steps, evaluated at steps 3 and 6 (the epoch's end).
            let splits = rows o.RunDir "SELECT step, split FROM evaluations WHERE phase = 'task-1' ORDER BY step, split" |> List.map (fun r -> Convert.ToInt64 r[0], string r[1])
            Expect.equal splits [ for s in [ 3L; 6L ] do for split in [ "task0_val"; "task1_val"; "val" ] -> s, split ] "every task's validation split at each evaluation of task 1, and no test split (a study measures it at task ends)"
            Expect.isEmpty (rows o.RunDir "SELECT step FROM evaluations WHERE phase = 'task-0'") "task 0 is not trained, so not evaluated during training"
            Expect.equal (o.Record.Probes["replay_memory_items"][0]) [| 12.0 |] "the memory holds the 12 English windows task 0's end reads (consolidation_items; its budget is 20)"
            let steps = rows o.RunDir "SELECT step FROM metrics WHERE key = 'grad_norm'" |> List.length
            Expect.equal steps 6 "task 1 trained its 6 steps under EWC's penalty (the Fisher of task 0's end did not refuse the sequences)"
            let current = rows o.RunDir "SELECT value FROM metrics WHERE key = 'val_perplexity' ORDER BY step" |> List.map (fun r -> Convert.ToDouble r[0])
            let german = rows o.RunDir "SELECT value FROM metrics WHERE key = 'task1_val_perplexity' ORDER BY step" |> List.map (fun r -> Convert.ToDouble r[0])
            Expect.equal german current "task 1's validation split, named or current, is the same evaluation"
            Expect.equal (o.Record.Probes[Research.Abstractions.ProbeNames.RandomInitAccuracy][0]) (o.Record.Accuracy[0]) "the start's accuracy is row 0 (task 0 is not trained): copied, not evaluated twice"
        }

        test "a run of 0 epochs with head_init = linear-probe is a linear probe: no step, probe_cka = 1 and probe_similarity_spearman = 1 (1e-9: the representation is the start's), the linear probe's accuracy equals its start's exactly, and its validation accuracy beats a random head's by 0.3" {
            let run (dir: string) (overrides: string list) =
                let path = syntheticConfig dir "[probes]\ncka = true\nsimilarity = true\nitems = 200\nlinear_classes = [0, 1]\n"
                let o = Trainer.Run(ConfigLoader.Load(path, [ "train.epochs=0"; "data.synthetic_classes=4"; "data.classes=[2, 3]" ] @ overrides), host.Value)
                o.RunDir, o.Final["val"].Accuracy
            let probe, probeAccuracy = run (tempDir "lp") [ "model.head_init=\"linear-probe\"" ]
            let _, randomAccuracy = run (tempDir "lp-random") []
            Expect.isEmpty (rows probe "SELECT step FROM metrics WHERE key = 'train_loss'") "no training step"
            Expect.equal (rows probe "SELECT split FROM evaluations ORDER BY split" |> List.map (fun r -> string r[0])) [ "test"; "val" ] "the run's one evaluation is stored (sweeps read it)"
            Expect.floatClose { absolute = 1e-9; relative = 0.0 } (metric probe RunProbes.Names.Cka) 1.0 "CKA of the start with itself"
            Expect.floatClose { absolute = 1e-9; relative = 0.0 } (metric probe RunProbes.Names.Similarity) 1.0 "Spearman of the same similarities"
            Expect.equal (metric probe RunProbes.Names.LinearAccuracy) (metric probe RunProbes.Names.LinearAccuracyStart) "the same features give the same probe"
            Expect.isGreaterThan probeAccuracy (randomAccuracy + 0.3) "the fitted head classifies; a random one does not"
        }

        test "fine-tuning moves the representation: after 3 epochs at lr 0.05 probe_cka < 0.99, and the probes are in the study record's rows" {
            let dir = tempDir "probes-study"
            let o =
                Research.Tests.StudyTests.studyWith host.Value [ "optimizer.lr=0.05"; "train.epochs=3" ] dir
                    "[study]\nbenchmark = \"split-class\"\n[probes]\ncka = true\nitems = 300\n"
            let cka = o.Record.Probes[RunProbes.Names.Cka]
            Expect.equal cka.Length 5 "a row per task"
            Expect.isLessThan (cka[4][0]) 0.99 "five tasks of training changed the representation"
            Expect.equal (metric o.RunDir RunProbes.Names.Cka) (cka[4][0]) "the last row is the last metric"
        }

        test "a topic classification's split is stratified: each topic holds exactly ⌈0.15·n⌉ validation and ⌈0.15·n⌉ test entries, the three parts are disjoint and hold every entry, and the same seed gives the same split" {
            let fortunes = Research.Core.Data.EnglishFortunes()
            let o = Research.Core.Data.FortuneOptions(Task = "classify", Tokenizer = "wordpiece", TestFraction = 0.15)
            let d = Research.Core.Data.DataSection(Dataset = "fortunes", ValidationFraction = 0.15)
            let split = fortunes.Split(d.Keys, o, 7L)
            let corpus = fortunes.Corpus(o)
            let topics = Research.Core.Data.FortuneSource.Topics(o, corpus)
            Expect.equal topics.Count 10 "10 English topics have at least 580 entries after cleaning and deduplication"
            for topic in topics do
                let n = corpus.TopicCounts[topic]
                let count (part: Research.Core.Text.TextEntry seq) = part |> Seq.filter (fun e -> e.Topic = topic) |> Seq.length
                let held = int (Math.Ceiling(0.15 * float n))
                Expect.equal (count split.Validation, count split.Test, count split.Train) (held, held, n - 2 * held) (sprintf "%s (%d entries)" topic n)
            let all = Seq.concat [ split.Train; split.Validation; split.Test ] |> Seq.map (fun e -> e.Text) |> Set.ofSeq
            Expect.equal all.Count (split.Train.Count + split.Validation.Count + split.Test.Count) "disjoint"
            Expect.equal all.Count (topics |> Seq.sumBy (fun t -> corpus.TopicCounts[t])) "every entry of the topics"
            Expect.sequenceEqual (fortunes.Split(d.Keys, o, 7L).Test) split.Test "seeded"
        }

        test "a resumed run whose probes/start.safetensors is gone is refused naming the file (its model is no longer the start); with the file it resumes" {
            let dir = tempDir "probes-resume"
            let path = syntheticConfig dir "[checkpoint]\nevery = 2\n[probes]\ncka = true\nitems = 50\n"
            let killed = researchKilledAfter 5 dir [ "train"; path ]
            Expect.equal killed.ExitCode 137 "killed after its 5th micro-batch"
            let runDir = onlyRunDir dir
            let start = Path.Combine(runDir, "probes", "start.safetensors")
            let kept = File.ReadAllBytes start
            File.Delete start
            let refused = research dir [ "train"; path; "--resume"; runDir ]
            Expect.equal refused.ExitCode 2 refused.Err
            Expect.stringContains refused.Err "start.safetensors is missing" "names the file"
            File.WriteAllBytes(start, kept)
            let resumed = research dir [ "train"; path; "--resume"; runDir ]
            Expect.equal resumed.ExitCode 0 resumed.Err
            Expect.isLessThanOrEqual (metric runDir RunProbes.Names.Cka) 1.0 "the probe compares with the kept start"
        }

        test "runs may read the published ResNet-18 at once: ResNetOnnx.Read succeeds while another reader holds the file open (a sweep's trials start together)" {
            let path = Research.Core.Models.PublishedModels.Fetch(Research.Core.Models.PublishedModels.ResNet18, Path.Combine(repoRoot, "artifacts", "models")).File("ResNet18.onnx")
            use other = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read)
            use weights = Research.Core.Models.ResNetOnnx.Read(path)
            Expect.equal (weights.Blocks |> List.ofSeq) [ 2; 2; 2; 3 ] "the published stages, read beside another reader"
        }

        test "the new keys' refusals name the key: study.epochs of the wrong length, study.datasets outside its benchmark or of another kind, text classification across datasets, a study training no task, head_init and probes on a causal LM, linear_classes on text" {
            let dir = tempDir "ft-refusals"
            // The binder writes "file: key: value message"; the key and the message's words are what a user reads.
            let one kind toml (expected: string) =
                let errors = refusals kind dir toml
                let key, words = expected.Substring(0, expected.IndexOf ": "), expected.Substring(expected.IndexOf ": " + 2)
                Expect.exists errors (fun e -> e.Contains("bad.toml: " + key + ": ") && e.Contains words) (sprintf "an error naming %s with '%s' in %A" key words errors)
            let synthetic = "[data]\ndataset = \"synthetic\"\n"
            one RunKind.Study (synthetic + "[study]\nbenchmark = \"split-class\"\nepochs = [1, 1, 1]\n") "study.epochs: has 3 entries for the study's 2 tasks"
            one RunKind.Study (synthetic + "[study]\nbenchmark = \"permuted\"\ndatasets = [\"synthetic\", \"synthetic\"]\n") "study.datasets: is read by benchmark = \"datasets\" only"
            one RunKind.Study (synthetic + "[study]\nbenchmark = \"datasets\"\ndatasets = [\"synthetic\", \"fortunes\"]\n") "study.datasets: \"fortunes\" is text"
            one RunKind.Study (synthetic + "[study]\nbenchmark = \"datasets\"\ndatasets = [\"synthetic\"]\n") "study.datasets: has 1 entries"
            one RunKind.Study (synthetic + "[study]\nepochs = [0, 0]\n") "study.epochs: trains no task"
            one RunKind.Study (synthetic + "[train]\nepochs = 0\n") "train.epochs: leaves every task of the study untrained"
            one RunKind.Study "[data]\ndataset = \"fortunes\"\n[model]\nkind = \"gpt\"\n[study]\nbenchmark = \"datasets\"\ndatasets = [\"fortunes\", \"fortunes-de\"]\n" "data.task: \"classify\": each corpus has its own topics"
            let lm = "[data]\ndataset = \"fortunes\"\ntask = \"causal-lm\"\n[model]\nkind = \"gpt\"\n"
            one RunKind.Train (lm + "head_init = \"linear-probe\"\n") "model.head_init: \"linear-probe\" fits a classifier's head"
            one RunKind.Train (lm + "[probes]\ncka = true\n") "probes: reads the input of a classifier's head"
            one RunKind.Train (lm + "[probes]\nlinear_classes = [0, 1]\n") "probes.linear_classes: selects classes of an image dataset"
            one RunKind.Train "[probes]\nlinear_classes = [3, 12]\n" "probes.linear_classes: [3, 12] names a class the dataset does not have"
        }
    ]
