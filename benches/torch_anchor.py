"""PyTorch anchor for `cargo bench --bench engine`: Hugging Face transformers' Qwen3 on the
same weights, measured the same way as the bench measures our model.

    python benches/torch_anchor.py WEIGHTS_DIR THREADS CONTEXT DECODE_STEPS BATCH PREFILL

The bench spawns this once and keeps it: loading takes seconds, and one long-lived process
lets each repeat of the bench run ours, then this, back to back. Protocol: after loading, one
JSON line `{"ready": true, ...}` on stdout; then one command per line on stdin, each answered
with one JSON line:

    decode   -> {"decode_ms": [ms of each of DECODE_STEPS single-sequence decode steps]}
    batch    -> {"batch_step_ms": [...], "batch_tokens_per_s": x}
    prefill  -> {"prefill_ms": x}
    quit     -> exit 0 (so does end of input)

Any failure is a line `{"error": "..."}` and exit status 1. Diagnostics go to stderr.

What mirrors engine.rs: the prompts (`prompt` below is the same formula as its `prompt()`),
the step counts, greedy argmax for the next token, timing each decode step from the forward
through the argmax, and logits for the last position only. Our paged cache rewinds, so a
decode here crops the KV cache (transformers' DynamicCache) back to the prompt instead of
prefilling again. Written for the versions benches/torch_venv.sh pins (transformers 5.24
takes the cache as `cache=`, `past_key_values=` being deprecated).
"""

import json
import os
import sys
import time
import traceback

# Only the local weights directory: never reach for the Hugging Face hub.
os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402 (after the environment it reads)
import transformers  # noqa: E402
from transformers import DynamicCache, Qwen3ForCausalLM  # noqa: E402

VOCAB = 151_936  # the modulus of engine.rs's prompt()


def prompt(length, salt):
    """Same token ids as `prompt(len, salt)` in benches/engine.rs."""
    return [(i * 7919 + salt * 104_729 + 1) % VOCAB for i in range(length)]


def say(obj):
    print(json.dumps(obj), flush=True)


class Anchor:
    def __init__(self, model, context, decode_steps, batch, prefill):
        self.model = model
        self.context = context
        self.decode_steps = decode_steps
        self.batch = batch
        self.prefill_len = prefill
        # Prefilled KV caches and first tokens, made on first use (untimed), like the bench's
        # own prefills before its repeat loop.
        self.single = None
        self.batched = None

    def _prefill(self, rows):
        cache = DynamicCache(config=self.model.config)
        ids = torch.tensor(rows, dtype=torch.long)
        out = self.model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        return cache, out.logits[:, -1].argmax(-1)

    def _decode(self, state):
        """ms of each decode step, from position `context` on; rewinds the cache first."""
        cache, first = state
        cache.crop(self.context - cache.get_seq_length())  # a negative count: tokens to drop
        next_ids = first.unsqueeze(1)
        times_ms = []
        for _ in range(self.decode_steps):
            t = time.perf_counter()
            out = self.model(
                input_ids=next_ids, cache=cache, use_cache=True, logits_to_keep=1
            )
            next_ids = out.logits[:, -1].argmax(-1, keepdim=True)
            times_ms.append((time.perf_counter() - t) * 1e3)
        if cache.get_seq_length() != self.context + self.decode_steps:
            raise RuntimeError(f"KV cache holds {cache.get_seq_length()} tokens after decoding")
        return times_ms

    def decode(self):
        if self.single is None:
            self.single = self._prefill([prompt(self.context, 0)])
        return {"decode_ms": self._decode(self.single)}

    def batch_decode(self):
        # All prompts have the same length, so one batched prefill needs no padding or mask.
        if self.batched is None:
            self.batched = self._prefill([prompt(self.context, s) for s in range(self.batch)])
        times_ms = self._decode(self.batched)
        tokens_per_s = self.batch * len(times_ms) / (sum(times_ms) / 1e3)
        return {"batch_step_ms": times_ms, "batch_tokens_per_s": tokens_per_s}

    def prefill(self):
        ids = torch.tensor([prompt(self.prefill_len, 99)], dtype=torch.long)
        cache = DynamicCache(config=self.model.config)  # fresh, written as ours writes its own
        t = time.perf_counter()
        self.model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        return {"prefill_ms": (time.perf_counter() - t) * 1e3}


def main():
    if len(sys.argv) != 7:
        raise ValueError(
            "usage: torch_anchor.py WEIGHTS_DIR THREADS CONTEXT DECODE_STEPS BATCH PREFILL"
        )
    weights_dir = sys.argv[1]
    threads, context, decode_steps, batch, prefill = (int(a) for a in sys.argv[2:])
    for name in ("config.json", "model.safetensors"):
        if not os.path.isfile(os.path.join(weights_dir, name)):
            raise FileNotFoundError(f"no {name} in {weights_dir}")
    torch.set_num_threads(threads)
    transformers.utils.logging.disable_progress_bar()  # the bench's stderr is for its own progress
    model, loading = Qwen3ForCausalLM.from_pretrained(
        weights_dir, dtype=torch.float32, attn_implementation="sdpa", output_loading_info=True
    )
    # transformers fills missing weights with random ones and only warns: then it would not be
    # the bench's weights (the time would look right, the model would not be the same).
    problems = {k: sorted(v) for k, v in loading.items() if v}
    if problems:
        raise ValueError(f"the weights in {weights_dir} do not load as they are: {problems}")
    model.eval()
    anchor = Anchor(model, context, decode_steps, batch, prefill)
    commands = {"decode": anchor.decode, "batch": anchor.batch_decode, "prefill": anchor.prefill}
    say(
        {
            "ready": True,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(),
        }
    )
    with torch.inference_mode():
        for line in sys.stdin:
            command = line.strip()
            if command == "quit":
                return
            if command not in commands:
                raise ValueError(f"unknown command {command!r}")
            say(commands[command]())


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # report every failure to the bench as one line, then fail
        traceback.print_exc()
        say({"error": f"{type(e).__name__}: {e}"})
        sys.exit(1)
