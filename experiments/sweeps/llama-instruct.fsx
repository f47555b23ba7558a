// Instruction tuning of a Llama-family model, and what it forgets of its pre-training: a tiny Llama (d 256, 4 layers,
// 4 query heads over 2 key/value heads) pre-trained on English fortunes once per seed (experiments/configs/finetune/
// llama-pretrain.toml, the arm "pretrain"), then fully fine-tuned on an instruction set in JSONL — prompt = a topic,
// response = a fortune of it — in a 2-task study (task 0 English, already learned; task 1 the instruction set;
// llama-instruct.toml), every arm starting from the same seed's pre-trained model:
//   - plain fine-tuning at the pre-training's peak rate (1e-3) and at 1e-4, constant;
//   - the seed chapter's recipe: 1e-4, 10% linear warmup, cosine decay to 0, weight decay 0.1, early stopping on the
//     instruction set's validation loss (evaluated every 15 steps);
//   - replay: English windows mixed into each batch of 16, 4 in 20 (20%), at 1e-3.
// Three seeds, one thread per trial, two at a time:
//
//   research sweep experiments/sweeps/llama-instruct.fsx --parallel 2
//
// Before the trials the script writes the instruction set (once; a rerun finds it; not on a dry run) under runs/sweeps/llama-instruct/
// data: `research export-fortunes` writes the pre-training's fixed split (data.split_seed = 0) as JSONL with each
// entry's topic, and every entry becomes {"prompt": "Write a fortune about TOPIC.\n", "response": TEXT} — 2,400 of the
// training entries (drawn with System.Random(0)), all of the validation and test entries. The English test split is
// thus never trained on, by either task.
//
// loss-increase is ΔL_A, English nats per token lost; loss-learned is the response nats per token gained.
#r "../../artifacts/bin/Research.Sweeps.dll"

open System
open System.Collections.Generic
open System.Diagnostics
open System.IO
open System.Text.Json
open Research.Sweeps

let config name = Path.Combine(__SOURCE_DIRECTORY__, "..", "configs", "finetune", name)
let output = Path.Combine("runs", "sweeps", "llama-instruct")
/// llama-instruct.toml reads the instruction set from here (a path from the working directory, as the sweep's output).
let data = Path.Combine(output, "data")
let trainRecords = 2400

/// Writes the instruction set unless it is there: the fixed split exported by the same code the runs read it with, each
/// entry made a prompt/response pair. Each file is written whole to a temporary name, then renamed.
let writeInstructionSet () =
    let files = [ "train"; "validation"; "test" ]
    if not (files |> List.forall (fun f -> File.Exists(Path.Combine(data, f + ".jsonl")))) then
        let split = Path.Combine(data, "fortunes")
        let research = Path.Combine(__SOURCE_DIRECTORY__, "..", "..", "artifacts", "bin", "research")
        let psi = ProcessStartInfo(research, [ "export-fortunes"; split; "--config"; config "llama-pretrain.toml"; "--format"; "jsonl" ])
        psi.RedirectStandardOutput <- true
        use p = Process.Start psi
        p.StandardOutput.ReadToEnd() |> ignore
        p.WaitForExit()
        if p.ExitCode <> 0 then failwithf "research export-fortunes failed (exit %d)" p.ExitCode
        for f in files do
            let entries =
                File.ReadLines(Path.Combine(split, f + ".jsonl"))
                |> Seq.map (fun line -> JsonSerializer.Deserialize<Dictionary<string, string>> line)
                |> Array.ofSeq
            let chosen =
                if f <> "train" then entries
                else
                    // A partial Fisher–Yates shuffle: the first trainRecords of a uniform permutation, in that order.
                    let rng = Random 0
                    let a = Array.copy entries
                    for i in 0 .. trainRecords - 1 do
                        let j = i + rng.Next(a.Length - i)
                        let t = a.[i]
                        a.[i] <- a.[j]
                        a.[j] <- t
                    a.[.. trainRecords - 1]
            let path = Path.Combine(data, f + ".jsonl")
            File.WriteAllLines(path + ".tmp", chosen |> Array.map (fun e ->
                JsonSerializer.Serialize(dict [ "prompt", "Write a fortune about " + e.["label"] + ".\n"; "response", e.["text"] ])))
            File.Move(path + ".tmp", path, true)

// A dry run (`research sweep … --dry-run`) writes nothing; its config checks do not read the files.
if not (Sweep.isDryRun ()) then writeInstructionSet ()

let study name = Arm.create name (config "llama-instruct.toml") |> Arm.from "pretrain"

let sweep =
    Sweep.create "llama-instruct" Study
    |> Sweep.seeds [ 1; 2; 3 ]
    |> Sweep.threads 1
    |> Sweep.output output
    |> Sweep.arm (Arm.create "pretrain" (config "llama-pretrain.toml") |> Arm.command Train)
    |> Sweep.arm (study "plain-large-lr")
    |> Sweep.arm (study "plain-small-lr" |> Arm.set "optimizer.lr" 1e-4)
    |> Sweep.arm (
        study "recipe"
        |> Arm.set "optimizer.lr" 1e-4
        |> Arm.set "optimizer.weight_decay" 0.1
        |> Arm.set "schedule" (Toml.table [ "name", box "cosine"; "warmup_ratio", box 0.1; "min_lr_ratio", box 0.0 ])
        |> Arm.set "train.early_stopping_patience" 2
        // Early stopping needs evaluations to stop between: every 15 steps here, every 25 elsewhere.
        |> Arm.set "train.eval_every" 15)
    |> Sweep.arm (
        study "replay-20"
        |> Arm.methods [ [ "name", box "replay"; "selection", box "task-balanced"; "budget", box 256; "mix_ratio", box 0.25 ] ])
    |> Sweep.summarize "loss-increase" None false
    |> Sweep.summarize "loss-learned" None false
    |> Sweep.summarize "val_loss" None false
    |> Sweep.paired "loss-increase" "plain-large-lr"
    // English validation perplexity against the step (the instruction set logs no perplexity: its loss is over response
    // tokens, not a stream; its validation loss is in each run's evaluations).
    |> Sweep.curve "task0_val_perplexity"

exit (Sweep.run fsi.CommandLineArgs sweep)
