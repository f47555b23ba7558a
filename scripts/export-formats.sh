#!/usr/bin/env bash
# Writes Fashion-MNIST (the four gzipped IDX files) as an image folder of 8-bit grey PNGs, with Debian's python3-pil —
# a writer independent of the reader under test (StbImageSharp):
#   OUT/train/<label>/<index>.png and OUT/test/<label>/<index>.png, label 0–9, index the item's position in its IDX file
#   (zero-padded, so the files' ordinal order is the file order). Read back by [data] dataset = "image-folder" with
#   mean = [0.2860] and std = [0.3530] (Fashion-MNIST's reader's constants), the tensors are bitwise the built-in
#   reader's, in class-major order; with order = "name" as well, in the IDX order, so that a run on the folder gives the
#   built-in reader's numbers bitwise.
# Usage: scripts/export-formats.sh OUT [LIMIT] [FASHION_MNIST_DIR]   (LIMIT: the first N items of each split; 0: all)
#
#        scripts/export-formats.sh fortunes OUT [--config FILE] [--set KEY=VALUE ...] [--format jsonl|parquet|both]
# writes a fortune corpus's split as OUT/{train,validation,test}.{jsonl,parquet} with text and label (the topic) columns,
# through `research export-fortunes` (Research.Core.Data.FormatExport: the split is the built-in reader's, seeded, so it
# is computed by the same code); the split of the config's [data] and run.seed (default: dataset = "fortunes",
# task = "classify", seed 0; e.g. --set data.task=\"causal-lm\"). Read back by the jsonl and parquet sources the tensors
# are bitwise the built-in reader's. The research binary: $RESEARCH, else artifacts/bin/research.dll (./build.sh).
# See docs/data-formats.md.
set -euo pipefail
if [ "${1:-}" = fortunes ]; then
  shift
  out=${1:?usage: scripts/export-formats.sh fortunes OUT [--config FILE] [--set KEY=VALUE ...] [--format jsonl|parquet|both]}
  shift
  if [ -n "${RESEARCH:-}" ]; then
    exec "$RESEARCH" export-fortunes "$out" "$@"
  fi
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  exec dotnet "$root/artifacts/bin/research.dll" export-fortunes "$out" "$@"
fi
out=${1:?usage: scripts/export-formats.sh OUT [LIMIT] [FASHION_MNIST_DIR]}
limit=${2:-0}
src=${3:-${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}}
/usr/bin/python3 - "$out" "$limit" "$src" <<'PY'
import gzip, os, struct, sys
from PIL import Image

out, limit, src = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def idx(path, magic):
    with gzip.open(path, "rb") as f:
        data = f.read()
    m, = struct.unpack(">i", data[:4])
    if m != magic:
        sys.exit(f"{path}: IDX magic {m}, expected {magic}")
    rank = magic & 0xFF
    dims = struct.unpack(">" + "i" * rank, data[4:4 + 4 * rank])
    return dims, data[4 + 4 * rank:]

for split, prefix in (("train", "train"), ("test", "t10k")):
    (n, h, w), pixels = idx(os.path.join(src, f"{prefix}-images-idx3-ubyte.gz"), 2051)
    (_,), labels = idx(os.path.join(src, f"{prefix}-labels-idx1-ubyte.gz"), 2049)
    count = n if limit <= 0 else min(limit, n)
    for i in range(count):
        folder = os.path.join(out, split, str(labels[i]))
        os.makedirs(folder, exist_ok=True)
        Image.frombytes("L", (w, h), pixels[i * h * w:(i + 1) * h * w]).save(os.path.join(folder, f"{i:05d}.png"))
    print(f"{split}: {count} images")
PY
