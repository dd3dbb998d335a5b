#!/usr/bin/env bash
# Two builds of the same stages, timed interleaved (old, new, old, new, ...): `real`
# (qwen3_0_6b, 8 requests at 0.5 req/s; batch-1 decode, prefill time, TTFT) three rounds, and
# `vidur` (Vidur's splitwise case, 19366 requests; wall time) five rounds. The binaries: the
# release builds tools/same_behaviour.sh keeps with KEEP=1 (`<dir>/old-bin`, `<dir>/new-bin`).
# The qwen3_0_6b weights come from tmp/weights (a `real` run makes them).
#
#   benches/ab_revisions.sh <kept dir> <output root>
set -euo pipefail
bins="$1"; out="$2"
cd "$(dirname "$0")/.."
repo="$(pwd)"
for side in old new; do
  mkdir -p "$out/$side"; ln -sfn "$repo/tmp/weights" "$out/$side/weights"
done
ov=(model=qwen3_0_6b workload.num_requests=8 workload.qps=0.5 output.force=true)
echo "start $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
for round in 1 2 3; do
  for side in old new; do
    "$bins/$side-bin/workload" "${ov[@]}" "output.root=$out/$side" >/dev/null 2>&1
    d=$("$bins/$side-bin/real" "${ov[@]}" "output.root=$out/$side" 2>/dev/null | tail -1)
    python3 - "$d" "$side" "$round" <<'PY'
import csv, json, sys, statistics
d, side, rnd = sys.argv[1:]
rows = list(csv.DictReader(open(f"{d}/batch_metrics.csv")))
dec = [int(r["duration_ns"])/1e6 for r in rows if r["num_prefill_tokens"] == "0" and r["num_decode_tokens"] == "1"]
pre = sum(int(r["duration_ns"]) for r in rows if int(r["num_prefill_tokens"]) > 0)/1e9
req = list(csv.DictReader(open(f"{d}/request_metrics.csv")))
ttft = statistics.median(int(r["ttft_ns"])/1e9 for r in req)
print(f"round {rnd} {side}: decode b1 median {statistics.median(dec):.1f} ms (n={len(dec)}), prefill {pre:.2f} s, TTFT P50 {ttft:.2f} s")
PY
  done
done
echo "end engine $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
vc=(model=llama2_70b hardware=a100_80g vidur.tensor_parallel_size=2
  vidur.bundle=../shared/vidur_reference/profiling vidur.network=a100_pairwise_nvlink
  vidur.predictor=vidur_tables vidur.predictor_tables=../shared/vidur_reference/predictor_tables
  vidur.memory_planner=vidur vidur.cpu_overheads=false workload=trace_replay
  workload.num_requests=19366 workload.trace_replay.time_scale_factor=6
  workload.trace_replay.trace_file=../shared/vidur_reference/processed_traces/splitwise_conv.csv
  vidur.token_metrics=false vidur.batch_requests=false output.force=true)
for round in 1 2 3 4 5; do
  for side in old new; do
    "$bins/$side-bin/workload" "${vc[@]}" "output.root=$out/$side" >/dev/null 2>&1
    s=$(date +%s.%N)
    "$bins/$side-bin/vidur" "${vc[@]}" "output.root=$out/$side" >/dev/null 2>&1
    e=$(date +%s.%N)
    echo "round $round $side: vidur wall $(python3 -c "print(f'{$e-$s:.3f}')") s"
  done
done
echo "end $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
