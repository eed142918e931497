"""Model files that load safely but hold the wrong things: one-line errors naming the file,
and architecture fields too large for the file refused before anything is allocated."""
import pytest
import torch

from cifarbudget.errors import UserError
from cifarbudget.io import load_checkpoint, save_checkpoint
from cifarbudget.models.classifier import load_classifier
from cifarbudget.models.gan import load_sampler
from cifarbudget.models.generator import load_snapshot
from tests.conftest import write_untrained_models

GAN = "models/gan/gan.pt"
CLASSIFIER = "models/classifier/seed_0.pt"
SNAPSHOT = "snapshots/gan/step_000000.pt"
LOADERS = {GAN: [load_sampler], CLASSIFIER: [load_classifier],
           SNAPSHOT: [load_snapshot]}


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_untrained_models(root)
    return root


def tampered(model_files, tmp_path, rel, change):
    """A copy of the model file `rel` whose loaded state `change` edits (or replaces)."""
    state = load_checkpoint(model_files / rel)
    state = change(state) or state
    path = tmp_path / rel
    save_checkpoint(path, state)
    return path


def loaders_of(*files):
    return [(rel, load) for rel in files for load in LOADERS[rel]]


@pytest.mark.parametrize("rel, load", loaders_of(GAN, CLASSIFIER, SNAPSHOT))
@pytest.mark.parametrize("content, message", [
    (lambda s: [1, 2, 3], r"holds a list, not a checkpoint"),
    (lambda s: {}, r"holds an empty dict, not a checkpoint"),
    (lambda s: {"something": torch.zeros(2)}, r"not a .* \(KeyError: "),
], ids=["list", "empty-dict", "other-keys"])
def test_a_file_holding_something_else_is_a_one_line_error(model_files, tmp_path, rel, load,
                                                           content, message):
    path = tmp_path / rel
    save_checkpoint(path, content(None))
    with pytest.raises(UserError, match=rf"^{path}: {message}.*delete it and rerun the stage"):
        load(path)


def test_random_bytes_are_a_one_line_error(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(torch.randint(0, 256, (5000,), generator=torch.Generator().manual_seed(0),
                                   dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(UserError, match=rf"^{path}: not a readable checkpoint"):
        load_checkpoint(path)


def set_config(key, value):
    def change(state):
        state["config"][key] = value
    return change


HUGE = 2**40  # parameters no machine holds: allocating them would fail or take everything


@pytest.mark.parametrize("rel, load, change", [
    (GAN, load_sampler, set_config("z_dim", HUGE)),
    (GAN, load_sampler, set_config("num_classes", 10**6)),
    (SNAPSHOT, load_snapshot, set_config("width", HUGE)),
    (CLASSIFIER, load_classifier, lambda s: s.update(num_classes=HUGE)),
    (CLASSIFIER, load_classifier, lambda s: s.update(depths=[1, 1, 10**6])),
])
def test_architecture_fields_larger_than_the_file_are_refused_before_allocation(
        model_files, tmp_path, rel, load, change):
    path = tampered(model_files, tmp_path, rel, change)
    with pytest.raises(UserError, match=rf"^{path}: its architecture .*larger than the [\d,]+ "
                                        r"parameters its tensors hold"):
        load(path)


@pytest.mark.parametrize("rel, load, change, message", [
    (GAN, load_sampler, set_config("z_dim", "128"), r"its architecture \(z_dim 128, .*\) is not "
                                                      r"positive integers"),
    (GAN, load_sampler, set_config("generator_width", 8),
     r"not a GAN model file \(RuntimeError: "),
    (GAN, load_sampler, lambda s: s.update(classes="abc"),
     r"not a GAN model file \(ValueError: "),
    (GAN, load_sampler, lambda s: s.update(classes=["a", "b", "a", "c"]),
     r"classes: class name 'a' appears more than once"),
    (CLASSIFIER, load_classifier, lambda s: s.update(mean="abc"), r"not a classifier model file"),
])
def test_fields_of_the_wrong_kind_are_one_line_errors(model_files, tmp_path, rel, load, change,
                                                      message):
    path = tampered(model_files, tmp_path, rel, change)
    with pytest.raises(UserError, match=rf"^{path}: {message}"):
        load(path)


@pytest.mark.parametrize("rel, load", loaders_of(GAN, CLASSIFIER, SNAPSHOT))
def test_untampered_files_load(model_files, rel, load):
    assert load(model_files / rel)
