#!/usr/bin/env bash
# Cross-compiles the pure C++ kernels (native/src without the pybind11 bindings) for aarch64 with
# Debian's toolchain and runs the known-answer driver native/kat/kat_main.cpp under qemu-user, on the
# NEON path and on the scalar path. The golden file was written on x86-64 from the Python face
# (native/kat/make_golden.py), so passing means the aarch64 build is bit-identical to x86-64.
# The same driver is first built and run natively as a check of the golden file itself.
#
# Usage: .ci/aarch64-kat.sh [GOLDEN_FILE]        (exit 0: all known answers match)
# Needs: apt-get install g++-aarch64-linux-gnu qemu-user   (qemu-user-static works too)
set -euo pipefail
cd "$(dirname "$0")/.."

golden="${1:-native/kat/golden.txt}"
out="build/aarch64-kat"
cxx_a64="${CXX_AARCH64:-aarch64-linux-gnu-g++}"
cxx_host="${CXX:-g++}"
flags=(-std=c++17 -O3 -Wall -Wextra -fno-strict-aliasing -Inative/include)

qemu=""
for q in qemu-aarch64 qemu-aarch64-static; do
  if command -v "$q" >/dev/null; then qemu="$q"; break; fi
done
if ! command -v "$cxx_a64" >/dev/null || [[ -z "$qemu" ]]; then
  echo "aarch64-kat: needs $cxx_a64 and qemu-aarch64 (apt-get install g++-aarch64-linux-gnu qemu-user)" >&2
  exit 2
fi
[[ -r "$golden" ]] || { echo "aarch64-kat: cannot read $golden" >&2; exit 2; }

mapfile -t srcs < <(ls native/src/*.cpp | grep -v -E '/(bind_[^/]*|module)\.cpp$')
mkdir -p "$out"

# Rebuild only when a source or header is newer than the binary (the test suite calls this twice).
build() {  # build COMPILER OUTPUT [extra flags...]
  local compiler="$1" bin="$2"; shift 2
  if [[ -x "$bin" ]] && [[ -z "$(find "${srcs[@]}" native/include native/kat/kat_main.cpp -newer "$bin" -type f -print -quit)" ]]; then
    return 0
  fi
  echo "+ $compiler ${flags[*]} $* native/kat/kat_main.cpp ${srcs[*]} -o $bin"
  "$compiler" "${flags[@]}" "$@" native/kat/kat_main.cpp "${srcs[@]}" -o "$bin"
}

status=0
if command -v "$cxx_host" >/dev/null; then
  build "$cxx_host" "$out/kat-host"
  echo "== host $(uname -m)"
  "$out/kat-host" "$golden" || status=1
fi

# Static, so qemu needs no aarch64 sysroot (-L /usr/aarch64-linux-gnu would do as well).
build "$cxx_a64" "$out/kat-aarch64" -static
echo "== aarch64 ($qemu, $("$cxx_a64" -dumpfullversion))"
"$qemu" "$out/kat-aarch64" "$golden" || status=1
echo "== aarch64 scalar path (FEDGATE_SIMD=scalar)"
FEDGATE_SIMD=scalar "$qemu" "$out/kat-aarch64" "$golden" || status=1

if [[ $status -ne 0 ]]; then
  echo "aarch64-kat: FAILED" >&2
else
  echo "aarch64-kat: all known answers match"
fi
exit $status
