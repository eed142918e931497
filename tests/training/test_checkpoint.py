import pickle

import pytest
import torch

from cifarbudget.errors import UserError
from cifarbudget.io import load_checkpoint, save_checkpoint
from cifarbudget.training.loop import RunId, resume_state

CPU = torch.device("cpu")


class Boom:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


CODE = {"stages/train.py": "aa", "src/cifarbudget/training/losses.py": "bb"}


def run_id(fingerprint: str, device: str = "cpu", precision: str = "fp32",
           code: dict = CODE) -> RunId:
    return RunId(fingerprint, device, precision, code)


def written_by(path, run: RunId, **extra) -> None:
    save_checkpoint(path, {"fingerprint": run.fingerprint, "device": run.device,
                           "precision": run.precision, "code": run.code, **extra})


def test_round_trip_and_fingerprint_gate(tmp_path):
    path = tmp_path / "ck.pt"
    written_by(path, run_id("run-a"), step=7, w=torch.arange(3))
    state = resume_state(path, run_id("run-a"))
    assert state["step"] == 7 and torch.equal(state["w"], torch.arange(3))
    assert resume_state(path, run_id("run-b")) is None
    assert resume_state(tmp_path / "none.pt", run_id("run-a")) is None


@pytest.mark.parametrize("theirs, why", [
    (run_id("a", device="cuda"),
     "written on cuda, this run is on cpu (whose random draws differ)"),
    (run_id("a", precision="bf16"), "written in bf16, this run computes in fp32"),
    (run_id("a", code={**CODE, "src/cifarbudget/training/losses.py": "cc"}),
     "written by other code (src/cifarbudget/training/losses.py changed)"),
    (run_id("a", code={"stages/train.py": "aa"}),
     "written by other code (src/cifarbudget/training/losses.py changed)"),
    (run_id("a"), "saved by a different configuration"),
], ids=["device", "precision", "code-changed", "code-added", "settings"])
def test_a_checkpoint_of_another_run_is_not_resumed_and_the_message_says_why(
        tmp_path, capsys, theirs, why):
    path = tmp_path / "ck.pt"
    written_by(path, theirs)
    assert resume_state(path, run_id("b")) is None
    assert capsys.readouterr().err == f"{path}: {why}: starting over\n"


def test_the_resume_fingerprints_cover_device_precision_and_code(tmp_path, monkeypatch):
    from cifarbudget.config import GanParams, as_dict
    from cifarbudget.data.prepared import load_prepared
    from cifarbudget.device import FORCE_PRECISION
    from cifarbudget.training.loop import identify_run
    from tests.conftest import write_prepared

    monkeypatch.delenv(FORCE_PRECISION, raising=False)
    data = load_prepared(write_prepared(tmp_path / "prepared"))
    settings = {"gan": as_dict(GanParams())}
    base = identify_run(settings, data, CPU, False, CODE)
    assert base == identify_run(settings, data, CPU, False, dict(CODE))
    assert base.fingerprint != identify_run(settings, data, torch.device("cuda"), False,
                                            CODE).fingerprint
    monkeypatch.setenv(FORCE_PRECISION, "bf16")
    assert base.fingerprint != identify_run(settings, data, CPU, True, CODE).fingerprint
    assert base.fingerprint != identify_run(settings, data, CPU, False,
                                            {**CODE, "stages/train.py": "ab"}).fingerprint


def test_checkpoint_with_code_is_refused_and_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"payload": Boom()}, path, pickle_module=pickle)
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()


def test_missing_and_corrupt_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="not found; run the stage"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="bad.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


def test_equal_states_give_identical_bytes_whatever_their_history(tmp_path):
    # A resumed run mixes values made fresh with values loaded from a checkpoint: equal
    # strings that are distinct objects. The files must still be byte-identical.
    fresh_key = "lr"
    loaded_key = "".join(["l", "r"])
    assert fresh_key == loaded_key and fresh_key is not loaded_key
    weights = torch.arange(6.0)
    fresh = {"groups": [{fresh_key: 0.1}, {fresh_key: 0.2}], "w": weights}
    resumed = {"groups": [{fresh_key: 0.1}, {loaded_key: 0.2}], "w": weights.clone()}
    save_checkpoint(tmp_path / "fresh.pt", fresh)
    save_checkpoint(tmp_path / "resumed.pt", resumed)
    assert (tmp_path / "fresh.pt").read_bytes() == (tmp_path / "resumed.pt").read_bytes()
