// Stage 1 of the continual-learning reproduction: every method's grid (≤ 4 values) on seed 1, in each scenario; the
// value with the best validation accuracy (averaged over the five tasks after the last task) is chosen for stage 2
// (cl-reproduce.fsx). Test splits are not looked at here.
//
//   research sweep experiments/sweeps/cl-select.fsx --parallel 2
#load "ContinualLearning.fsx"

open Research.Sweeps
open ContinualLearning

let sweep =
    let s = Sweep.create "cl-select" Study |> Sweep.seeds [ 1 ] |> Sweep.output folder
    [ for scenario in scenarios do
          yield! baselines scenario
          for m in methods -> methodArm scenario m (match m.Tuned with Some(_, values) -> values | None -> []) ]
    |> List.fold (fun s arm -> Sweep.arm arm s) s
    |> Sweep.summarize "val_accuracy" None false

exit (Sweep.run fsi.CommandLineArgs sweep)
