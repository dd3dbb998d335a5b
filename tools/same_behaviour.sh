#!/usr/bin/env bash
# Shows that a refactoring kept behaviour: runs one small study (qwen3_tiny, a tiny profiling
# grid) with the release binaries of two revisions and diffs what must not change.
#
#   tools/same_behaviour.sh OLD_REV [NEW_REV]     (NEW_REV defaults to HEAD)
#
# - `workload`: every file byte-identical except run_meta.json and config.yaml (provenance,
#   output root) and, in workload_meta.json, `created_at`, `git_commit` and the output root;
# - `vidur` (both revisions read the same bundle, the old one's): every CSV byte-identical;
# - `real` (timed, so only what timing cannot change): every CSV header identical, each
#   request's lengths/status and every token id identical;
# - `compare`: every CSV header and the key set of summary.json identical.
# Exits non-zero naming every difference (KEEP=1 keeps the runs). Needs ../shared beside the
# repository (the revisions read it); takes ~10 min on 2 cores (two release builds, two studies).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
old_rev="${1:?usage: tools/same_behaviour.sh OLD_REV [NEW_REV]}"
new_rev="${2:-HEAD}"
work="$(mktemp -d)"
cleanup() {
  git -C "$repo" worktree remove --force "$work/old" 2>/dev/null || true
  git -C "$repo" worktree remove --force "$work/new" 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/simreal/target-same-behaviour}"
ln -s "$(cd "$repo/.." && pwd)/shared" "$work/shared"

overrides=(model=qwen3_tiny workload.num_requests=16 workload.qps=8
  profile.num_tokens=[1,3] profile.decode_batch_sizes=[1,2] profile.decode_kv_sizes=[16,48]
  profile.prefill_chunk_sizes=[8,16] profile.prefill_kv_sizes=[0,16]
  profile.cpu_overhead_batch_sizes=[1,2] profile.warmup=0 profile.repeats=1
  profile.min_samples=1 profile.cpu_overhead_iterations=2)

for side in old new; do
  rev="$old_rev"; [ "$side" = new ] && rev="$new_rev"
  git -C "$repo" worktree add --quiet --detach "$work/$side" "$rev"
  echo "== $side ($(git -C "$work/$side" log --oneline -1)): release build" >&2
  (cd "$work/$side" && cargo build --quiet --release --bins)
  mkdir -p "$work/$side-bin"
  for b in workload vidur_profile real vidur compare; do
    cp "$CARGO_TARGET_DIR/release/$b" "$work/$side-bin/"
  done
done

run() { # side binary overrides...
  local side="$1" bin="$2"
  shift 2
  (cd "$work/$side" && "$work/$side-bin/$bin" "$@" "output.root=$work/$side-out") | tail -1
}
echo "== the old revision's bundle, read by both sides" >&2
bundle="$(run old vidur_profile "${overrides[@]}")"
for side in old new; do
  echo "== $side: workload, real, vidur, compare" >&2
  for b in workload real vidur compare; do
    run "$side" "$b" "${overrides[@]}" "vidur.bundle=$bundle" > "$work/$side-$b.path"
  done
done

python3 - "$work" <<'EOF'
import csv, json, sys
from pathlib import Path

work = Path(sys.argv[1])
out = {s: {b: Path((work / f"{s}-{b}.path").read_text().strip()) for b in
           ("workload", "real", "vidur", "compare")} for s in ("old", "new")}
problems = []
PROVENANCE = ("created_at", "git_commit")


def unrooted(text):
    for side in ("old", "new"):
        text = text.replace(str(work / f"{side}-out"), "<root>")
    return text


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))

def header(path):
    with open(path, newline="") as f:
        return next(csv.reader(f))

def files(d, pattern):
    return sorted(p.relative_to(d) for p in d.rglob(pattern) if p.is_file())

def same_files(stage, pattern, skip=()):
    a, b = out["old"][stage], out["new"][stage]
    fa, fb = files(a, pattern), files(b, pattern)
    if fa != fb:
        problems.append(f"{stage}: files differ: {fa} vs {fb}")
        return
    for rel in fa:
        if rel.name in skip:
            continue
        if rel.suffix == ".json":
            # Each side ran under its own output root, which the config records.
            ja, jb = (json.loads(unrooted((d / rel).read_text())) for d in (a, b))
            for j in (ja, jb):
                for key in PROVENANCE:
                    j.pop(key, None)
            if ja != jb:
                keys = sorted(k for k in set(ja) | set(jb) if ja.get(k) != jb.get(k))
                problems.append(f"{stage}: {rel} differs in {keys}: "
                                f"{[(ja.get(k), jb.get(k)) for k in keys][:3]}")
        elif (a / rel).read_bytes() != (b / rel).read_bytes():
            problems.append(f"{stage}: {rel} differs")
    print(f"{stage}: {len(fa)} files compared", file=sys.stderr)

same_files("workload", "*", skip=("run_meta.json", "config.yaml"))
same_files("vidur", "*.csv")

a, b = out["old"]["real"], out["new"]["real"]
for rel in files(a, "*.csv"):
    if header(a / rel) != header(b / rel):
        problems.append(f"real: {rel} header differs")
keep = ("request_id", "num_prefill_tokens", "num_decode_tokens", "num_decode_tokens_actual",
        "status", "replica_id", "backend", "error_type")
ra, rb = rows(a / "request_metrics.csv"), rows(b / "request_metrics.csv")
if [[r[k] for k in keep] for r in ra] != [[r[k] for k in keep] for r in rb]:
    problems.append("real: request rows differ outside their timings")
ta = {(r["request_id"], r["token_index"]): r["token_id"] for r in rows(a / "token_metrics.csv")}
tb = {(r["request_id"], r["token_index"]): r["token_id"] for r in rows(b / "token_metrics.csv")}
if ta != tb:
    problems.append("real: token ids differ")
print(f"real: {len(ra)} requests, {len(ta)} token ids compared", file=sys.stderr)

a, b = out["old"]["compare"], out["new"]["compare"]
for rel in files(a, "*.csv"):
    if header(a / rel) != header(b / rel):
        problems.append(f"compare: {rel} header differs")

def keys(v, prefix=""):
    if isinstance(v, dict):
        return {k2 for k, x in v.items() for k2 in keys(x, f"{prefix}{k}.")} | {prefix}
    return {prefix}

ka = keys(json.loads((a / "summary.json").read_text()))
kb = keys(json.loads((b / "summary.json").read_text()))
if ka != kb:
    problems.append(f"compare: summary.json keys differ: {sorted(ka ^ kb)[:10]}")
print(f"compare: {len(files(a, '*.csv'))} CSV headers, {len(ka)} summary keys compared",
      file=sys.stderr)

if problems:
    print("DIFFERENT:\n" + "\n".join(problems))
    sys.exit(1)
print("same behaviour")
EOF
