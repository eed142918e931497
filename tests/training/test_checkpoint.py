import pickle

import pytest
import torch

from cifarbudget.errors import UserError
from cifarbudget.training.checkpoint import fingerprint, load_checkpoint, resume_state, save_checkpoint


class Boom:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_round_trip_and_fingerprint_gate(tmp_path):
    path = tmp_path / "ck.pt"
    fp = fingerprint({"lr": 0.1, "steps": 10})
    save_checkpoint(path, {"fingerprint": fp, "step": 7, "w": torch.arange(3)})
    state = resume_state(path, fp)
    assert state["step"] == 7 and torch.equal(state["w"], torch.arange(3))
    assert resume_state(path, fingerprint({"lr": 0.2, "steps": 10})) is None
    assert resume_state(tmp_path / "none.pt", fp) is None


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
