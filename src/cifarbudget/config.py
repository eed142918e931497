"""The schema of params.yaml, checked at the start of every stage.

Each section is a dataclass; a field's type and its metadata (``min``, ``max``,
``choices``) say what values are allowed. ``load_params`` rejects unknown keys,
wrong types and out-of-range values with an error that names the key and the
allowed values, and checks the budgets against each other.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cifarbudget.errors import UserError

OFFICIAL_ARCHIVES = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "c58f30108f718f92721af3b95e74349a"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                 "eb9058c3a382ffc7106e4002c42a8d85"),
}


def _range(lo=None, hi=None, **extra):
    return {"min": lo, "max": hi, **extra}


@dataclass(frozen=True)
class DataParams:
    name: str = field(default="cifar100", metadata={"choices": tuple(OFFICIAL_ARCHIVES)})
    # Empty means the official archive of `name`; else an http(s) URL or a local path.
    source: str = ""
    # Empty means the official md5 of `name` (only valid with the official source).
    md5: str = ""
    # Seconds one network read may wait, and the whole download may take (a rerun resumes).
    download_timeout: float = field(default=60.0, metadata=_range(1.0))
    download_deadline: float = field(default=3600.0, metadata=_range(1.0))

    @property
    def resolved_source(self) -> str:
        return self.source or OFFICIAL_ARCHIVES[self.name][0]

    @property
    def resolved_md5(self) -> str:
        if self.md5:
            return self.md5.lower()
        if self.source:
            raise UserError("data.md5 is empty but data.source is set: give the archive's md5, "
                            "e.g. `dvc exp run -S data.source=... -S data.md5=$(md5sum FILE | cut -c1-32)`")
        return OFFICIAL_ARCHIVES[self.name][1]


@dataclass(frozen=True)
class BudgetParams:
    classifier_params: int = field(default=100_000, metadata=_range(1))  # strictly fewer
    classifier_steps: int = field(default=10_000, metadata=_range(1))    # at most
    # The generative model's (GAN: G + D; VAE: encoder + decoder).
    generative_params: int = field(default=1_000_000, metadata=_range(1))  # strictly fewer
    generative_steps: int = field(default=50_000, metadata=_range(1))      # at most, per network


# Keys renamed since users first wrote them: old key -> (new key, why).
RENAMED = {"budget.gan_params": ("budget.generative_params", "it limits the VAE too"),
           "budget.gan_steps": ("budget.generative_steps", "it limits the VAE too"),
           "classifier.warmup_steps": ("classifier.warmup", "a fraction of classifier.steps "
                                       "now, so that a short run still reaches the peak rate")}


@dataclass(frozen=True)
class AugmentParams:
    crop_padding: int = field(default=4, metadata=_range(0, 16))
    flip: bool = True
    # Each image flipped on every other epoch (from a random start) rather than at random.
    alternating_flip: bool = False
    cutout: int = field(default=0, metadata=_range(0, 32))  # square side in pixels; 0 disables


@dataclass(frozen=True)
class ClassifierParams:
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    widths: list[int] = field(default_factory=lambda: [32, 64, 128])
    depths: list[int] = field(default_factory=lambda: [2, 2, 2])
    steps: int = field(default=10_000, metadata=_range(1))
    batch_size: int = field(default=256, metadata=_range(1))
    lr: float = field(default=0.2, metadata=_range(0.0))
    momentum: float = field(default=0.9, metadata=_range(0.0, 1.0))
    nesterov: bool = True
    weight_decay: float = field(default=5e-4, metadata=_range(0.0))
    label_smoothing: float = field(default=0.1, metadata=_range(0.0, 1.0))
    warmup: float = field(default=0.05, metadata=_range(0.0, 1.0))  # fraction of the steps
    schedule: str = field(default="cosine", metadata={"choices": ("cosine", "linear")})
    whiten: bool = False      # a frozen 2x2 patch-whitening first layer, fitted to the data
    bn_scale: bool = True     # learnable batch-norm scales (else fixed at 1)
    bn_bias_lr: float = field(default=1.0, metadata=_range(0.0))  # x lr for batch-norm biases
    ema: float = field(default=0.0, metadata=_range(0.0, 1.0))    # weight average; 0: off
    validation_images: int = field(default=0, metadata=_range(0))  # held out of training
    validation_seed: int = 0
    eval_every: int = field(default=500, metadata=_range(1))
    flip_test: bool = True  # test logits averaged over each image and its mirror image
    translate_test: bool = False  # and over one-pixel translations of both
    checkpoint_every: int = field(default=500, metadata=_range(1))
    bf16: bool = True
    channels_last: bool = True
    # Deterministic kernels (an error where torch has none); off lets cuDNN pick the fastest.
    deterministic: bool = True
    compile: bool = False
    threads: int = field(default=0, metadata=_range(0))  # CPU threads; 0 keeps torch's default


DIFFAUGMENT_OPERATIONS = ("color", "translation", "cutout")  # in the order they are applied


def parse_policy(text: str) -> tuple[str, ...]:
    """gan.diffaugment: 'translation,cutout,color' -> the operations in application order;
    '' -> none."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in DIFFAUGMENT_OPERATIONS]
    if unknown:
        raise UserError(f"gan.diffaugment: unknown operation {unknown[0]!r}; give a comma-separated "
                        f"subset of {','.join(DIFFAUGMENT_OPERATIONS)}, or an empty string to "
                        f"disable it")
    return tuple(op for op in DIFFAUGMENT_OPERATIONS if op in names)


@dataclass(frozen=True)
class GanParams:
    seed: int = 0
    z_dim: int = field(default=128, metadata=_range(1))
    g_width: int = field(default=64, metadata=_range(1))
    d_width: int = field(default=80, metadata=_range(1))
    steps: int = field(default=50_000, metadata=_range(1))
    n_dis: int = field(default=1, metadata=_range(1))
    batch_size: int = field(default=64, metadata=_range(1))
    lr_g: float = field(default=2e-4, metadata=_range(0.0))
    lr_d: float = field(default=2e-4, metadata=_range(0.0))
    beta1: float = field(default=0.0, metadata=_range(0.0, 1.0))
    beta2: float = field(default=0.9, metadata=_range(0.0, 1.0))
    loss: str = field(default="aw_hinge", metadata={"choices": ("hinge", "aw_hinge")})
    ema: float = field(default=0.999, metadata=_range(0.0, 1.0))
    diffaugment: str = "translation,cutout,color"  # comma-separated; empty disables
    log_every: int = field(default=100, metadata=_range(1))
    progress_every: int = field(default=1000, metadata=_range(1))
    checkpoint_every: int = field(default=1000, metadata=_range(1))
    snapshot_every: int = field(default=5000, metadata=_range(1))  # EMA generator kept
    bf16: bool = True
    channels_last: bool = True
    deterministic: bool = True  # as classifier.deterministic


@dataclass(frozen=True)
class GeneratorParams:
    # The generative model that train_generator trains and sample / evaluate use.
    model: str = field(default="gan", metadata={"choices": ("gan", "vae")})


@dataclass(frozen=True)
class VaeParams:
    seed: int = 0
    z_dim: int = field(default=128, metadata=_range(1))
    encoder_width: int = field(default=64, metadata=_range(1))
    decoder_width: int = field(default=80, metadata=_range(1))
    steps: int = field(default=50_000, metadata=_range(1))
    batch_size: int = field(default=64, metadata=_range(1))
    lr: float = field(default=5e-4, metadata=_range(0.0))
    beta1: float = field(default=0.9, metadata=_range(0.0, 1.0))
    beta2: float = field(default=0.999, metadata=_range(0.0, 1.0))
    beta: float = field(default=0.1, metadata=_range(0.0))  # weight of the KL term
    log_every: int = field(default=100, metadata=_range(1))
    progress_every: int = field(default=1000, metadata=_range(1))
    checkpoint_every: int = field(default=1000, metadata=_range(1))
    snapshot_every: int = field(default=5000, metadata=_range(1))  # decoder kept
    bf16: bool = True
    channels_last: bool = True
    deterministic: bool = True  # as classifier.deterministic


@dataclass(frozen=True)
class SampleParams:
    seed: int = 0
    count: int = field(default=10_000, metadata=_range(1))
    batch_size: int = field(default=500, metadata=_range(1))


@dataclass(frozen=True)
class EvaluateParams:
    # Empty downloads and caches the standard FID Inception weights; a path uses that file.
    # Unavailable weights are an error: FID, KID and IS are never skipped silently;
    # "skip" leaves them out on purpose (null in metrics/gan.json, with the reason).
    inception_weights: str = ""
    # Empty downloads the LPIPS weights; a path is a torch hub folder holding them.
    # Unavailable weights make the LPIPS metric null, with the reason.
    lpips_weights: str = ""
    batch_size: int = field(default=200, metadata=_range(1))
    lpips_pairs: int = field(default=1000, metadata=_range(1))
    seed: int = 0  # draws the LPIPS pairs, the KID subsets and the Inception Score splits
    # Generated images per training snapshot for FID/KID in plots/<model>/quality.csv (the
    # classifier metrics there use all sample.count images); the final metrics use them all.
    snapshot_inception_images: int = field(default=2000, metadata=_range(2))


@dataclass(frozen=True)
class Params:
    data: DataParams = field(default_factory=DataParams)
    budget: BudgetParams = field(default_factory=BudgetParams)
    augment: AugmentParams = field(default_factory=AugmentParams)
    classifier: ClassifierParams = field(default_factory=ClassifierParams)
    gan: GanParams = field(default_factory=GanParams)
    generator: GeneratorParams = field(default_factory=GeneratorParams)
    vae: VaeParams = field(default_factory=VaeParams)
    sample: SampleParams = field(default_factory=SampleParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(key: str, value, tp):
    """Check `value` against the annotation `tp`; ints are accepted where floats are."""
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        (item_tp,) = typing.get_args(tp)[:1]
        if not isinstance(value, list):
            raise UserError(f"{key}: expected a list of {_type_name(item_tp)}, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        (tp,) = [t for t in typing.get_args(tp) if t is not type(None)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 (PyYAML) reads 1e-3, without a dot, as a string
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{key}: {value} is not a finite number; give one (NaN and infinities "
                        f"would poison training and the metrics)")
    if tp is str and value is None:
        return ""
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise UserError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return value


def _check_range(key: str, value, meta) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise UserError(f"{key}: {value!r} is not allowed; choose one of {', '.join(map(str, choices))}")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo:
        raise UserError(f"{key}: {value!r} is too small; it must be >= {lo}")
    if hi is not None and value > hi:
        raise UserError(f"{key}: {value!r} is too large; it must be <= {hi}")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _build(cls, raw: dict, prefix: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{prefix}: expected a mapping of keys, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    renamed = [_join(prefix, name) for name in unknown if _join(prefix, name) in RENAMED]
    if renamed:
        new, why = RENAMED[renamed[0]]
        raise UserError(f"{renamed[0]}: renamed {new} ({why}); rename the key in params.yaml")
    if unknown:
        where = f"in {prefix}" if prefix else "at the top level"
        raise UserError(f"{_join(prefix, unknown[0])}: unknown key; allowed keys {where}: "
                        f"{', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in raw.items():
        key = _join(prefix, name)
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, value, key)
            continue
        value = _coerce(key, value, tp)
        for item in value if isinstance(value, list) else [value]:
            _check_range(key, item, fields[name].metadata)
        values[name] = value
    return cls(**values)


def _check_consistency(p: Params) -> None:
    parse_policy(p.gan.diffaugment)
    c = p.classifier
    if not c.seeds:
        raise UserError("classifier.seeds: give at least one seed, e.g. [0, 1, 2]")
    if len(c.widths) != len(c.depths) or not c.widths:
        raise UserError(f"classifier.widths and classifier.depths: need the same non-zero length "
                        f"(one width and depth per stage), got {c.widths} and {c.depths}")
    if any(w < 1 for w in c.widths) or any(d < 1 for d in c.depths):
        raise UserError("classifier.widths and classifier.depths: every entry must be >= 1")
    if c.widths != sorted(c.widths):
        raise UserError(f"classifier.widths: {c.widths} narrows between stages; give widths "
                        f"that never decrease, e.g. {sorted(c.widths)}")
    if c.steps > p.budget.classifier_steps:
        raise UserError(f"classifier.steps: {c.steps} exceeds budget.classifier_steps "
                        f"({p.budget.classifier_steps}); lower classifier.steps")
    # Only the chosen generative model is trained, so only its steps must fit the budget.
    if p.generator.model == "gan":
        g = p.gan
        updates = max(g.steps * g.n_dis, g.steps)
        if updates > p.budget.generative_steps:
            raise UserError(f"gan.steps x gan.n_dis: {g.steps} x {g.n_dis} = {updates} "
                            f"discriminator updates exceed budget.generative_steps "
                            f"({p.budget.generative_steps}); lower gan.steps to at most "
                            f"{p.budget.generative_steps // g.n_dis}")
    elif p.vae.steps > p.budget.generative_steps:
        raise UserError(f"vae.steps: {p.vae.steps} updates exceed budget.generative_steps "
                        f"({p.budget.generative_steps}), the generative models' budget; lower vae.steps")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise UserError(f"{self.name}: line {key_node.start_mark.line + 1}: key {key!r} "
                                f"given twice (first on line {seen[key]}); keep one of them")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; raise UserError naming the first bad key."""
    path = Path(path)
    try:
        loader = _UniqueKeyLoader(path.read_text())
        loader.name = str(path)  # named in its errors
        try:
            raw = loader.get_single_data()
        finally:
            loader.dispose()
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run the stage from the repository root") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None
    params = _build(Params, raw or {}, "")
    _check_consistency(params)
    return params


def as_dict(params) -> dict:
    """Plain-dict view of a params section, for metrics files and checkpoint fingerprints."""
    return dataclasses.asdict(params)
