"""PyTorch + transformers on simreal's synthesized Qwen3 weights: the GPU check's speed anchor.

    python3 tools/gpu_check_torch.py WEIGHTS_DIR cuda|cpu > torch.json

Measures, on the same weights and dtype the engine served (config.json's torch_dtype), what
tools/gpu_check.sh reads from the engine's own run: decode ms/token at batch 1 and 8 (a
128-token context, greedy steps with the KV cache), and a 512-token prefill. Medians of
repeated timings after warm-up; the device is synchronized around every timed region.
"""

import json
import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM

CONTEXT_TOKENS = 128
DECODE_STEPS = 32
PREFILL_TOKENS = 512
REPEATS = 5


def main() -> None:
    weights, device = sys.argv[1], sys.argv[2]
    with open(f"{weights}/config.json") as f:
        dtype_name = json.load(f).get("torch_dtype", "float32")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
        dtype_name
    ]
    model = AutoModelForCausalLM.from_pretrained(weights, dtype=dtype).to(device).eval()
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def tokens(batch: int, length: int) -> torch.Tensor:
        return torch.randint(0, vocab, (batch, length), generator=generator).to(device)

    @torch.inference_mode()
    def decode_ms_per_step(batch: int) -> float:
        out = model(tokens(batch, CONTEXT_TOKENS), use_cache=True)
        past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        # Warm-up steps, then timed ones.
        for _ in range(4):
            out = model(nxt, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        sync()
        start = time.perf_counter()
        for _ in range(DECODE_STEPS):
            out = model(nxt, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        sync()
        return 1e3 * (time.perf_counter() - start) / DECODE_STEPS

    @torch.inference_mode()
    def prefill_ms() -> float:
        x = tokens(1, PREFILL_TOKENS)
        sync()
        start = time.perf_counter()
        model(x, use_cache=True)
        sync()
        return 1e3 * (time.perf_counter() - start)

    prefill_ms()  # warm-up
    result = {
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "dtype": dtype_name,
        "context_tokens": CONTEXT_TOKENS,
        "decode_ms_b1": statistics.median(decode_ms_per_step(1) for _ in range(REPEATS)),
        "decode_ms_b8": statistics.median(decode_ms_per_step(8) for _ in range(REPEATS)),
        "prefill_tokens": PREFILL_TOKENS,
        "prefill_ms": statistics.median(prefill_ms() for _ in range(REPEATS)),
    }
    result["prefill_tokens_per_s"] = PREFILL_TOKENS / (result["prefill_ms"] / 1e3)
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
