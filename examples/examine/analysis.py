"""Analysing a sweep with the Examiner, notebook style (run the `# %%` cells in VS Code or
Jupyter, or the whole file as a script).

    cd examples/quickstart && run            # the sweep: 2 lr x 2 hidden x 2 seeds
    python examples/examine/analysis.py      # or: python analysis.py path/to/output
"""

# %% Where the sweep wrote its experiment dirs
import re
import sys
from pathlib import Path

import pandas as pd

from mlrunner.examine import Examiner, Experiment, latest_log

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "quickstart" / "output"
OUTPUT = Path(sys.argv[1]) if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else DEFAULT_OUTPUT
if not OUTPUT.is_dir():
    sys.exit(f"no output dir {OUTPUT}: run the quickstart sweep first (cd examples/quickstart && run)")

# %% Metrics without code: a regex over a log, and metrics.json
# `add_regex` takes the last match of group 1 in the latest log.test.* of each experiment
# (a float when it parses). train.py writes metrics.json ({"train_loss", "val_acc"}): its
# keys become columns on their own, as would the last line of a metrics.jsonl.
examiner = Examiner()
examiner.add_regex("test_acc", r"TEST acc = ([\d.]+)", log="test")


# %% A parser of your own: the epoch with the best validation accuracy
# A parser gets the experiment dir, the Experiment (param / metric / cache dicts) and a
# dict shared by all experiments. Closures and lambdas work, also with workers > 0.
EPOCH = re.compile(r"epoch (\d+) loss [\d.]+ acc ([\d.]+)")


def best_epoch(output_dir: Path, experiment: Experiment, caches: dict) -> None:
    log = latest_log("train", output_dir)
    if log is None:
        return  # not trained yet: the Examiner lists it in examiner.errors
    epochs = [(float(acc), int(epoch)) for epoch, acc in EPOCH.findall(log.read_text())]
    if epochs:
        experiment.metric["best_epoch"] = max(epochs)[1]


examiner.add(best_epoch)

# %% Examine every experiment dir (in 2 processes; results are cached by file mtime/size,
# so running this cell again after more experiments finished only parses those)
examiner.exam(OUTPUT, workers=2)
for line in examiner.errors:
    print("problem:", line)

# %% The table: the params that vary, the metrics, and what the ledger knows
df = examiner.table(ledger=True)
with pd.option_context("display.width", 200, "display.max_columns", 30):
    print(df)

# %% Failed or interrupted experiments, and experiments that ran other code than their run's
# snapshot, straight from the ledger columns
print(df[df["_status"].ne("finished") | df["_code_changed"].fillna(False)][["_status", "_failure"]])

# %% Mean and standard deviation over seeds
metrics = sorted({key for e in examiner.experiments.values() for key in e.metric})
params = [c for c in df.columns if c not in metrics and not str(c).startswith("_") and c != "seed"]
summary = df.groupby(params)[["test_acc", "val_acc"]].agg(["mean", "std"]) if params else df
with pd.option_context("display.width", 200, "display.float_format", "{:.4f}".format):
    print(summary)
