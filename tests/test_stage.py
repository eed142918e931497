"""The entry point of every stage: one-line errors, and interrupts that always interrupt."""
import signal
import subprocess
import sys

STAGE = """
import time
from cifarbudget.stage import run_stage

def main():
    print("ready", flush=True)
    time.sleep(120)

run_stage(main)
"""


def test_a_stage_started_with_sigint_ignored_is_still_interrupted_by_it():
    """As `dvc repro &` from a script starts it: the stage must not inherit the ignored SIGINT."""
    def ignore_sigint():
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    stage = subprocess.Popen([sys.executable, "-c", STAGE], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, preexec_fn=ignore_sigint)
    try:
        assert stage.stdout.readline() == "ready\n"  # its handler is set by now
        stage.send_signal(signal.SIGINT)
        _, err = stage.communicate(timeout=60)
    finally:
        stage.kill()
    assert stage.returncode == 130
    assert err.startswith("interrupted; rerun `dvc repro`") and err.count("\n") == 1
