#!/usr/bin/env bash
# The issue-5 comparison on permuted Fashion-MNIST (5 tasks, MLP 784-256-256-10, AdamW 1e-3, 3 epochs per task in
# every arm, 3 seeds): plain fine-tuning, joint training, EWC (exact Fisher) for λ ∈ {10, 30, 100}, and L2 toward
# the previous task's weights for α ∈ {0.003, 0.01, 0.03}. Two studies run at a time, one thread each.
# Then: python3 experiments/studies/summarize.py runs/permuted-ewc-vs-finetune
# (An interim driver: scripted sweeps with executors and resumable trials are the sweep library's job.)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-runs/permuted-ewc-vs-finetune}
R="dotnet artifacts/bin/research.dll study"
C=experiments/configs
common="--set train.epochs=3 --set run.threads=1 --set run.output_dir=\"$out\""
jobs=()
for seed in 1 2 3; do
  jobs+=("$R $C/study-permuted.toml --set run.seed=$seed --set run.name='\"ft-s$seed\"' $common")
  jobs+=("$R $C/study-permuted.toml --set run.seed=$seed --set run.name='\"joint-s$seed\"' --set study.joint=true $common")
  for lambda in 10 30 100; do
    jobs+=("$R $C/study-permuted-ewc.toml --set run.seed=$seed --set run.name='\"ewc$lambda-s$seed\"' --set regularizers.0.lambda=$lambda $common")
  done
  for alpha in 0.003 0.01 0.03; do
    jobs+=("$R $C/study-permuted-l2.toml --set run.seed=$seed --set run.name='\"l2sp-$alpha-s$seed\"' --set regularizers.0.alpha=$alpha $common")
  done
done
printf '%s\n' "${jobs[@]}" | xargs -P 2 -I{} sh -c '{} > /dev/null 2>&1 || echo "failed: {}" >&2'
