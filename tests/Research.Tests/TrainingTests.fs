module Research.Tests.TrainingTests

open System
open System.IO
open Expecto
open TorchSharp
open Research.Core
open Research.Core.Checkpoints
open Research.Core.Config
open Research.Core.Data
open Research.Core.Models
open Research.Core.Plugins
open Research.Core.Tracking
open Research.Core.Training
open Research.Tests.TestSupport

let builtIn = lazy (PluginHost.Load([]))

let mlp seed outputs =
    let m = new Mlp(8L, [| 16 |], outputs)
    use g = Seeds.Generator(seed, "init")
    Init.LinearDefault(m, g)
    m

let outputsOf (m: Mlp) =
    use x = torch.linspace(-1.0, 1.0, 32L).reshape(4L, 8L)
    use y = m.forward x
    y.data<float32>().ToArray()

let param (m: torch.nn.Module) (name: string) = m.state_dict().[name]

let storeRows (runDir: string) sql =
    use store = RunStore.OpenReadOnly(Path.Combine(runDir, RunStore.FileName))
    store.Query(sql) |> List.ofSeq

let tests =
    testList "training" [
        test "init_from strict loads every tensor by name: the loaded model computes what the saved one did" {
            let dir = tempDir "init"
            use a = mlp 1L 3L
            let file = Path.Combine(dir, WeightFile.FileName)
            WeightFile.Save(a, file)
            use b = mlp 2L 3L
            Expect.notEqual (outputsOf b) (outputsOf a) "different inits differ"
            let report = WeightFile.Load(b, dir, true, [||])
            Expect.isTrue report.IsComplete "complete"
            Expect.equal report.Loaded.Count 4 "layers.0.weight/bias, head.weight/bias"
            Expect.equal (outputsOf b) (outputsOf a) "bitwise the same outputs"
        }
        test "init_from strict refuses a checkpoint whose head has another shape, listing the key, and changes nothing" {
            let dir = tempDir "init"
            use a = mlp 1L 5L
            WeightFile.Save(a, Path.Combine(dir, WeightFile.FileName))
            use b = mlp 2L 3L
            let before = outputsOf b
            try
                WeightFile.Load(b, dir, true, [||]) |> ignore
                failtest "strict load accepted a mismatched head"
            with :? InvalidDataException as e ->
                Expect.stringContains e.Message "head.weight (model [3×16], file [5×16])" "shape mismatch listed"
            Expect.equal (outputsOf b) before "nothing loaded"
        }
        test "init_from partial loads what matches and lists the missing and unexpected keys" {
            let dir = tempDir "init"
            use a = mlp 1L 3L
            let state = Collections.Generic.Dictionary<string, torch.Tensor>()
            state["layers.0.weight"] <- (param a "layers.0.weight")
            state["layers.0.bias"] <- (param a "layers.0.bias")
            state["extra.scale"] <- torch.ones(1L)
            TorchSharp.PyBridge.Safetensors.SaveStateDict(Path.Combine(dir, WeightFile.FileName), state)
            use b = mlp 2L 3L
            let strictFails = try WeightFile.Load(b, dir, true, [||]) |> ignore; false with :? InvalidDataException -> true
            Expect.isTrue strictFails "strict refuses"
            let report = WeightFile.Load(b, dir, false, [||])
            Expect.equal (Set report.Loaded) (Set [ "layers.0.weight"; "layers.0.bias" ]) "loaded"
            Expect.equal (Set report.Missing) (Set [ "head.weight"; "head.bias" ]) "missing"
            Expect.equal (List.ofSeq report.Unexpected) [ "extra.scale" ] "unexpected"
            Expect.isTrue (torch.eq((param b "layers.0.weight"), (param a "layers.0.weight")).all().item<bool>()) "weights copied"
        }
        test "reinit: a strict load may skip the re-initialised head, which gets fresh weights" {
            let dir = tempDir "init"
            use a = mlp 1L 5L
            WeightFile.Save(a, Path.Combine(dir, WeightFile.FileName))
            let toml = $"[run]\nseed = 7\n[model]\nhidden = [16]\noutputs = 3\ninit_from = '{dir}'\nreinit = [\"head\"]\n"
            let cfg = ConfigLoader.Parse(toml, Path.Combine(dir, "x.toml"))
            let struct (m, summary) = RunBuilder.Model(cfg, Research.Abstractions.DataShape("vectors", Research.Abstractions.InputKind.Vectors, 8L, 3))
            use m = m
            Expect.stringContains summary "re-initialised: [head]" "reported"
            Expect.isTrue (torch.eq((param m "layers.0.weight"), (param a "layers.0.weight")).all().item<bool>()) "body loaded"
            Expect.equal ((param m "head.weight").shape) [| 3L; 16L |] "new head shape"
        }
        test "the validation split is seeded, disjoint from training, and ⌈10%⌉ of the data" {
            use full = new TensorDataset(torch.arange(1000L).reshape(1000L, 1L).to_type(torch.float32), torch.arange(1000L), 1)
            let split seed =
                use g = Seeds.Generator(seed, "validation-split")
                let struct (t, v) = full.Holdout(0.1, g)
                t, v
            let (t1, v1), (t2, v2), (_, v3) = split 5L, split 5L, split 6L
            let ids (d: TensorDataset) = d.Targets.data<int64>().ToArray()
            Expect.equal (ids v1) (ids v2) "same seed, same split"
            Expect.notEqual (ids v1) (ids v3) "another seed, another split"
            Expect.equal (ids v1).Length 100 "10%"
            Expect.isEmpty (Set.intersect (Set (ids t1)) (Set (ids v1))) "disjoint"
            Expect.equal ((ids t1).Length + (ids v1).Length) 1000 "a partition"
        }
        testSequenced <| test "a run is recorded in its SQLite store: canonical resolved config and its identity, plugin DLLs, seed, metrics by step, code and package versions, threads" {
            let dir = tempDir "store"
            let path = syntheticConfig dir "[schedule]\nname = \"linear\"\nwarmup_steps = 2\n"
            let config = ConfigLoader.Load(path, [ "train.log_every=1" ])
            let outcome = Trainer.Run(config, builtIn.Value, SilentObserver())
            let run = storeRows outcome.RunDir "SELECT status, seed, code_version, packages, threads, config_toml, resolved_json, identity, plugins FROM runs" |> List.exactlyOne
            Expect.equal run[0] (box "finished") "status"
            Expect.equal run[1] (box 3L) "seed"
            Expect.isNonEmpty (string run[2]) "code version"
            Expect.stringContains (string run[3]) "\"TorchSharp\":\"0.107.0\"" "package versions"
            Expect.isGreaterThan (run[4] :?> int64) 0L "threads"
            Expect.stringContains (string run[5]) "linear" "config"
            Expect.stringContains (string run[6]) "\"validation_fraction\":0.1" "defaults are in the resolved config"
            Expect.stringContains (string run[6]) "\"schedule\":{\"end_ratio\":0,\"name\":\"linear\",\"warmup_ratio\":0,\"warmup_steps\":2}" "plugin options with their defaults too"
            let canonical = ResolvedConfig.Canonical(config, builtIn.Value, "train")
            Expect.equal (string run[6]) (ResolvedConfig.Json canonical) "the record holds the canonical form"
            Expect.equal (string run[7]) (ResolvedConfig.Identity(canonical, builtIn.Value)) "and its identity"
            let state = Checkpoint.ReadState(Path.Combine(outcome.RunDir, "checkpoints", "final"))
            Expect.equal state.Identity (ResolvedConfig.Identity(canonical, builtIn.Value)) "the identity a resume checks is the same one"
            let plugins = Text.Json.JsonDocument.Parse(string run[8]).RootElement
            let schedule = plugins.EnumerateArray() |> Seq.find (fun p -> p.GetProperty("Name").GetString() = "linear")
            let dll = schedule.GetProperty("Path").GetString()
            Expect.stringContains dll "Research.Plugins.Schedules.dll" "the schedule's DLL"
            let sha = Convert.ToHexStringLower(Security.Cryptography.SHA256.HashData(File.ReadAllBytes dll))
            Expect.equal (schedule.GetProperty("Sha256").GetString()) sha "with its SHA-256"
            Expect.isNonEmpty (schedule.GetProperty("Version").GetString()) "and version"
            let steps = storeRows outcome.RunDir "SELECT step, value FROM metrics WHERE key = 'lr' ORDER BY step"
            // 512 items → 461 train / 51 validation → ⌈461/64⌉ = 8 steps per epoch, 2 epochs.
            Expect.equal steps.Length 16 "one lr row per step"
            Expect.equal (steps.Head[1] :?> float) 0.0 "warmup starts at 0 (step 1 used f(0))"
            let evals = storeRows outcome.RunDir "SELECT split FROM evaluations WHERE epoch = 1 ORDER BY split"
            Expect.equal (evals |> List.map (fun r -> string r[0])) [ "test"; "val" ] "validation and test each epoch"
            Expect.isTrue (File.Exists outcome.WeightsPath) "final weights"
        }
        testSequenced <| test "the same config and seed give bitwise-identical weights in two runs" {
            let dir = tempDir "repro"
            let path = syntheticConfig dir ""
            let config = ConfigLoader.Load(path, [])
            let read (o: RunOutcome) =
                let d = TorchSharp.PyBridge.Safetensors.LoadStateDict(o.WeightsPath)
                d |> Seq.sortBy (fun kv -> kv.Key) |> Seq.map (fun kv -> kv.Value.data<float32>().ToArray()) |> Array.concat
            let a = Trainer.Run(config, builtIn.Value, SilentObserver())
            let b = Trainer.Run(config, builtIn.Value, SilentObserver())
            Expect.equal (read a) (read b) "bitwise equal"
        }
        test "a bf16 run of the demo MLP (2 epochs, Fashion-MNIST 0–4) ends within 1 point of fp32 test accuracy" {
            let dir = tempDir "bf16"
            let run mode =
                let c = ConfigLoader.Load(Path.Combine(repoRoot, "experiments", "configs", "demo-pretrain.toml"),
                                          [ "train.epochs=2"; sprintf "precision.mode=%s" mode; sprintf "run.output_dir=\"%s\"" dir ])
                (Trainer.Run(c, builtIn.Value, SilentObserver())).Final["test"].Accuracy
            let fp32, bf16 = run "fp32", run "bf16"
            Expect.isGreaterThan fp32 0.85 "fp32 learned"
            Expect.isLessThanOrEqual (abs (bf16 - fp32)) 0.01 (sprintf "fp32 %.4f, bf16 %.4f" fp32 bf16)
        }
        test "an fp16 run with dynamic loss scaling trains a tiny model, logs the scale, and grows it after growth_interval good steps" {
            let dir = tempDir "fp16"
            let path = syntheticConfig dir "log_every = 1\n[precision]\nmode = \"fp16\"\ninitial_scale = 1024.0\ngrowth_interval = 4\n"
            let outcome = Trainer.Run(ConfigLoader.Load(path, []), builtIn.Value, SilentObserver())
            let scales = storeRows outcome.RunDir "SELECT value FROM metrics WHERE key = 'loss_scale' ORDER BY step" |> List.map (fun r -> r[0] :?> float)
            Expect.equal scales.Head 1024.0 "starts at the initial scale"
            Expect.isGreaterThan (List.max scales) 1024.0 "grew"
            let losses = storeRows outcome.RunDir "SELECT value FROM metrics WHERE key = 'train_loss' ORDER BY step" |> List.map (fun r -> r[0] :?> float)
            Expect.isLessThan (List.last losses) losses.Head "the loss fell"
            Expect.isGreaterThan outcome.Final["test"].Accuracy 0.6 "it learned the clusters"
        }
        test "an fp16 run whose loss scale starts far too high skips the overflowing steps, backs off, records NaN norms as NULL, and finishes" {
            let dir = tempDir "fp16-overflow"
            let path = syntheticConfig dir "log_every = 1\n[precision]\nmode = \"fp16\"\ninitial_scale = 1e12\n"
            // The first ~20 steps overflow; 48 steps leave the rest to train (a run whose every
            // step is skipped fails instead: BadInputTests).
            let outcome = Trainer.Run(ConfigLoader.Load(path, [ "train.epochs=6" ]), builtIn.Value, SilentObserver())
            let skipped = storeRows outcome.RunDir "SELECT MAX(value) FROM metrics WHERE key = 'skipped_steps'" |> List.exactlyOne
            Expect.isGreaterThan (skipped[0] :?> float) 0.0 "steps were skipped"
            let scales = storeRows outcome.RunDir "SELECT value FROM metrics WHERE key = 'loss_scale' ORDER BY rowid" |> List.map (fun r -> r[0] :?> float)
            Expect.isLessThan (List.last scales) 1e12 "the scale backed off"
            let nulls = storeRows outcome.RunDir "SELECT COUNT(*) FROM metrics WHERE key = 'grad_norm' AND value IS NULL" |> List.exactlyOne
            Expect.isGreaterThan (nulls[0] :?> int64) 0L "the norms of skipped steps are NULL"
            let status = storeRows outcome.RunDir "SELECT status FROM runs" |> List.exactlyOne
            Expect.equal status[0] (box "finished") "finished"
        }
        test "the demo: pre-training on classes 0–4 reaches ≥ 0.87, fine-tuning on 5–9 reaches ≥ 0.90 and forgets 0–4" {
            let dir = tempDir "demo"
            let r = research dir [ "demo"; "--no-study" ]   // the study part is covered by StudyTests
            Expect.equal r.ExitCode 0 (sprintf "demo ran: %s" r.Err)
            let row (prefix: string) =
                r.Out.Split('\n') |> Array.find (fun l -> l.StartsWith prefix)
                |> fun l -> l.Substring(prefix.Length).Split(' ', StringSplitOptions.RemoveEmptyEntries) |> Array.map float
            let afterPre, afterFine = row "after pre-training 0–4", row "after fine-tuning 5–9"
            Expect.isGreaterThanOrEqual afterPre[0] 0.87 "pre-trained accuracy on 0–4"
            Expect.isGreaterThanOrEqual afterFine[1] 0.90 "fine-tuned accuracy on 5–9"
            Expect.isLessThan afterFine[0] (afterPre[0] - 0.5) "catastrophic forgetting of 0–4"
            Expect.stringContains r.Out "forgetting on classes 0–4: accuracy drop" "drop printed"
        }
    ]
