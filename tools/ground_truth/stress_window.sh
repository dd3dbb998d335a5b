#!/usr/bin/env bash
# Loads the machine on purpose for a window of a real run and shows that the device-speed
# timeline sees it and the drift correction follows it (docs/ground_truth.md).
#
#   tools/ground_truth/stress_window.sh [overrides…]
#
# Runs `real` (default config plus the overrides, e.g. timing.priority=normal) and, from
# START_S to START_S + LENGTH_S seconds after it starts, one busy-looping process per core;
# then replays the run with this config's bundle (raw and corrected) and prints the timeline
# rows of the window and the replay's errors. Needs the bundle (`vidur_profile`) and the
# workload of the same overrides. Env: START_S (default 20), LENGTH_S (default 20).
set -euo pipefail
cd "$(dirname "$0")/../.."
start_s="${START_S:-20}"
length_s="${LENGTH_S:-20}"
bin="${CARGO_TARGET_DIR:-target}/release"
cargo build --release --quiet --bin real --bin replay --bin workload --bin vidur_profile
"$bin/workload" "$@" >/dev/null
"$bin/vidur_profile" "$@" >/dev/null
run_id="stress-$(date -u +%Y%m%dT%H%M%S)"
"$bin/real" "$@" "output.run_id=$run_id" &
real_pid=$!
sleep "$start_s"
echo "stress_window: loading $(nproc) cores for ${length_s} s" >&2
busy=()
for _ in $(seq "$(nproc)"); do
  timeout "$length_s" sh -c 'while :; do :; done' &
  busy+=($!)
done
wait "${busy[@]}" 2>/dev/null || true
echo "stress_window: load off" >&2
wait "$real_pid"
run_dir="tmp/real/$run_id"
echo "== $run_dir/device_speed.csv (probes and every 10th host sample)"
awk -F, 'NR == 1 || $4 != "" || NR % 10 == 0' "$run_dir/device_speed.csv"
replay_dir=$("$bin/replay" "$@" "real_run=$run_dir" | tail -1)
echo "== $replay_dir/replay_summary.json"
python3 - "$replay_dir/replay_summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
for name in ("summary", "speed_corrected"):
    r = s.get(name)
    if r:
        print(f"{name}: total {r['total_error_pct']:+.1f} %, median |err| {r['duration']['median_abs_pct']:.1f} %")
PY
