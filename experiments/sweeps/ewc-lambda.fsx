// EWC's λ on permuted Fashion-MNIST (5 tasks, MLP 784-256-256-10, AdamW 1e-3, 3 epochs per task), three seeds per λ,
// with plain fine-tuning (the lower bound) and joint training on every task seen so far (the upper bound).
//
//   ./build.sh                                            # once: builds artifacts/bin
//   research sweep experiments/sweeps/ewc-lambda.fsx      # or: dotnet fsi experiments/sweeps/ewc-lambda.fsx
//   research sweep experiments/sweeps/ewc-lambda.fsx --executor slurm
//
// Two trials at a time, one thread each, on 2 cores. The summary (tables, CSV, plots) lands in
// runs/sweeps/ewc-lambda/summary; the copy in experiments/sweeps/ewc-lambda/ is the one this script made.
#r "../../artifacts/bin/Research.Sweeps.dll"

open System.IO
open Research.Sweeps

let configs = Path.Combine(__SOURCE_DIRECTORY__, "..", "configs")
let epochs arm = arm |> Arm.set "train.epochs" 3

let sweep =
    Sweep.create "ewc-lambda" Study
    |> Sweep.seeds [ 1; 2; 3 ]
    |> Sweep.threads 1
    |> Sweep.arm (Arm.create "fine-tuning" (Path.Combine(configs, "study-permuted.toml")) |> epochs)
    |> Sweep.arm (Arm.create "joint" (Path.Combine(configs, "study-permuted.toml")) |> epochs |> Arm.set "study.joint" true)
    |> Sweep.arm (
        Arm.create "ewc" (Path.Combine(configs, "study-permuted-ewc.toml"))
        |> epochs
        |> Arm.axis (Axis.grid "methods.0.lambda" [ 1.0; 10.0; 30.0; 100.0; 300.0; 1000.0 ]))
    // Test accuracy averaged over the five tasks after the last; λ is chosen on the same average over validation splits.
    |> Sweep.summarize "average-accuracy" (Some "methods.0.lambda") true
    |> Sweep.summarize "val_accuracy" (Some "methods.0.lambda") true
    |> Sweep.summarize "average-forgetting" (Some "methods.0.lambda") true
    |> Sweep.summarize "bwt" None false
    |> Sweep.paired "average-accuracy" "fine-tuning"

exit (Sweep.run fsi.CommandLineArgs sweep)
