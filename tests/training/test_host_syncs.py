"""No host syncs per training step: between log steps, no project code reads a tensor's value
on the host (on a GPU each read would make the CPU wait for the queued work). Counted on the
CPU, by the project line that asks, over a few steps of each model's trainer."""
from __future__ import annotations

import contextlib
import dataclasses
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch

from cifarbudget.config import BudgetParams, ClassifierParams, GanParams, Params, VaeParams
from cifarbudget.data.prepared import load_prepared
from cifarbudget.training import gan, vae
from cifarbudget.training.classifier import ClassifierTrainer
from tests.conftest import write_prepared

CPU = torch.device("cpu")
READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")
# The one host read allowed, on the CPU only: the AW rule's correctly rounded sqrt, which
# reads a CPU value (no sync there) and stays on the device elsewhere (losses._sqrt).
CPU_ONLY = "losses.py:_sqrt:item"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@contextlib.contextmanager
def host_reads_from_the_project(reads: list[str]):
    """Within the block, every value read that a line of src/cifarbudget makes is appended
    to `reads` as "file:function:method"."""
    def counting(name, original):
        def read(self, *args, **kwargs):
            caller = sys._getframe(1).f_code
            if f"{Path('src', 'cifarbudget')}" in caller.co_filename:
                reads.append(f"{Path(caller.co_filename).name}:{caller.co_name}:{name}")
            return original(self, *args, **kwargs)
        return read

    with mock.patch.multiple(torch.Tensor, **{name: counting(name, getattr(torch.Tensor, name))
                                              for name in READS}):
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_prepared(write_prepared(tmp_path_factory.mktemp("prepared")))


def classifier(data):
    settings = ClassifierParams(widths=[8, 16], depths=[1, 1], batch_size=32)
    return ClassifierTrainer(0, data, Params(classifier=settings), CPU)


def gan_trainer(loss):
    def build(data):
        settings = dataclasses.replace(GanParams(), z_dim=8, g_width=8, d_width=8, batch_size=16,
                                       n_dis=2, loss=loss)
        return gan.Trainer(settings, data, BudgetParams(), CPU)
    return build


def vae_trainer(data):
    settings = dataclasses.replace(VaeParams(), z_dim=8, encoder_width=8, decoder_width=8,
                                   batch_size=16)
    return vae.Trainer(settings, data, BudgetParams(), CPU)


@pytest.mark.parametrize("build, allowed_per_step", [
    (classifier, 0), (vae_trainer, 0), (gan_trainer("hinge"), 0),
    (gan_trainer("aw_hinge"), 2 * 2),  # two norms per discriminator update, n_dis = 2
], ids=["classifier", "vae", "gan-hinge", "gan-aw_hinge"])
def test_a_training_step_reads_nothing_back_from_the_device(data, build, allowed_per_step):
    trainer = build(data)
    trainer.iteration()  # the first step may set things up
    reads: list[str] = []
    with host_reads_from_the_project(reads):
        for _ in range(3):
            trainer.iteration()
    assert [r for r in reads if r != CPU_ONLY] == []
    assert len(reads) == 3 * allowed_per_step


def test_the_count_sees_a_read_in_project_code(data):
    """The check itself: a value read by the trainer's code is counted, by its line."""
    trainer = classifier(data)
    reads: list[str] = []
    with host_reads_from_the_project(reads):
        trainer.means.pop()  # a log step: one read of the means, by design
    assert reads == ["loop.py:pop:tolist"]
