"""Runs Vidur 0.0.1 itself on a profiling bundle written by simreal's `vidur_profile` stage and
on a simreal workload: Vidur trains its random forests on the bundle (`run_vidur.py` without
`--tables`) and replays the workload's requests, so that `compare` can read Vidur's output
next to the real engine's.

The bundle's files are named to Vidur by path (our layout keys CPU overheads by device,
Vidur's default path by network device; neither names a device Vidur knows). The model must
be in the scratch copy's model registry (README.md). Vidur's device (`a100`) only feeds its
memory planner and MFU metric: the KV pool is set to `--num-blocks`, the pool of the runs it
is compared with.

    PYTHONPATH=<vidur src> python vidur_on_bundle.py --bundle <bundle dir> \\
        --workload <workload dir> --num-blocks N --out <dir> [--grid small] [--policy sarathi]
"""
import argparse
import csv
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# One combination of Vidur's grid (250 trees, depth 16, min split 2) instead of its 27.
SMALL_GRID = [
    "--random_forrest_execution_time_predictor_config_num_estimators", "250",
    "--random_forrest_execution_time_predictor_config_max_depth", "16",
    "--random_forrest_execution_time_predictor_config_min_samples_split", "2",
]


def write_trace(workload, path):
    """The workload's requests as Vidur's trace_replay reads them (arrived_at in seconds)."""
    with open(f"{workload}/trace_intervals.csv") as f:
        arrivals = {int(r["request_id"]): int(r["arrival_time_ns"]) for r in csv.DictReader(f)}
    with open(f"{workload}/trace_lengths.csv") as f:
        lengths = {int(r["request_id"]): (int(r["num_prefill_tokens"]), int(r["num_decode_tokens"]))
                   for r in csv.DictReader(f)}
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["arrived_at", "num_prefill_tokens", "num_decode_tokens"])
        for rid in sorted(arrivals):
            w.writerow([repr(arrivals[rid] / 1e9), *lengths[rid]])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--workload", required=True)
    parser.add_argument("--num-blocks", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--policy", default="sarathi", choices=["sarathi", "vllm", "orca"])
    parser.add_argument("--grid", default="vidur", choices=["vidur", "small"],
                        help="random-forest grid search: Vidur's 27 combinations, or one")
    parser.add_argument("--no-cpu-overheads", action="store_true",
                        help="Vidur's default: no CPU-overhead modelling")
    args = parser.parse_args()

    bundle = os.path.abspath(args.bundle)
    with open(f"{bundle}/profiling_meta.json") as f:
        meta = json.load(f)
    device, model = meta["device"], meta["model_name"]
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    trace = f"{out}/trace.csv"
    write_trace(os.path.abspath(args.workload), trace)

    rf = "--random_forrest_execution_time_predictor_config_"
    vidur = [
        "--replica_config_model_name", model,
        "--replica_config_device", "a100",
        "--replica_config_tensor_parallel_size", "1",
        f"{rf}compute_input_file", f"{bundle}/compute/{device}/{model}/mlp.csv",
        f"{rf}attention_input_file", f"{bundle}/compute/{device}/{model}/attention.csv",
        f"{rf}cpu_overhead_input_file", f"{bundle}/cpu_overhead/{device}/{model}/cpu_overheads.csv",
        "--request_generator_config_type", "trace_replay",
        "--trace_request_generator_config_trace_file", trace,
        "--replica_scheduler_config_type", args.policy,
        f"--{args.policy}_scheduler_config_num_blocks", str(args.num_blocks),
        "--metrics_config_output_dir", f"{out}/out",
        "--metrics_config_cache_dir", f"{out}/cache",
        "--metrics_config_keep_individual_batch_metrics",
        "--no-metrics_config_enable_chrome_trace",
    ]
    if not args.no_cpu_overheads:
        vidur.append(f"--no-{rf[2:]}skip_cpu_overhead_modeling")
    if args.grid == "small":
        vidur += SMALL_GRID
    cmd = [sys.executable, f"{HERE}/run_vidur.py", "--no-plots", "--"] + vidur
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=out)


if __name__ == "__main__":
    main()
