#!/usr/bin/env bash
# The two commands of the README:
#   ./build.sh demo   restore, build, install Fashion-MNIST when missing (Debian/Ubuntu), run the forgetting demo
#   ./build.sh test   build, install what the tests read when missing (Fashion-MNIST, the fortunes, binutils, fonts),
#                     run every test (each test's duration; last line "N passed, N failed")
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

# What the demo and the tests read, each a check that holds when a Debian package's files are there: Fashion-MNIST
# (the demo and the tests), the English and German fortunes (text tests), readelf (binutils: the native-library test),
# the fonts and fontconfig the plots render with, Python's PIL (python3-pil: PNG and JPEG fixtures written by a
# library independent of the image-folder reader, scripts/export-formats.sh), and pandas (python3-pandas, which brings
# python3-numpy: CSV and JSONL fixtures written by pandas, and the Llama-family reference in numpy float64,
# tests/Fixtures/llama-reference/reference_np.py).
has_fashion_mnist() { [ -f "${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}/train-images-idx3-ubyte.gz" ]; }
has_fortunes() { [ -f /usr/share/games/fortunes/computers ]; }
has_fortunes_de() { [ -f /usr/share/games/fortunes/de/zitate ]; }
has_pil() { /usr/bin/python3 -c 'import PIL' >/dev/null 2>&1; }
has_pandas() { /usr/bin/python3 -c 'import pandas, numpy' >/dev/null 2>&1; }
has_readelf() { command -v readelf >/dev/null 2>&1; }
has_fonts() { [ -d /usr/share/fonts/truetype/dejavu ]; }
has_fontconfig() { { ldconfig -p || /sbin/ldconfig -p; } 2>/dev/null | grep libfontconfig.so.1 >/dev/null; }
demo_packages=(dataset-fashion-mnist:has_fashion_mnist)
test_packages=(dataset-fashion-mnist:has_fashion_mnist fortunes:has_fortunes fortunes-de:has_fortunes_de
               binutils:has_readelf fonts-dejavu-core:has_fonts libfontconfig1:has_fontconfig python3-pil:has_pil
               python3-pandas:has_pandas)

# ensure_packages WHAT PACKAGE:CHECK...: installs the packages whose check fails, quietly (sudo when not root).
ensure_packages() {
  local what=$1 need=() entry
  shift
  for entry in "$@"; do "${entry#*:}" || need+=("${entry%%:*}"); done
  [ ${#need[@]} -eq 0 ] && return
  if command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages for the $what: ${need[*]}"
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
      $sudo apt-get update -q >/dev/null &&
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; }
  else
    echo "missing for the $what: the files of the Debian packages ${need[*]}, and apt-get is not available to install them" >&2
    echo "(by hand: Fashion-MNIST, the four .gz files of the dataset's public release in a folder named by FASHION_MNIST_DIR;" >&2
    echo "fortunes: the English files in /usr/share/games/fortunes, the German ones in /usr/share/games/fortunes/de)." >&2
    exit 2
  fi
}

case "${1:-}" in
  demo)
    shift
    dotnet restore Research.sln -v:q
    build
    ensure_packages demo "${demo_packages[@]}"
    dotnet artifacts/bin/research.dll demo "$@"
    ;;
  test)
    shift
    build
    ensure_packages tests "${test_packages[@]}"
    dotnet artifacts/bin/Research.Tests.dll "$@"
    ;;
  *)
    echo "usage: ./build.sh demo | test [args...]" >&2
    exit 2
    ;;
esac
