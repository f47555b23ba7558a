#!/usr/bin/env bash
# The two commands of the README:
#   ./build.sh demo   restore, build, install Fashion-MNIST when missing (Debian/Ubuntu), run the forgetting demo
#   ./build.sh test   build, run every test (each test's duration; last line "N passed, N failed")
# The build writes the plugin contract and the dotnet new templates as NuGet packages to artifacts/packages.
# Extra arguments go to the demo or to the test runner (Expecto: --filter, --sequenced, --list-tests ...).
set -euo pipefail
cd "$(dirname "$0")"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
configuration=Release

build() {
  # CI sets RESEARCH_WARNINGS_AS_ERRORS=1: a warning fails the build there (the solution builds without one).
  dotnet build Research.sln -c "$configuration" -nologo -v:q -clp:NoSummary -m:2 \
    ${RESEARCH_WARNINGS_AS_ERRORS:+-warnaserror}
}

ensure_fashion_mnist() {
  local dir=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
  if [ -f "$dir/train-images-idx3-ubyte.gz" ]; then return; fi
  if command -v apt-get >/dev/null 2>&1; then
    echo "Fashion-MNIST is missing: installing the Debian package dataset-fashion-mnist"
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || {
      $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null; }
  else
    echo "Fashion-MNIST is missing and apt-get is not available: put the four .gz files of the dataset's" >&2
    echo "public release in a folder and set FASHION_MNIST_DIR to it." >&2
    exit 2
  fi
}

case "${1:-}" in
  demo)
    shift
    dotnet restore Research.sln -v:q
    build
    ensure_fashion_mnist
    dotnet artifacts/bin/research.dll demo "$@"
    ;;
  test)
    shift
    build
    ensure_fashion_mnist
    dotnet artifacts/bin/Research.Tests.dll "$@"
    ;;
  *)
    echo "usage: ./build.sh demo | test [args...]" >&2
    exit 2
    ;;
esac
