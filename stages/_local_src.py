"""Imported first by every stage script, so that `import cifarbudget` loads this tree's src/.

DVC runs a queued experiment in a temporary copy of the repository. Through the editable
install, the copy would import the workspace's code, whatever it holds by then, while
dvc.lock records the hashes of the copy's files.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
