"""Render the charts of `dvc plots diff` to PNG files, without a browser (for the README).

    pip install -e '.[docs]'
    python docs/render_plots_diff.py OUT_DIR REV [REV ...] [--targets PLOT_ID ...]

Runs `dvc plots diff --json REV...` in the current repository and renders each chart's
Vega-Lite specification, exactly the one the HTML report embeds, with vl-convert; image
plots are listed, not copied. Writes OUT_DIR/<plot id>.png.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

import vl_convert


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("revisions", nargs="+")
    parser.add_argument("--targets", nargs="*", default=[])
    args = parser.parse_args()
    command = ["dvc", "plots", "diff", "--json", *args.revisions]
    if args.targets:
        command += ["--targets", *args.targets]
    report = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for plot_id, entries in report["data"].items():
        for entry in entries:
            if entry["type"] != "vega":
                print(f"{plot_id}: an image plot ({entry['revisions']}), not rendered")
                continue
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", plot_id).strip("_") + ".png"
            png = vl_convert.vegalite_to_png(entry["content"], scale=2)
            (args.out_dir / name).write_bytes(png)
            print(f"{args.out_dir / name}: {plot_id}, revisions {', '.join(entry['revisions'])}")


if __name__ == "__main__":
    main()
