// The seed chapter's per-component learning rates for fully fine-tuning a vision-language model, tested: a small VLM
// (the published ImageNet ResNet-18 → a 2-layer MLP connector → a byte Llama pre-trained on English fortunes;
// experiments/configs/vlm/captions.toml) learns to caption Fashion-MNIST classes 0–4 (task A), then is fine-tuned on
// the captions of classes 5–9 (task B) in six ways:
//   - one-lr: one learning rate for everything, the language model's (5e-5);
//   - seed-table: the seed's table at its upper ends — vision encoder 5e-6, connector 5e-4, language model 5e-5;
//   - frozen-encoder: the table with the vision encoder frozen;
//   - connector-only: the connector alone trains (5e-4);
//   - table-l2sp-lm: the table plus L2-SP (α = 1) pulling the language model toward its weights at the start of B;
//   - table-replay: the table plus replay of task A's captions (a memory of 500 drawn per task — class-balanced
//     selection needs class targets, and a caption's targets are tokens; 8 of them added to each batch of 32).
// For each arm: the class word of held-out test captions on both halves (caption_named: the first class word the model
// writes after the caption's words before it; caption_exact_match: the word in place, token for token), what the
// language model forgot (text_loss_increase: its loss on the English fortunes' test split, nats per byte, over the start
// of B), what the vision encoder's features forgot (probe_cka with the start of B; probe_linear_accuracy of a linear
// probe of classes 0–4), ‖Δθ‖² and ½ΔθᵀH_AΔθ per component (the Hessian of task A's caption loss at the start of B).
//
// Per seed the arm "lm" pre-trains the language model (lm-pretrain.toml, 2 epochs) and the arm "A" trains the VLM on
// classes 0–4 from it (one epoch of all 28,500 training captions: encoder 2e-4, connector 5e-3, language model 1e-4);
// every task-B arm starts from the same seed's A. Three seeds, two threads per trial, one at a time:
//
//   research sweep experiments/sweeps/vlm-components.fsx
#r "../../artifacts/bin/Research.Sweeps.dll"

open System.IO
open Research.Sweeps

let config name = Path.Combine(__SOURCE_DIRECTORY__, "..", "configs", "vlm", name)

/// [[optimizer.components]] of the three parts: a learning rate each, or frozen (None).
let components (encoder: float option) (connector: float option) (language: float option) =
    let part name pattern (lr: float option) =
        match lr with
        | Some lr -> Toml.table [ "name", box name; "match", box pattern; "lr", box lr ]
        | None -> Toml.table [ "name", box name; "match", box pattern; "frozen", box true ]
    box [ part "vision_encoder" "^vision_encoder\\." encoder
          part "connector" "^connector\\." connector
          part "language_model" "^language_model\\." language ]

let taskB name encoder connector language =
    Arm.create name (config "captions.toml")
    |> Arm.from "A"
    |> Arm.set "optimizer.components" (components encoder connector language)

/// The seed's table at its upper ends.
let table name = taskB name (Some 5e-6) (Some 5e-4) (Some 5e-5)

let sweep =
    Sweep.create "vlm-components" Study
    |> Sweep.seeds [ 1; 2; 3 ]
    |> Sweep.threads 2
    |> Sweep.output (Path.Combine("runs", "sweeps", "vlm-components"))
    |> Sweep.arm (Arm.create "lm" (config "lm-pretrain.toml") |> Arm.command Train)
    |> Sweep.arm (
        Arm.create "A" (config "captions.toml")
        |> Arm.command Train
        |> Arm.fromInto "lm" "model.language_model_init_from"
        |> Arm.set "data.classes" [ 0; 1; 2; 3; 4 ]
        |> Arm.set "data.train_limit" 0
        |> Arm.set "optimizer.components" (components (Some 2e-4) (Some 5e-3) (Some 1e-4)))
    |> Sweep.arm (taskB "one-lr" (Some 5e-5) (Some 5e-5) (Some 5e-5))
    |> Sweep.arm (table "seed-table")
    |> Sweep.arm (taskB "frozen-encoder" None (Some 5e-4) (Some 5e-5))
    |> Sweep.arm (taskB "connector-only" None (Some 5e-4) None)
    |> Sweep.arm (table "table-l2sp-lm" |> Arm.methods [ [ "name", box "l2-sp"; "alpha", box 1.0; "match", box "^language_model\\." ] ])
    |> Sweep.arm (table "table-replay" |> Arm.methods [ [ "name", box "replay"; "selection", box "task-balanced"; "budget", box 500; "mix_ratio", box 0.25 ] ])
    // Task A after A (the A arm's single run) and after B (the study arms' task 0), task B after B.
    |> Sweep.summarize "caption_named" None false
    |> Sweep.summarize "caption_exact_match" None false
    |> Sweep.summarize "caption_named/task0" None false
    |> Sweep.summarize "caption_named/task1" None false
    |> Sweep.summarize "caption_exact_match/task0" None false
    |> Sweep.summarize "caption_exact_match/task1" None false
    |> Sweep.summarize "text_loss_increase" None false
    |> Sweep.summarize "probe_cka" None false
    |> Sweep.summarize "probe_linear_accuracy" None false
    |> Sweep.probe "measured_loss_increase" None false
    |> Sweep.probe "quadratic_loss_increase" None false
    |> Sweep.probe "quadratic_loss_increase/vision_encoder" None false
    |> Sweep.probe "quadratic_loss_increase/connector" None false
    |> Sweep.probe "quadratic_loss_increase/language_model" None false
    |> Sweep.probe "delta_norm_squared/vision_encoder" None false
    |> Sweep.probe "delta_norm_squared/connector" None false
    |> Sweep.probe "delta_norm_squared/language_model" None false
    |> Sweep.paired "caption_named/task0" "seed-table"
    |> Sweep.paired "caption_named/task1" "seed-table"
    |> Sweep.paired "text_loss_increase" "seed-table"

exit (Sweep.run fsi.CommandLineArgs sweep)
