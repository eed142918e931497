"""Inception metrics (FID, KID, Inception Score) and the Fréchet distance they rest on.

The network is the standard FID Inception (TensorFlow weights of 2015-12-05, as
converted by torch-fidelity); each image set goes through it once and all three
metrics are computed from those features and logits with torch-fidelity's formulas
(the Fréchet distance of fewer samples than dimensions by an exact shortcut).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch_fidelity import feature_extractor_inceptionv3
from torch_fidelity.feature_extractor_inceptionv3 import (URL_INCEPTION_V3,
                                                           FeatureExtractorInceptionV3)
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric
from torch_fidelity.metric_isc import (KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD,
                                       isc_features_to_metric)
from torch_fidelity.metric_kid import (KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD,
                                       kid_features_to_metric)
from tqdm import tqdm

from cifarbudget.data.prepared import to_tensor_nchw
from cifarbudget.errors import UserError, first_line
from cifarbudget.metrics.weights import download_to, hub_file, load_state_dict, replaced

INCEPTION_NAME = "inception-v3-compat"  # torch-fidelity's name for the FID Inception network
POOL_FEATURES = "2048"            # FID and KID
SCORE_LOGITS = "logits_unbiased"  # Inception Score, as torch-fidelity computes it
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
IS_SPLITS = 10
SKIP = "skip"  # evaluate.inception_weights value that opts out of the Inception metrics
KEY = "evaluate.inception_weights"


@dataclass
class InceptionFeatures:
    pool: torch.Tensor    # (N, 2048) float32
    logits: torch.Tensor  # (N, 1008) float32

    def __len__(self) -> int:
        return len(self.pool)


def load_inception(weights: str, device: torch.device) -> FeatureExtractorInceptionV3 | None:
    """The FID Inception network: from the file `weights`, or from torch's hub cache when it is
    empty (downloaded there first if missing); either file is loaded with the safe loader only.

    None when `weights` is "skip": the user opted out explicitly (e.g. offline), and the
    metrics file then says so instead of holding numbers.
    """
    if weights == SKIP:
        return None
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise UserError(f"{KEY}: {path} not found; give the FID Inception weights "
                            f"({URL_INCEPTION_V3}) or leave it empty to download them")
    else:
        path = hub_file(URL_INCEPTION_V3)
        if not path.is_file():
            try:
                download_to(URL_INCEPTION_V3, path)
            except Exception as exc:  # no network, a proxy, a full disk: uncomputable
                raise UserError(f"cannot download the FID Inception weights from "
                                f"{URL_INCEPTION_V3} ({first_line(exc)}); download that file "
                                f"where there is internet and pass it: dvc exp run -S "
                                f"{KEY}=/path/to/{path.name} (or -S {KEY}={SKIP} to leave FID, "
                                f"KID and IS out)") from None
    state = load_state_dict(path, KEY)
    try:
        with replaced(feature_extractor_inceptionv3, "load_state_dict_from_url",
                      lambda *args, **kwargs: state):
            net = FeatureExtractorInceptionV3(INCEPTION_NAME, [POOL_FEATURES, SCORE_LOGITS])
    except RuntimeError as exc:  # load_state_dict: missing, unexpected or mis-shaped tensors
        raise UserError(f"{KEY}: {path} does not hold the FID Inception network "
                        f"({first_line(exc)}); give the FID Inception weights "
                        f"({URL_INCEPTION_V3}) or leave it empty to download them") from None
    return net.to(device)


@torch.no_grad()
def inception_features(net: FeatureExtractorInceptionV3, images: np.ndarray, batch_size: int,
                       device: torch.device, desc: str) -> InceptionFeatures:
    """Pool features and logits of uint8 (N, H, W, 3) images, each image exactly once."""
    pools, logits = [], []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch"):
        batch = to_tensor_nchw(images[start:start + batch_size], device)
        pool, logit = net(batch)
        pools.append(pool.cpu())
        logits.append(logit.cpu())
    features = InceptionFeatures(torch.cat(pools), torch.cat(logits))
    assert len(features) == len(images), "every image must give exactly one feature vector"
    return features


def gaussian_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of (N, D) features, in float64."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)): the Fréchet distance of two Gaussians."""
    return fid_statistics_to_metric({"mu": mu1, "sigma": sigma1}, {"mu": mu2, "sigma": sigma2},
                                    verbose=False)[KEY_METRIC_FID]


def feature_frechet_distance(features_a, features_b) -> float:
    """The Fréchet distance between Gaussians fitted to two (N, D) feature sets."""
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if min(len(a), len(b)) >= a.shape[1]:
        return frechet_distance(*gaussian_statistics(a), *gaussian_statistics(b))
    # Fewer samples than dimensions: with S1 = A^T A and S2 = B^T B (A, B the centred features
    # over sqrt(N - 1)), the eigenvalues of S1 S2 are the squared singular values of A B^T, so
    # tr((S1 S2)^(1/2)) is its nuclear norm: exact, and an Na x Nb problem instead of D x D.
    diff = a.mean(0) - b.mean(0)
    a = (a - a.mean(0)) / np.sqrt(len(a) - 1)
    b = (b - b.mean(0)) / np.sqrt(len(b) - 1)
    cross = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    return float(diff @ diff + (a * a).sum() + (b * b).sum() - 2 * cross)


def kernel_inception_distance(generated: torch.Tensor, reference: torch.Tensor, seed: int) -> dict:
    """KID (cubic polynomial kernel MMD), mean and std over random subsets of both sets."""
    subset = min(KID_SUBSET_SIZE, len(generated), len(reference))
    out = kid_features_to_metric(generated.double(), reference.double(), kid_subsets=KID_SUBSETS,
                                 kid_subset_size=subset, rng_seed=seed, verbose=False)
    return {"mean": out[KEY_METRIC_KID_MEAN], "std": out[KEY_METRIC_KID_STD]}


def inception_score(logits: torch.Tensor, seed: int) -> dict:
    """Inception Score, mean and std over IS_SPLITS shuffled splits."""
    out = isc_features_to_metric(logits, splits=min(IS_SPLITS, len(logits)), shuffle=True,
                                 rng_seed=seed)
    return {"mean": out[KEY_METRIC_ISC_MEAN], "std": out[KEY_METRIC_ISC_STD]}


def inception_metrics(generated: InceptionFeatures, reference: InceptionFeatures,
                      seed: int) -> dict:
    """FID and KID of the generated set against the reference set, and its Inception Score."""
    return {"fid": feature_frechet_distance(generated.pool, reference.pool),
            "kid": kernel_inception_distance(generated.pool, reference.pool, seed),
            "inception_score": inception_score(generated.logits, seed)}
