#!/usr/bin/env bash
# Generations of the instruction-tuning study (experiments/sweeps/llama-instruct.fsx), before and after: the seed-1
# pre-trained Llama ("pretrain") and every arm's final model, each given two instructions of the set's form (a topic of
# the training records, and "love", a topic the same way) and one plain English prompt of the pre-training's kind.
# `research generate` starts every prompt after an end-of-text token, as the instruction rows start, and stops at the
# next one. Sampling is seeded (temperature 0.8, top-40, seed 1), so a rerun on the same runs prints the same text.
#
#   experiments/sweeps/llama-instruct-generations.sh [SWEEP_DIR] > experiments/sweeps/llama-instruct/generations.txt
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
sweep="${1:-$root/runs/sweeps/llama-instruct}"
research="${RESEARCH:-$root/artifacts/bin/research}"
prompts=($'Write a fortune about computers.\n' $'Write a fortune about love.\n' "The secret of a happy life is")

for arm in pretrain plain-large-lr plain-small-lr recipe replay-20; do
    run=$(ls -d "$sweep"/trials/*/"$arm"-s1-* 2>/dev/null | sort | tail -n 1 || true)
    if [[ -z "$run" ]]; then
        echo "no finished run of $arm-s1 under $sweep/trials" >&2
        exit 1
    fi
    echo "## $arm (seed 1)"
    for prompt in "${prompts[@]}"; do
        "$research" generate "$run" --prompt "$prompt" --max-tokens 60 --temperature 0.8 --top-k 40 --seed 1 2>/dev/null
        echo
    done
done
