"""Summarizes a GPU check (tools/gpu_check.sh): the engine's speed from its own real run, the
bundle's device record, the compare verdict, and the PyTorch anchor when it ran.

Writes summary.json and summary.md into --out and prints the Markdown.
"""

import argparse
import csv
import glob
import json
import os
import statistics


def only_run(root: str, stage: str) -> str | None:
    runs = [d for d in glob.glob(os.path.join(root, stage, "*")) if os.path.isfile(os.path.join(d, "_SUCCESS"))]
    return sorted(runs)[-1] if runs else None


def engine_speed(real_run: str) -> dict:
    """Decode ms per iteration at batch 1 and 8 and prefill tokens/s, from batch_metrics.csv:
    host wall time of the forward (`model_forward_ns`, device synchronized) and, where recorded,
    the GPU's own time of the same forward (CUDA events, run_meta.json extra.gpu)."""
    with open(os.path.join(real_run, "batch_metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(real_run, "run_meta.json")) as f:
        meta = json.load(f)
    events = meta.get("extra", {}).get("gpu", {}).get("batch_forward_event_ns")
    out: dict = {"iterations": len(rows)}

    def forward_ms(selected: list[int], source: str) -> float | None:
        if source == "events":
            if not events:
                return None
            values = [events[i] for i in selected if i < len(events)]
        else:
            values = [int(rows[i]["model_forward_ns"]) for i in selected]
        return statistics.median(values) / 1e6 if values else None

    for batch in (1, 8):
        selected = [
            i
            for i, r in enumerate(rows)
            if int(r["num_prefill_requests"]) == 0 and int(r["num_decode_requests"]) == batch
        ]
        out[f"decode_b{batch}_iterations"] = len(selected)
        out[f"decode_ms_b{batch}"] = forward_ms(selected, "wall")
        out[f"decode_ms_b{batch}_gpu_events"] = forward_ms(selected, "events")
    prefill = [i for i, r in enumerate(rows) if int(r["num_decode_requests"]) == 0 and int(r["num_prefill_tokens"]) > 0]
    tokens = sum(int(rows[i]["num_prefill_tokens"]) for i in prefill)
    seconds = sum(int(rows[i]["model_forward_ns"]) for i in prefill) / 1e9
    out["prefill_iterations"] = len(prefill)
    out["prefill_tokens"] = tokens
    out["prefill_tokens_per_s"] = tokens / seconds if seconds > 0 else None
    out["device"] = meta.get("extra", {}).get("device")
    return out


def fmt(v, digits=2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def main() -> None:
    p = argparse.ArgumentParser()
    for key in ("study", "out", "device", "hardware", "model", "equality", "pipeline", "torch", "bench"):
        p.add_argument(f"--{key}", required=True)
    a = p.parse_args()
    summary: dict = {
        "device": a.device,
        "hardware": a.hardware,
        "model": a.model,
        "model_equality": a.equality,
        "pipeline": a.pipeline,
        "bench": a.bench,
    }
    real = only_run(a.study, "real")
    if real:
        summary["engine"] = engine_speed(real)
    bundle = only_run(a.study, "vidur_profile")
    if bundle:
        with open(os.path.join(bundle, "profiling_meta.json")) as f:
            summary["bundle_measured_on"] = json.load(f).get("measured_on")
    compare = only_run(a.study, "compare")
    if compare:
        with open(os.path.join(compare, "summary.json")) as f:
            summary["verdict"] = json.load(f)["verdict"]
    torch_json = os.path.join(a.out, "torch.json")
    if a.torch == "ran" and os.path.isfile(torch_json):
        with open(torch_json) as f:
            summary["torch"] = json.load(f)
    else:
        summary["torch"] = a.torch

    bench_json = os.path.join(a.out, "gpu_decode_attention.json")
    bench_cells = []
    if a.bench == "ran" and os.path.isfile(bench_json):
        with open(bench_json) as f:
            bench_cells = json.load(f)["cells"]
        summary["decode_attention"] = bench_cells

    e = summary.get("engine", {})
    t = summary["torch"] if isinstance(summary["torch"], dict) else {}

    def ratio(theirs, ours):
        return None if not theirs or not ours else theirs / ours

    lines = [
        f"# GPU check: {a.model} on {a.device} (`hardware={a.hardware}`)",
        "",
        f"- GPU tests (our logits vs candle-transformers, f32 and bf16; the paged decode kernel vs tensor ops): **{a.equality}**",
        f"- pipeline (workload, real, vidur_profile, vidur, compare): **{a.pipeline}**",
        f"- bundle measured on: `{json.dumps(summary.get('bundle_measured_on'))}`",
        "",
        "| measure | simreal (wall, device synced) | simreal (GPU events) | PyTorch + transformers | PyTorch ÷ simreal |",
        "|---|---|---|---|---|",
        f"| decode ms/token, batch 1 ({e.get('decode_b1_iterations', 0)} iterations) | {fmt(e.get('decode_ms_b1'))} | {fmt(e.get('decode_ms_b1_gpu_events'))} | {fmt(t.get('decode_ms_b1'))} | {fmt(ratio(t.get('decode_ms_b1'), e.get('decode_ms_b1')))} |",
        f"| decode ms/iteration, batch 8 ({e.get('decode_b8_iterations', 0)} iterations) | {fmt(e.get('decode_ms_b8'))} | {fmt(e.get('decode_ms_b8_gpu_events'))} | {fmt(t.get('decode_ms_b8'))} | {fmt(ratio(t.get('decode_ms_b8'), e.get('decode_ms_b8')))} |",
        f"| prefill tokens/s ({e.get('prefill_iterations', 0)} prefill-only iterations; PyTorch: one {t.get('prefill_tokens', '–')}-token prompt) | {fmt(e.get('prefill_tokens_per_s'), 0)} | | {fmt(t.get('prefill_tokens_per_s'), 0)} | {fmt(ratio(e.get('prefill_tokens_per_s'), t.get('prefill_tokens_per_s')))} (simreal ÷ PyTorch) |",
        "",
        "Decode contexts differ: simreal's are the burst's own (32–320-token prompts growing), "
        f"PyTorch's a {t.get('context_tokens', '–')}-token context. PyTorch: {summary['torch'] if not t else 'torch ' + t['torch'] + ', transformers ' + t['transformers']}.",
        "",
        f"Verdict: {summary.get('verdict', 'no comparison')}",
        "",
        f"Decode attention, paged CUDA kernel vs tensor ops (benches/gpu_decode_attention.rs): {a.bench}",
    ]
    if bench_cells:
        lines += [
            "",
            "| batch | max ctx | attn_decode ms, tensor ops → kernel | speedup | forward GPU ms, tensor ops → kernel | speedup |",
            "|---|---|---|---|---|---|",
        ]
        for c in bench_cells:
            t, k = c["tensor_ops"], c["cuda_kernels"]
            lines.append(
                f"| {c['batch']} | {c['max_context']} | {fmt(t['attn_decode_gpu_ms'], 3)} → {fmt(k['attn_decode_gpu_ms'], 3)} "
                f"| {fmt(c['attn_decode_speedup'])}× | {fmt(t['forward_gpu_ms'], 3)} → {fmt(k['forward_gpu_ms'], 3)} | {fmt(c['forward_speedup'])}× |"
            )
    md = "\n".join(lines) + "\n"
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    with open(os.path.join(a.out, "summary.md"), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
