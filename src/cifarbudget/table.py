"""`make table`: `dvc exp show` with the columns that tell the experiments apart: each one's
name, every parameter that differs between them, and the headline metrics.

Extra arguments go to `dvc exp show`, e.g. `make table ARGS="-A --sort-by test_acc.mean"`.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import yaml

from cifarbudget.stage import run_stage

# What ranks experiments: the classifier's test (or validation) accuracy, the generative
# model's class accuracy and classifier-FID, and FID when it was measured.
HEADLINE_METRICS = ("test_acc.mean", "val_acc.mean", "classifier_accuracy_generated",
                    "classifier_fid", "fid")
# Wide enough for the headline metrics and a few swept parameters: the width of a table sent
# to a pipe or file, which rich would otherwise cut to 80 columns.
PIPE_COLUMNS = 160


def show_command(param_sections: list[str], extra: list[str]) -> list[str]:
    """`dvc exp show` keeping the name and the headline metrics (a metric named the same in
    two files is shown as `file:name`), dropping every other column that is not a parameter
    (metrics, dependency hashes, creation time); --only-changed drops the equal parameters."""
    headline = "|".join(map(re.escape, HEADLINE_METRICS))
    params = "|".join(map(re.escape, param_sections))
    return ["dvc", "exp", "show", "--no-pager", "--only-changed",
            "--keep", f"^(Experiment|([^:]+:)?({headline}))$",
            "--drop", f"^(?!({params})\\.)", *extra]


def main() -> None:
    with open("params.yaml") as file:
        sections = list(yaml.safe_load(file))
    # COLUMNS if set, else the terminal's width, else PIPE_COLUMNS.
    columns = shutil.get_terminal_size((PIPE_COLUMNS, 24)).columns
    status = subprocess.run(show_command(sections, sys.argv[1:]),
                            env={**os.environ, "COLUMNS": str(columns)}).returncode
    sys.exit(status)


if __name__ == "__main__":
    run_stage(main)
