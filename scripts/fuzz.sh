#!/usr/bin/env bash
# Fuzz every target for a while: seed the corpora (fuzz/corpus/<target>/,
# not committed) from fixtures/ and the shared corpus, read in place; build
# the targets with cargo-fuzz on nightly (installing cargo-fuzz if missing);
# run each for FUZZ_SECONDS (default 60) in turn, with the inputs saved in
# fuzz/regressions/<target>/ as a second corpus; print per target the runs
# and the coverage libFuzzer reached. A crash leaves its input in
# fuzz/artifacts/<target>/ and makes the script fail at the end.
#
#   FUZZ_SECONDS=300 FUZZ_TARGETS="tracker pipeline" scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
cargo=${CARGO:-cargo}

if ! "$cargo" +nightly --version >/dev/null 2>&1; then
  echo "fuzzing needs a nightly toolchain: rustup toolchain install nightly" >&2
  exit 1
fi
if ! "$cargo" fuzz --version >/dev/null 2>&1; then
  "$cargo" install cargo-fuzz --locked
fi

captures=(fixtures)
[ -d ../shared/corpus/files ] && captures+=(../shared/corpus/files)
"$cargo" run --locked --quiet --example fuzz_seeds -- fuzz/corpus "${captures[@]}"
targets=${FUZZ_TARGETS:-$("$cargo" run --locked --quiet --example fuzz_seeds -- --list)}

cd fuzz
"$cargo" +nightly fuzz build
mkdir -p artifacts
failed=()
summary=()
for t in $targets; do
  mkdir -p "regressions/$t"
  log="artifacts/$t.log"
  echo "== $t: ${seconds}s"
  status=0
  "$cargo" +nightly fuzz run "$t" "corpus/$t" "regressions/$t" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
  # libFuzzer's last status line: "#RUNS <event> cov: N ft: N corp: N/Nb ...".
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  runs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$last")
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
  ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
  corp=$(sed -nE 's/.* corp: ([0-9]+).*/\1/p' <<<"$last")
  verdict=ok
  if [ "$status" -ne 0 ]; then
    verdict="FAILED (exit $status, see fuzz/$log and fuzz/artifacts/$t/)"
    failed+=("$t")
    grep -E 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" | head -n 5 || true
  fi
  summary+=("$(printf '%-15s runs %10s  cov %6s  ft %7s  corpus %6s  %s' \
    "$t" "${runs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$verdict")")
done

echo
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "crashed: ${failed[*]}; minimise with cargo +nightly fuzz tmin, then save the input in fuzz/regressions/<target>/" >&2
  exit 1
fi
