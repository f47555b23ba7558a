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
    Map [ // CHOSEN
        ]

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
