// The comparison with more training per task (docs/results/permuted-ewc-vs-finetune.md): permuted
// Fashion-MNIST, 5 tasks, MLP 784-256-256-10, AdamW 1e-3, 3 epochs per task in every arm, seeds 1–3. Plain
// fine-tuning, joint training, EWC (exact Fisher) for λ ∈ {10, 30, 100}, and L2 toward the previous task's weights
// for α ∈ {0.003, 0.01, 0.03}: 24 studies, about 12 minutes two at a time on 2 cores.
//
//   research sweep experiments/sweeps/permuted-ewc-vs-finetune.fsx [--executor slurm]
#r "../../artifacts/bin/Research.Sweeps.dll"

open System.IO
open Research.Sweeps

let config name = Path.Combine(__SOURCE_DIRECTORY__, "..", "configs", name)
let epochs arm = arm |> Arm.set "train.epochs" 3

let sweep =
    Sweep.create "permuted-ewc-vs-finetune" Study
    |> Sweep.seeds [ 1; 2; 3 ]
    |> Sweep.arm (Arm.create "fine-tuning" (config "study-permuted.toml") |> epochs)
    |> Sweep.arm (Arm.create "joint" (config "study-permuted.toml") |> epochs |> Arm.set "study.joint" true)
    |> Sweep.arm (Arm.create "ewc" (config "study-permuted-ewc.toml") |> epochs |> Arm.axis (Axis.grid "methods.0.lambda" [ 10.0; 30.0; 100.0 ]))
    |> Sweep.arm (Arm.create "l2-previous" (config "study-permuted-l2.toml") |> epochs |> Arm.axis (Axis.grid "methods.0.alpha" [ 0.003; 0.01; 0.03 ]))
    // Each family's setting is chosen on validation accuracy, then read on test.
    |> Sweep.summarize "val_accuracy" None false
    |> Sweep.summarize "average-accuracy" (Some "methods.0.lambda") true
    |> Sweep.summarize "average-forgetting" None false
    |> Sweep.paired "average-accuracy" "fine-tuning"

exit (Sweep.run fsi.CommandLineArgs sweep)
