import pickle

import pytest
import torch

from cifarbudget.errors import UserError
from cifarbudget.io import load_checkpoint, save_checkpoint
from cifarbudget.training.loop import resume_state

CPU = torch.device("cpu")


class Boom:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_round_trip_and_fingerprint_gate(tmp_path):
    path = tmp_path / "ck.pt"
    fp = "run-a"
    save_checkpoint(path, {"fingerprint": fp, "device": "cpu", "step": 7, "w": torch.arange(3)})
    state = resume_state(path, fp, CPU)
    assert state["step"] == 7 and torch.equal(state["w"], torch.arange(3))
    assert resume_state(path, "run-b", CPU) is None
    assert resume_state(tmp_path / "none.pt", fp, CPU) is None


def test_a_checkpoint_of_another_device_is_not_resumed_and_the_message_says_why(tmp_path, capsys):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"fingerprint": "run-on-cuda", "device": "cuda"})
    assert resume_state(path, "run-on-cpu", CPU) is None
    assert "written on cuda, this run is on cpu" in capsys.readouterr().err


def test_the_resume_fingerprints_cover_the_device_type(tmp_path):
    from cifarbudget.config import GanParams, as_dict
    from cifarbudget.data.prepared import load_prepared
    from cifarbudget.training.loop import run_fingerprint
    from tests.conftest import write_prepared

    data = load_prepared(write_prepared(tmp_path / "prepared"))
    settings = {"gan": as_dict(GanParams())}
    assert (run_fingerprint(settings, data, CPU)
            != run_fingerprint(settings, data, torch.device("cuda")))


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
