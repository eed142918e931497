"""The `deterministic` params of each training section reach torch when its training starts."""
import dataclasses

import pytest
import torch

from cifarbudget.config import GeneratorParams, Params
from cifarbudget.data.prepared import load_prepared
from cifarbudget.training.classifier import ClassifierTrainer
from cifarbudget.training.generative import train_generator
from tests.conftest import QUICK_PARAMS, training_files_in, write_prepared

pytestmark = pytest.mark.usefixtures("one_torch_thread", "torch_determinism_restored")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_prepared(write_prepared(tmp_path_factory.mktemp("prepared")))


def tiny(section: str, **settings):
    tiny_settings = {key.split(".", 1)[1]: value for key, value in QUICK_PARAMS.items()
                     if key.startswith(f"{section}.")}
    return dataclasses.replace(getattr(Params(), section), **{**tiny_settings, **settings})


@pytest.mark.parametrize("section", ["classifier", "gan", "vae"])
@pytest.mark.parametrize("setting, expected", [(None, True), (False, False)])
def test_each_training_sections_switch_reaches_torch(section, setting, expected, data, tmp_path):
    """The default is on; `false` turns it off (torch starts in the other mode each time)."""
    torch.use_deterministic_algorithms(not expected)
    settings = tiny(section, **({} if setting is None else {"deterministic": setting}))
    if section == "classifier":
        ClassifierTrainer(0, data, Params(classifier=settings), torch.device("cpu"))
    else:
        params = Params(**{section: dataclasses.replace(settings, steps=1)},
                        generator=GeneratorParams(model=section))
        train_generator(params, data, training_files_in(tmp_path, section))
    assert torch.are_deterministic_algorithms_enabled() == expected
