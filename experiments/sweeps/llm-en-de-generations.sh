#!/usr/bin/env bash
# Generations of the English → German study (experiments/sweeps/llm-en-de.fsx), before and after: the seed-1
# pre-trained English GPT ("pretrain") and every arm's final model, each continuing one English and one German prompt.
# Sampling is seeded (temperature 0.8, top-40, seed 1), so a rerun on the same runs prints the same text.
#
#   experiments/sweeps/llm-en-de-generations.sh [SWEEP_DIR] > experiments/sweeps/llm-en-de/generations.txt
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
sweep="${1:-$root/runs/sweeps/llm-en-de}"
research="${RESEARCH:-$root/artifacts/bin/research}"
prompts=("The secret of a happy life is" "Das Geheimnis eines glücklichen Lebens ist")

# Every arm and every level of the penalties' strengths (a trial's run name is its arm, its level and its seed).
for arm in pretrain plain-large-lr plain-small-lr recipe l2-sp-0.01 l2-sp-0.1 ewc-100 ewc-1000 replay-5 replay-20; do
    run=$(ls -d "$sweep"/trials/*/"$arm"-s1-* 2>/dev/null | sort | tail -n 1 || true)
    if [[ -z "$run" ]]; then
        echo "no finished run of $arm-s1 under $sweep/trials" >&2
        exit 1
    fi
    echo "## $arm (seed 1)"
    for prompt in "${prompts[@]}"; do
        "$research" generate "$run" --prompt "$prompt" --max-tokens 48 --temperature 0.8 --top-k 40 --seed 1 2>/dev/null
    done
    echo
done
