// Pre-trained encoder: all-MiniLM-L6-v2 fully fine-tuned to classify English fortunes by topic (8 topics, stratified
// 70/15/15, ≤ 64 tokens, 2 epochs; experiments/configs/finetune/minilm-topics.toml), beside a linear probe of the
// frozen sentence embedding and LP-FT (Kumar et al. 2022). Three seeds per arm, one thread per trial, two at a time:
//
//   research sweep experiments/sweeps/minilm-topics.fsx --parallel 2
//
// Each run reports its topic accuracy and what the sentence embedding lost on 1,000 held-out fortunes:
// probe_similarity_spearman (do the pairwise cosine similarities still rank as the original model's?) and probe_cka.
#r "../../artifacts/bin/Research.Sweeps.dll"

open System.IO
open Research.Sweeps

let config = Path.Combine(__SOURCE_DIRECTORY__, "..", "configs", "finetune", "minilm-topics.toml")

let sweep =
    Sweep.create "minilm-topics" Train
    |> Sweep.seeds [ 1; 2; 3 ]
    |> Sweep.threads 1
    |> Sweep.output (Path.Combine("runs", "sweeps", "minilm-topics"))
    |> Sweep.arm (Arm.create "fine-tune" config)
    |> Sweep.arm (Arm.create "linear-probe" config |> Arm.set "model.head_init" "linear-probe" |> Arm.set "train.epochs" 0)
    |> Sweep.arm (Arm.create "lp-ft" config |> Arm.set "model.head_init" "linear-probe")
    |> Sweep.summarize "test_accuracy" None false
    |> Sweep.summarize "val_accuracy" None false
    |> Sweep.summarize "probe_similarity_spearman" None false
    |> Sweep.summarize "probe_cka" None false
    |> Sweep.paired "test_accuracy" "linear-probe"
    |> Sweep.paired "probe_cka" "fine-tune"
    |> Sweep.paired "probe_similarity_spearman" "fine-tune"

exit (Sweep.run fsi.CommandLineArgs sweep)
