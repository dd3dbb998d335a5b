"""Makes the Vidur goldens of tests/vidur_golden.rs: runs Vidur 0.0.1 (through run_vidur.py,
with its cached prediction tables) on every case of tests/data/vidur_golden/cases.json and
keeps, per case, what the test compares:

- `<case>.requests.csv.gz`: request_id, e2e_ns, ttft_ns, scheduling_delay_ns, num_restarts
  (Vidur's request_e2e_time, prefill_e2e_time, request_scheduling_delay, request_num_restarts;
  seconds × 10⁹, rounded to whole ns);
- `<case>.batches.csv.gz`: num_tokens, num_requests, duration_ns per batch in Vidur's batch-id
  (formation) order (batch_num_tokens, batch_size, batch_execution_time × 10⁹).

    PYTHONPATH=<vidur src> python make_goldens.py --shared ../../../shared/vidur_reference \\
        --work <scratch dir> [case ...]

Files are gzipped with mtime 0, so the same Vidur output gives the same bytes.
"""
import argparse
import csv
import glob
import gzip
import io
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN_DIR = os.path.normpath(os.path.join(HERE, "../../tests/data/vidur_golden"))


def vidur_args(case, shared, trace, out_dir, cache_dir):
    policy = case["policy"]
    args = [
        "--replica_config_model_name", "meta-llama/Llama-2-70b-hf",
        "--replica_config_device", "a100",
        "--replica_config_tensor_parallel_size", "2",
        "--replica_config_num_pipeline_stages", str(case["pipeline_stages"]),
        "--replica_config_network_device", "a100_pairwise_nvlink",
        "--random_forrest_execution_time_predictor_config_send_recv_input_file",
        f"{shared}/profiling/network/a100_pairwise_nvlink/send_recv.csv",
        "--request_generator_config_type", "trace_replay",
        "--trace_request_generator_config_trace_file", trace,
        "--trace_request_generator_config_time_scale_factor", str(case["time_scale_factor"]),
        "--trace_request_generator_config_prefill_scale_factor",
        str(case["prefill_scale_factor"]),
        "--replica_scheduler_config_type", policy,
        "--metrics_config_output_dir", out_dir,
        "--metrics_config_cache_dir", cache_dir,
        "--metrics_config_keep_individual_batch_metrics",
        "--no-metrics_config_enable_chrome_trace",
    ]
    if case["num_blocks"] is not None:
        args += [f"--{policy}_scheduler_config_num_blocks", str(case["num_blocks"])]
    return args


def write_gz_csv(path, header, rows):
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as f:
            f.write(text.getvalue().encode())


def ns(seconds):
    return round(float(seconds) * 1e9)


def convert(case, out_dir):
    [run_dir] = glob.glob(f"{out_dir}/*/")
    with open(f"{run_dir}/request_metrics.csv") as f:
        requests = sorted(csv.DictReader(f), key=lambda r: int(r["Request Id"]))
    write_gz_csv(
        f"{GOLDEN_DIR}/{case['name']}.requests.csv.gz",
        ["request_id", "e2e_ns", "ttft_ns", "scheduling_delay_ns", "num_restarts"],
        [[int(r["Request Id"]), ns(r["request_e2e_time"]), ns(r["prefill_e2e_time"]),
          ns(r["request_scheduling_delay"]), int(float(r["request_num_restarts"]))]
         for r in requests])
    with open(f"{run_dir}/batch_metrics.csv") as f:
        batches = sorted(csv.DictReader(f), key=lambda r: int(r["Batch Id"]))
    write_gz_csv(
        f"{GOLDEN_DIR}/{case['name']}.batches.csv.gz",
        ["num_tokens", "num_requests", "duration_ns"],
        [[int(float(b["batch_num_tokens"])), int(float(b["batch_size"])),
          ns(b["batch_execution_time"])] for b in batches])
    return len(requests), len(batches)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", required=True, help="the shared/vidur_reference directory")
    parser.add_argument("--work", required=True, help="scratch directory for Vidur's outputs")
    parser.add_argument("cases", nargs="*", help="case names (default: all)")
    args = parser.parse_args()
    shared = os.path.abspath(args.shared)
    with open(f"{GOLDEN_DIR}/cases.json") as f:
        manifest = json.load(f)
    os.makedirs(args.work, exist_ok=True)
    source = f"{shared}/{manifest['trace']}"
    for case in manifest["cases"]:
        if args.cases and case["name"] not in args.cases:
            continue
        work = os.path.join(os.path.abspath(args.work), case["name"])
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        trace = f"{work}/trace.csv"
        with open(source) as src, open(trace, "w") as dst:
            for i, line in enumerate(src):
                if case["num_requests"] is not None and i > case["num_requests"]:
                    break
                dst.write(line)
        # Vidur's cached tables, plus the case's own (e.g. its send_recv table).
        tables = f"{work}/tables"
        os.makedirs(tables)
        for path in glob.glob(f"{shared}/predictor_tables/*_predictions.csv*"):
            os.symlink(path, f"{tables}/{os.path.basename(path)}")
        if case.get("tables"):
            for path in glob.glob(f"{GOLDEN_DIR}/{case['tables']}/*_predictions.csv*"):
                os.symlink(path, f"{tables}/{os.path.basename(path)}")
        cache = f"{work}/cache"
        cmd = [sys.executable, f"{HERE}/run_vidur.py", "--tables", tables, "--no-plots", "--"]
        cmd += vidur_args(case, shared, trace, f"{work}/out", cache)
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=work)
        num_requests, num_batches = convert(case, f"{work}/out")
        print(f"{case['name']}: {num_requests} requests, {num_batches} batches", flush=True)
        # A table Vidur had to train (send_recv) is kept with the goldens, so that the test
        # and later runs use the very same predictions.
        for path in glob.glob(f"{cache}/*_predictions.csv"):
            if "_training_" in path or not case.get("tables"):
                continue
            dest = f"{GOLDEN_DIR}/{case['tables']}/{os.path.basename(path)}.gz"
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(path, "rb") as src, open(dest, "wb") as raw:
                with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
                    f.write(src.read())
            print(f"{case['name']}: kept Vidur's trained table as {dest}", flush=True)


if __name__ == "__main__":
    main()
