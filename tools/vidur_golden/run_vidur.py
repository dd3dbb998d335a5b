"""Runs Vidur 0.0.1 (microsoft/vidur, a scratch copy on PYTHONPATH; not part of this repo).

With `--tables DIR`, Vidur's random forests are replaced by prediction tables it cached before
(`<op>_<hash8>_predictions.csv[.gz]`, e.g. shared/vidur_reference/predictor_tables), so nothing
is trained; an op the run needs but DIR lacks (`send_recv` for pipeline parallelism) is trained
and tabulated by Vidur's own code, and its table lands in Vidur's cache dir like any other.
Without `--tables`, Vidur trains as usual (its grid search is set by its own
`--random_forrest_execution_time_predictor_config_*` arguments; see README.md).

Every other argument goes to Vidur's `main` unchanged. Plot images are never written (kaleido
needs Chrome); `--no-plots` also skips the CDF/histogram plotting work, as when timing Vidur.

    PYTHONPATH=<vidur src> python run_vidur.py [--tables DIR] [--no-plots] \\
        -- <vidur arguments>
"""
import argparse
import csv
import glob
import gzip
import sys


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", help="directory of Vidur's cached prediction tables")
    parser.add_argument("--no-plots", action="store_true",
                        help="skip Vidur's plot generation (metrics CSVs are still written)")
    ours, vidur_args = parser.parse_known_args()
    if vidur_args and vidur_args[0] == "--":
        vidur_args = vidur_args[1:]
    return ours, vidur_args


def table_path(tables, op):
    paths = [p for p in glob.glob(f"{tables}/{op}_*_predictions.csv*") if "_training_" not in p]
    if len(paths) > 1:
        sys.exit(f"{tables}: more than one prediction table for `{op}`: {paths}")
    return paths[0] if paths else None


def load_table(path):
    """{feature tuple: prediction ms}, keyed exactly as Vidur keys its predictions dict."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        rows = csv.reader(f)
        next(rows)
        return {tuple(int(float(x)) for x in row[:-1]): float(row[-1]) for row in rows}


TOKEN_OPS = ["attn_pre_proj", "attn_post_proj", "attn_rope", "attn_kv_cache_save", "mlp_up_proj",
             "mlp_down_proj", "mlp_act", "input_layernorm", "post_attention_layernorm", "add"]
CPU_OPS = ["schedule", "sampler_e2e", "prepare_inputs_e2e", "process_model_outputs",
           "ray_comm_time"]


def install_tables(sk, tables):
    import numpy as np
    import pandas as pd

    cls = sk.SklearnExecutionTimePredictor

    def needed_ops(self):
        ops = TOKEN_OPS + ["attn_decode", "attn_prefill"]
        if self._replica_config.tensor_parallel_size > 1:
            ops.append("all_reduce")
        if self._replica_config.num_pipeline_stages > 1:
            ops.append("send_recv")
        if not self._config.skip_cpu_overhead_modeling:
            ops += CPU_OPS
        return ops

    def train_models(self):
        missing = [op for op in needed_ops(self) if table_path(tables, op) is None]
        if missing not in ([], ["send_recv"]):
            sys.exit(f"{tables} has no prediction tables for {missing}")
        if not missing:
            return {}
        df = self._get_send_recv_df_with_derived_features(
            self._load_send_recv_df(self._send_recv_input_file))
        return {"send_recv": self._train_model(
            model_name="send_recv", df=df, feature_cols=["num_tokens"],
            target_col="time_stats.send_recv.median")}

    def predict_from_models(self):
        predictions = {}
        for op in needed_ops(self):
            if op in self._models:
                grid = pd.DataFrame({"num_tokens": np.arange(1, self._max_tokens + 1)})
                predictions[op] = self._get_model_prediction(op, self._models[op], grid)
            else:
                predictions[op] = load_table(table_path(tables, op))
        return predictions

    cls._train_models = train_models
    cls._predict_from_models = predict_from_models


def main():
    ours, vidur_args = parse_args()
    from vidur.execution_time_predictor import sklearn_execution_time_predictor as sk

    if ours.tables:
        install_tables(sk, ours.tables)

    import plotly.graph_objs as go
    go.Figure.write_image = lambda self, *a, **k: None
    if ours.no_plots:
        from vidur.metrics import data_series
        for name in ["plot_cdf", "plot_histogram", "plot_step", "plot_differential"]:
            if hasattr(data_series.DataSeries, name):
                setattr(data_series.DataSeries, name, lambda self, *a, **k: None)

    from vidur.main import main as vidur_main
    sys.argv = [sys.argv[0]] + vidur_args
    vidur_main()


if __name__ == "__main__":
    main()
