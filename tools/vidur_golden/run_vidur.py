"""Runs Vidur 0.0.1 with its random-forest predictions replaced by the cached prediction
tables of shared/vidur_reference/predictor_tables (what Vidur itself computed for this model)."""
import csv, glob, gzip, os, sys
from vidur.execution_time_predictor import sklearn_execution_time_predictor as sk

TABLES = sys.argv[1]

def load(op):
    paths = [p for p in glob.glob(f"{TABLES}/{op}_*_predictions.csv*") if "_training_" not in p]
    assert len(paths) == 1, (op, paths)
    opener = gzip.open if paths[0].endswith(".gz") else open
    with opener(paths[0], "rt") as f:
        r = csv.reader(f)
        next(r)
        return {tuple(int(float(x)) for x in row[:-1]): float(row[-1]) for row in r}

OPS = ["attn_pre_proj", "attn_post_proj", "attn_rope", "attn_kv_cache_save", "mlp_up_proj",
       "mlp_down_proj", "mlp_act", "input_layernorm", "post_attention_layernorm", "add",
       "all_reduce", "attn_decode", "attn_prefill"]
sk.SklearnExecutionTimePredictor._train_models = lambda self: {}
sk.SklearnExecutionTimePredictor._predict_from_models = lambda self: {op: load(op) for op in OPS}

import plotly.graph_objs as _go
_go.Figure.write_image = lambda self, *a, **k: None
from vidur.main import main
sys.argv = [sys.argv[0]] + sys.argv[2:]
main()
