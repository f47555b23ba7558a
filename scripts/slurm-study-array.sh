#!/usr/bin/env bash
# Runs one `research study` (or `train`) per line of a trials file as a Slurm job array, waits for it, and reports
# each task's state and exit code. Each line holds one trial's overrides, e.g. `--set run.seed=2 --set run.name=ft-s2`.
#   scripts/slurm-study-array.sh study|train CONFIG TRIALS_FILE OUTPUT_DIR [CPUS_PER_TASK]
# Each trial writes its own run directory and store under OUTPUT_DIR (one SQLite file per run: its locking is not
# reliable on a cluster's network file system); `research runs compare OUTPUT_DIR` reads them all.
# (An interim executor: the sweep library's Slurm executor adds trial identity, skip/resume and cancellation.)
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: $0 study|train CONFIG TRIALS_FILE OUTPUT_DIR [CPUS_PER_TASK]" >&2; exit 2; }
command=$1 config=$(realpath "$2") trials=$(realpath "$3") out=$(realpath -m "$4") cpus=${5:-1}
repo=$(cd "$(dirname "$0")/.." && pwd)
count=$(grep -c . "$trials")
mkdir -p "$out/logs"
script=$(mktemp)
cat > "$script" <<JOB
#!/bin/bash
cd "$repo"
args=\$(grep . "$trials" | sed -n "\$((SLURM_ARRAY_TASK_ID + 1))p")
exec dotnet artifacts/bin/research.dll $command "$config" \$args --set run.threads=\$SLURM_CPUS_PER_TASK --set run.output_dir="$out"
JOB
job=$(sbatch --parsable --array=0-$((count - 1)) --cpus-per-task="$cpus" --output="$out/logs/trial-%a.log" "$script")
rm -f "$script"
echo "job array $job: $count trials, $cpus cpu(s) each"
trap 'scancel "$job"; echo "cancelled $job" >&2; exit 130' INT TERM
# Poll squeue ourselves: sbatch --wait polls slowly.
while [ -n "$(squeue -h -j "$job" 2>/dev/null)" ]; do sleep 2; done
failed=0
for ((i = 0; i < count; i++)); do
  state=$(scontrol show job "${job}_$i" 2>/dev/null | grep -oE 'JobState=[A-Z_]+|ExitCode=[0-9:]+' | tr '\n' ' ')
  echo "trial $i: ${state:-unknown} (log: $out/logs/trial-$i.log)"
  [[ "$state" == *"JobState=COMPLETED"* ]] || failed=$((failed + 1))
done
[ "$failed" -eq 0 ] || { echo "$failed trial(s) failed" >&2; exit 1; }
