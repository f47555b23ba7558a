// Forgetting explained by the Hessian: how well does the quadratic model ∇L_A·Δθ + ½ΔθᵀH_AΔθ predict the real increase
// of task A's loss while task B trains, against the learning rate and the steps taken on B? What share of it lies in
// H_A's top-20 eigen-directions, and by what factor does each diagonal Fisher (EWC's view) under- or over-state the
// quadratic term? Fashion-MNIST, two tasks, in four settings: permuted pixels and split classes (0–4 → 5–9, one
// 10-way head), each with the MLP (784-256-256-10) and the small CNN.
//
// Per setting and seed, arm "A-…" trains task A once (one epoch of AdamW, 1e-3; experiments/configs/hessian/
// forgetting.toml with study.epochs = [1, 0]); the study arm starts from it (Arm.from) and trains task B for one epoch
// of plain SGD at each learning rate, taking the decomposition at 8 points along B ([study] hessian snapshots_along).
// Three seeds, one thread per trial, two at a time:
//
//   research sweep experiments/sweeps/hessian-forgetting.fsx --parallel 2
//
// Summaries read the record's probes (Sweep.probe, Sweep.along): ratios are taken seed by seed, then averaged.
#r "../../artifacts/bin/Research.Sweeps.dll"

open System.IO
open Research.Sweeps

let config = Path.Combine(__SOURCE_DIRECTORY__, "..", "configs", "hessian", "forgetting.toml")
// The CNN's curvature products cost ~2.2 s each on 2,000 items (the MLP's ~0.1 s): it reads 500 items and drops the
// lr 0.01 level, so the study stays under 45 minutes at --parallel 2.
let mlpRates = [ 0.003; 0.01; 0.03; 0.1 ]
let cnnRates = [ 0.003; 0.03; 0.1 ]
let cnn = [ "model.kind", box "cnn"; "study.hessian.samples", box 500 ]

let settings =
    [ "permuted-mlp", [ "study.benchmark", box "permuted" ], mlpRates
      "split-mlp", [ "study.benchmark", box "split-class"; "study.classes_per_task", box 5 ], mlpRates
      "permuted-cnn", [ "study.benchmark", box "permuted" ] @ cnn, cnnRates
      "split-cnn", [ "study.benchmark", box "split-class"; "study.classes_per_task", box 5 ] @ cnn, cnnRates ]

let withSettings sets arm = sets |> List.fold (fun a (k, v) -> Arm.set k v a) arm

let taskA (name, sets, _) =
    Arm.create ("A-" + name) config
    |> withSettings sets
    |> Arm.set "study.epochs" [ 1; 0 ]
    |> Arm.set "study.hessian.samples" 0
    |> Arm.set "optimizer.name" "adamw"
    |> Arm.set "optimizer.lr" 1e-3

let taskB (name, sets, rates) =
    Arm.create name config
    |> withSettings sets
    |> Arm.from ("A-" + name)
    |> Arm.axis (Axis.grid "optimizer.lr" rates)

let fisher = [ "exact"; "sampled"; "empirical"; "batched" ]

let sweep =
    let s =
        Sweep.create "hessian-forgetting" Study
        |> Sweep.seeds [ 1; 2; 3 ]
        |> Sweep.threads 1
        |> Sweep.output (Path.Combine("runs", "sweeps", "hessian-forgetting"))
    let s = settings |> List.fold (fun s setting -> s |> Sweep.arm (taskA setting) |> Sweep.arm (taskB setting)) s
    let lr = Some "optimizer.lr"
    let s =
        s
        |> Sweep.probe "measured_loss_increase" lr true
        |> Sweep.probe "predicted_loss_increase / measured_loss_increase" lr true
        |> Sweep.probe "first_order_loss_increase / measured_loss_increase" lr true
        |> Sweep.probe "quadratic_loss_increase / measured_loss_increase" lr true
        |> Sweep.probe "top_k_quadratic_share" lr true
        |> Sweep.probe "top_k_norm_share" lr true
    let s = fisher |> List.fold (fun s v -> s |> Sweep.probe (sprintf "fisher_quadratic_loss_increase/%s / quadratic_loss_increase" v) lr true) s
    s
    |> Sweep.along "measured"
    |> Sweep.along "predicted / measured"
    |> Sweep.along "first_order / measured"
    |> Sweep.along "top_k_quadratic_share"
    |> Sweep.along "fisher_exact / quadratic"

exit (Sweep.run fsi.CommandLineArgs sweep)
