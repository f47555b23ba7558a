// iCaRL against experience replay at the same 500-item memory, class-incremental split Fashion-MNIST (5 tasks of 2
// classes, one 10-way output), exactly the setup of the continual-learning reproduction (cl-split-class.toml: MLP
// 784-256-256-10, AdamW 1e-3, batches of 128, 4 epochs per task), seeds 1–3. Replay at its chosen r = 0.25
// (continual-learning/select.txt); iCaRL mixes its exemplars at the same r, so the arms differ in what iCaRL adds: herded
// exemplars, distillation on the old classes (α = 1, T = 2) and the nearest mean of exemplars. Two ablations of iCaRL
// separate those: its own network's arg-max as the classifier (classifier = "model"), and no distillation.
//
//   research sweep experiments/sweeps/icarl-vs-replay.fsx --parallel 2
#r "../../artifacts/bin/Research.Sweeps.dll"

open System.IO
open Research.Sweeps

let config = Path.Combine(__SOURCE_DIRECTORY__, "..", "configs", "cl-split-class.toml")

let icarl (extra: (string * obj) list) =
    [ "name", box "icarl"; "memory", box 500; "mix_ratio", box 0.25 ] @ extra

let sweep =
    Sweep.create "icarl-vs-replay" Study
    |> Sweep.seeds [ 1; 2; 3 ]
    |> Sweep.output (Path.Combine("runs", "sweeps", "icarl-vs-replay"))
    |> Sweep.arm (Arm.create "split-class-replay" config |> Arm.methods [ [ "name", box "replay"; "budget", box 500; "mix_ratio", box 0.25 ] ])
    |> Sweep.arm (Arm.create "split-class-icarl" config |> Arm.methods [ icarl [] ])
    |> Sweep.arm (Arm.create "split-class-icarl-argmax" config |> Arm.methods [ icarl [ "classifier", box "model" ] ])
    |> Sweep.arm (Arm.create "split-class-icarl-no-distillation" config |> Arm.methods [ icarl [ "distillation", box 0.0 ] ])
    |> Sweep.summarize "average-accuracy" None false
    |> Sweep.summarize "average-forgetting" None false
    |> Sweep.summarize "bwt" None false
    |> Sweep.paired "average-accuracy" "split-class-replay"

exit (Sweep.run fsi.CommandLineArgs sweep)
