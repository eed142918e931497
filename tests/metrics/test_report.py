"""The checks on the samples that the evaluate stage measures."""
import numpy as np
import pytest
import torch

from cifarbudget.data.prepared import load_prepared
from cifarbudget.errors import UserError
from cifarbudget.metrics.report import check_samples


def test_samples_must_be_uint8_images_with_the_datasets_classes(prepared_dir):
    data = load_prepared(prepared_dir)
    images = data.test_images[:8]
    check_samples(images, np.arange(8) % 4, data)
    with pytest.raises(UserError, match="expected uint8 images of shape"):
        check_samples(images.astype(np.float32), np.arange(8) % 4, data)
    with pytest.raises(UserError, match=r"labels in \[0, 4\); rerun `dvc repro sample`"):
        check_samples(images, np.arange(8), data)
