// Pre-trained vision: ImageNet ResNet-18 fully fine-tuned on Fashion-MNIST classes 0–4 (12,500 images at 64 × 64,
// 2 epochs; experiments/configs/finetune/resnet-fashion04.toml), beside a linear probe of the frozen pre-trained
// features and LP-FT (the head fitted as that probe first, then everything fine-tuned; Kumar et al. 2022), with
// BatchNorm statistics updated or frozen as an arm. Three seeds per arm, one thread per trial, two trials at a time:
//
//   research sweep experiments/sweeps/resnet-fashion.fsx --parallel 2
//
// Each run reports its accuracy on classes 0–4 and what the features lost: probe_cka (linear CKA with the pre-trained
// features on 1,000 held-out images) and probe_linear_accuracy (a probe for classes 5–9 on the fine-tuned features)
// beside probe_linear_accuracy_start (the same probe on the pre-trained ones).
#r "../../artifacts/bin/Research.Sweeps.dll"

open System.IO
open Research.Sweeps

let config = Path.Combine(__SOURCE_DIRECTORY__, "..", "configs", "finetune", "resnet-fashion04.toml")

let sweep =
    Sweep.create "resnet-fashion" Train
    |> Sweep.seeds [ 1; 2; 3 ]
    |> Sweep.threads 1
    |> Sweep.output (Path.Combine("runs", "sweeps", "resnet-fashion"))
    |> Sweep.arm (Arm.create "fine-tune" config)
    |> Sweep.arm (Arm.create "fine-tune-bn-frozen" config |> Arm.set "model.batch_norm" "frozen")
    |> Sweep.arm (Arm.create "linear-probe" config |> Arm.set "model.head_init" "linear-probe" |> Arm.set "train.epochs" 0)
    |> Sweep.arm (Arm.create "lp-ft" config |> Arm.set "model.head_init" "linear-probe")
    // The probe is fitted on features normalised by the ImageNet running statistics (evaluation mode); training with
    // BatchNorm updated normalises by the Fashion-MNIST batch's own statistics, so the fitted head meets other features.
    |> Sweep.arm (Arm.create "lp-ft-bn-frozen" config |> Arm.set "model.head_init" "linear-probe" |> Arm.set "model.batch_norm" "frozen")
    |> Sweep.summarize "test_accuracy" None false
    |> Sweep.summarize "val_accuracy" None false
    |> Sweep.summarize "probe_cka" None false
    |> Sweep.summarize "probe_linear_accuracy" None false
    |> Sweep.summarize "probe_linear_accuracy_start" None false
    |> Sweep.paired "test_accuracy" "linear-probe"

exit (Sweep.run fsi.CommandLineArgs sweep)
