// An LLM from English to German: a GPT pre-trained on English fortunes once per seed (experiments/configs/finetune/
// llm-pretrain.toml, the arm "pretrain"), then fully fine-tuned on ≤ 150 k German tokens in a 2-task study (task 0
// English, already learned; task 1 German; llm-en-de.toml), every arm starting from the same seed's pre-trained model:
//   - plain fine-tuning at a large (1e-3, the pre-training peak) and a small (1e-4) learning rate, constant;
//   - the seed chapter's recipe: the small rate, 10% linear warmup, cosine decay, weight decay 0.1, early stopping on
//     German validation loss;
//   - L2-SP toward the pre-trained weights (α ∈ {0.01, 0.1}), EWC (λ ∈ {100, 1000}; sampled Fisher over 256 English
//     windows, teacher-forced, per token), the strength chosen on validation (two levels each: the sweep's 27 arms and 3
//     pre-trainings fit 90 minutes),
//     replay mixing English windows into each batch of 16: 1 in 17 (5.9%) and 4 in 20 (20%) — all at the large rate.
// Three seeds, one thread per trial, two at a time:
//
//   research sweep experiments/sweeps/llm-en-de.fsx --parallel 2
//
// loss-increase is ΔL_A, English nats per token lost; loss-learned is German nats per token gained.
#r "../../artifacts/bin/Research.Sweeps.dll"

open System.IO
open Research.Sweeps

let config name = Path.Combine(__SOURCE_DIRECTORY__, "..", "configs", "finetune", name)
let study name = Arm.create name (config "llm-en-de.toml") |> Arm.from "pretrain"

let sweep =
    Sweep.create "llm-en-de" Study
    |> Sweep.seeds [ 1; 2; 3 ]
    |> Sweep.threads 1
    |> Sweep.output (Path.Combine("runs", "sweeps", "llm-en-de"))
    |> Sweep.arm (Arm.create "pretrain" (config "llm-pretrain.toml") |> Arm.command Train)
    |> Sweep.arm (study "plain-large-lr")
    |> Sweep.arm (study "plain-small-lr" |> Arm.set "optimizer.lr" 1e-4)
    |> Sweep.arm (
        study "recipe"
        |> Arm.set "optimizer.lr" 1e-4
        |> Arm.set "optimizer.weight_decay" 0.1
        |> Arm.set "schedule" (Toml.table [ "name", box "cosine"; "warmup_ratio", box 0.1; "min_lr_ratio", box 0.0 ])
        |> Arm.set "train.early_stopping_patience" 2
        // Early stopping needs evaluations to stop between: every 15 steps here (5 in the task), every 25 elsewhere.
        |> Arm.set "train.eval_every" 15)
    // The strength of each penalty is chosen on validation: the level with the lowest val_loss, the mean of the English
    // and German validation losses after German (docs/results/llm-en-de.md names the levels chosen).
    |> Sweep.arm (
        study "l2-sp"
        |> Arm.methods [ [ "name", box "l2-sp"; "alpha", box 0.01; "anchor", box "initial" ] ]
        |> Arm.axis (Axis.grid "methods.0.alpha" [ 0.01; 0.1 ]))
    |> Sweep.arm (
        study "ewc"
        |> Arm.methods [ [ "name", box "ewc"; "lambda", box 100.0; "fisher", box "sampled" ] ]
        |> Arm.axis (Axis.grid "methods.0.lambda" [ 100.0; 1000.0 ]))
    |> Sweep.arm (
        study "replay-5"
        |> Arm.methods [ [ "name", box "replay"; "selection", box "task-balanced"; "budget", box 256; "mix_ratio", box (1.0 / 16.0) ] ])
    |> Sweep.arm (
        study "replay-20"
        |> Arm.methods [ [ "name", box "replay"; "selection", box "task-balanced"; "budget", box 256; "mix_ratio", box 0.25 ] ])
    |> Sweep.summarize "loss-increase" None false
    |> Sweep.summarize "loss-learned" None false
    |> Sweep.summarize "val_loss" None false
    |> Sweep.paired "loss-increase" "plain-large-lr"
    |> Sweep.curve "task0_val_perplexity"
    |> Sweep.curve "task1_val_perplexity"

exit (Sweep.run fsi.CommandLineArgs sweep)
