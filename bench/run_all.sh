#!/usr/bin/env bash
# Runs every CrossAdapt benchmark through the CLI and collects one JSON file per benchmark.
#
#   bench/run_all.sh [OUT_DIR]          # default OUT_DIR: out/bench/<UTC timestamp>
#
# Environment:
#   ONLY="train-mlp data"     run just these (train-mlp train-fibinet data projection drift platform switch-platform startup growth paper)
#   PAPER_PRESET=smoke        preset of the paper benchmark (micro | smoke | standard)
#   PROJECTION_ROWS=10000000  table rows of the projection benchmarks
# A failing benchmark is reported and the others still run; the exit code is 1 if any failed.
# Figures depend on the machine and on what else runs on it: every JSON records CPU and threads.
set -uo pipefail
cd "$(dirname "$0")/.."

out=${1:-out/bench/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
cli=.venv/bin/crossadapt
[ -x "$cli" ] || cli=crossadapt
only=" ${ONLY:-train-mlp train-fibinet data projection drift platform switch-platform startup growth paper} "
failed=()

wanted() { case "$only" in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

run() {  # run NAME COMMAND... : stdout (one JSON object) goes to OUT/NAME.json
  local name=$1; shift
  wanted "$name" || return 0
  echo "==> $name: $*" >&2
  if "$@" > "$out/$name.json"; then
    echo "    $(head -c 400 "$out/$name.json")" >&2
  else
    echo "    FAILED (exit $?)" >&2; failed+=("$name")
  fi
}

run train-mlp      "$cli" bench train --arch mlp --json
run train-fibinet  "$cli" bench train --arch fibinet --json
run data           "$cli" bench data --json
run projection     "$cli" bench projection --rows "${PROJECTION_ROWS:-10000000}" --json
run drift          "$cli" bench drift --json
run platform       "$cli" bench platform --rows "${PROJECTION_ROWS:-10000000}" --json
run switch-platform "$cli" bench switch-platform --rounds 3 --json
python=.venv/bin/python
[ -x "$python" ] || python=python3
run startup        "$python" -m services.local.bench_startup --repeats 3
run growth         "$python" bench/growth.py --json
if wanted paper; then  # writes its JSON itself (--json FILE) and prints a table on stdout
  echo "==> paper (preset ${PAPER_PRESET:-smoke})" >&2
  "$cli" bench paper --preset "${PAPER_PRESET:-smoke}" --json "$out/paper.json" --out "$out/paper-work" >&2 \
    || { echo "    FAILED" >&2; failed+=(paper); }
fi
echo "results in $out" >&2
if [ ${#failed[@]} -gt 0 ]; then echo "failed: ${failed[*]}" >&2; exit 1; fi
