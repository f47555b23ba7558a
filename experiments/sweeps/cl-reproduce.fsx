// Stage 2 of the continual-learning reproduction: each method at the value cl-select.fsx chose on seed 1's validation
// accuracy (the table in continual-learning/select.txt), on seeds 1, 2 and 3, in the three scenarios; average accuracy
// and average forgetting with 95% intervals over the seeds. The seed-1 trials are those of the selection (same folder,
// same identity), so they run once.
//
//   research sweep experiments/sweeps/cl-select.fsx --parallel 2      # first: the grids on seed 1
//   research sweep experiments/sweeps/cl-reproduce.fsx --parallel 2   # then: the chosen values on 3 seeds
#load "ContinualLearning.fsx"

open Research.Sweeps
open ContinualLearning

/// (scenario, method) → the chosen value of the method's tuned key.
let chosen : Map<string * string, float> =
    Map [ // Best validation accuracy on seed 1 (cl-select.fsx; continual-learning/select.csv). ⁺ marks a value at the
          // edge of its grid: a wider grid might do better there.
          ("split-class", "ewc"), 1000.0; ("split-class", "ewc-batched"), 1e5; ("split-class", "si"), 100.0
          ("split-class", "mas"), 10.0; ("split-class", "lwf"), 2.0; ("split-class", "replay"), 0.25       // replay ⁺
          ("split-task", "ewc"), 10000.0; ("split-task", "ewc-batched"), 1e4; ("split-task", "si"), 1000.0 // ewc ⁺, si ⁺
          ("split-task", "mas"), 1.0; ("split-task", "lwf"), 2.0; ("split-task", "replay"), 1.0             // replay ⁺
          ("permuted", "ewc"), 10.0; ("permuted", "ewc-batched"), 1e4; ("permuted", "si"), 10.0             // ewc ⁺
          ("permuted", "mas"), 0.1; ("permuted", "lwf"), 0.5; ("permuted", "replay"), 0.25 ]                // mas ⁺, lwf ⁺, replay ⁺

let sweep =
    let s = Sweep.create "continual-learning" Study |> Sweep.seeds [ 1; 2; 3 ] |> Sweep.output folder
    [ for scenario in scenarios do
          yield! baselines scenario
          for m in methods -> methodArm scenario m (match m.Tuned with Some _ -> [ chosen[fst scenario, m.Name] ] | None -> []) ]
    |> List.fold (fun s arm -> Sweep.arm arm s) s
    |> Sweep.summarize "average-accuracy" None false
    |> Sweep.summarize "average-forgetting" None false
    |> Sweep.summarize "bwt" None false
    |> Sweep.summarize "val_accuracy" None false

exit (Sweep.run fsi.CommandLineArgs sweep)
