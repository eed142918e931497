"""metrics/gan.json's model summary, and the checks on the samples it evaluates."""
import numpy as np
import pytest
import torch

from cifarbudget.config import GanParams
from cifarbudget.data.prepared import load_prepared
from cifarbudget.errors import UserError
from cifarbudget.metrics.report import check_samples, gan_model_summary
from cifarbudget.training.checkpoint import save_checkpoint
from cifarbudget.training.gan import GanTrainer


def test_summary_reads_parameter_counts_and_updates_from_the_gan_checkpoint(tmp_path):
    trainer = GanTrainer(GanParams(z_dim=8, g_width=8, d_width=8), ["a", "b", "c"], 100,
                         torch.device("cpu"))
    trainer.opt_g.updates, trainer.opt_d.updates = 7, 14
    save_checkpoint(tmp_path / "gan.pt", trainer.state_dict())
    summary = gan_model_summary(tmp_path / "gan.pt")
    counts = trainer.param_counts()
    assert summary["params"] == {**counts, "total": counts["generator"] + counts["discriminator"]}
    assert summary["updates"] == {"generator": 7, "discriminator": 14}


def test_summary_without_a_trained_gan_says_to_train_it(tmp_path):
    with pytest.raises(UserError, match="gan.pt: not found; run the stage"):
        gan_model_summary(tmp_path / "gan.pt")


def test_samples_must_be_uint8_images_with_the_datasets_classes(prepared_dir):
    data = load_prepared(prepared_dir)
    images = data.test_images[:8]
    check_samples(images, np.arange(8) % 4, data)
    with pytest.raises(UserError, match="expected uint8 images of shape"):
        check_samples(images.astype(np.float32), np.arange(8) % 4, data)
    with pytest.raises(UserError, match=r"labels in \[0, 4\); rerun `dvc repro sample`"):
        check_samples(images, np.arange(8), data)
