// The arms of the continual-learning reproduction (issue "Contract 2.0"): three Fashion-MNIST scenarios of 5 tasks —
// split-class (class-incremental), split-task (task-incremental) and permuted (domain-incremental) — and the methods
// fine-tuning, EWC with the exact and the batched Fisher, SI, MAS, LwF, A-GEM, experience replay (a memory of 500 items)
// and joint training. Loaded by cl-select.fsx (the hyper-parameter grids on seed 1) and cl-reproduce.fsx (the chosen
// values on seeds 1–3); both write into one folder, so the seed-1 trial of each chosen value is run once.
#r "../../artifacts/bin/Research.Sweeps.dll"

open System.IO
open Research.Sweeps

let configs = Path.Combine(__SOURCE_DIRECTORY__, "..", "configs")
let folder = Path.Combine("runs", "sweeps", "continual-learning")

/// (scenario, config file).
let scenarios =
    [ "split-class", Path.Combine(configs, "cl-split-class.toml")
      "split-task", Path.Combine(configs, "cl-split-task.toml")
      "permuted", Path.Combine(configs, "cl-permuted.toml") ]

/// A method: its [[methods]] table without the tuned key, the tuned key (under methods.0) and its grid (≤ 4 values).
type Method = { Name: string; Table: (string * obj) list; Tuned: (string * float list) option }

let methods =
    [ { Name = "ewc"; Table = [ "name", box "ewc"; "fisher", box "exact" ]; Tuned = Some("lambda", [ 10.0; 100.0; 1000.0; 10000.0 ]) }
      { Name = "ewc-batched"; Table = [ "name", box "ewc"; "fisher", box "batched" ]; Tuned = Some("lambda", [ 1e3; 1e4; 1e5; 1e6 ]) }
      { Name = "si"; Table = [ ("name", box "si") ]; Tuned = Some("c", [ 1.0; 10.0; 100.0; 1000.0 ]) }
      { Name = "mas"; Table = [ ("name", box "mas") ]; Tuned = Some("lambda", [ 0.1; 1.0; 10.0; 100.0 ]) }
      { Name = "lwf"; Table = [ ("name", box "lwf") ]; Tuned = Some("alpha", [ 0.5; 1.0; 2.0; 4.0 ]) }
      { Name = "a-gem"; Table = [ "name", box "a-gem"; "budget", box 500 ]; Tuned = None }
      { Name = "replay"; Table = [ "name", box "replay"; "budget", box 500 ]; Tuned = Some("mix_ratio", [ 0.25; 0.5; 1.0 ]) } ]

/// The baselines of every scenario: plain fine-tuning and joint training on all tasks seen so far.
let baselines (scenario: string, config: string) =
    [ Arm.create (scenario + "-fine-tuning") config
      Arm.create (scenario + "-joint") config |> Arm.set "study.joint" true ]

/// A method's arm in a scenario, with the tuned key at the given values (a grid axis).
let methodArm (scenario: string, config: string) (m: Method) (values: float list) =
    let arm = Arm.create (scenario + "-" + m.Name) config |> Arm.methods [ m.Table ]
    match m.Tuned with
    | Some(key, _) -> arm |> Arm.axis (Axis.grid ("methods.0." + key) values)
    | None -> arm
