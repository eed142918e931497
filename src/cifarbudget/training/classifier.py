"""Training the classifier: SGD over a fixed budget of optimizer updates, one seed at a time,
through the loop of training/loop.py.

The prepared uint8 arrays live on the training device; each step gathers a batch by index,
augments and normalizes it there. Every random draw comes from the seed and the epoch
(shuffling) or the step (augmentation), so a run killed and restarted ends with the same
weights as one that never stopped.
"""
from __future__ import annotations

import copy
import math
import statistics
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cifarbudget.config import Params, as_dict
from cifarbudget.data.augment import augment_batch
from cifarbudget.data.prepared import PreparedData, hold_out_validation
from cifarbudget.device import (autocast, memory_format, peak_memory_key, precision,
                                seed_everything, stateless_generator)
from cifarbudget.models.classifier import (Normalize, SeparableResNet, build_classifier,
                                           classifier_features, model_file_state)
from cifarbudget.models.saved import skeleton
from cifarbudget.paths import TrainingFiles
from cifarbudget.training.budget import UpdateCap, check_param_budget, count_trainable
from cifarbudget.training.ema import ema_decay, update_ema
from cifarbudget.stage_code import stage_code
from cifarbudget.training.loop import EpochBatches, Every, RunningMeans, identify_run, train

# stateless_generator keys of the augmentation draws and the alternating flips (0: the epochs)
AUGMENT_STREAM, FLIP_STREAM = 1, 2
WHITENING_IMAGES = 5000  # training images whose 2x2 patches fit classifier.whiten's layer
EVAL_BATCH_SIZE = 1000


@dataclass
class SeedResult:
    """One seed's finished run."""
    seed: int
    trainable_params: int
    steps: int
    history: list[dict]
    model_file: dict
    clock: dict  # train_seconds, wall_seconds, peak_memory_mib

    @property
    def final(self) -> dict:
        return self.history[-1]


def learning_rate(step: int, peak: float, warmup: float, total_steps: int,
                  shape: str = "cosine") -> float:
    """The learning rate of update `step` (0-based): a linear warm-up over the fraction
    `warmup` of the steps, then a cosine (or linear) decay to zero at `total_steps`."""
    warmup_steps = round(warmup * total_steps)
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if shape == "linear":
        return peak * (1 - progress)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def sgd(model: torch.nn.Module, lr: float, momentum: float, nesterov: bool,
        weight_decay: float, bn_bias_lr: float = 1.0) -> torch.optim.SGD:
    """SGD with weight decay on convolution and linear weights only: decaying batch-norm
    scales and biases only fights the normalization. Batch-norm biases learn at `bn_bias_lr`
    times the rate (each group's "lr_scale")."""
    bn_biases = {id(m.bias) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    decay = [p for p in model.parameters() if p.ndim > 1]
    biases = [p for p in model.parameters() if id(p) in bn_biases]
    others = [p for p in model.parameters() if p.ndim <= 1 and id(p) not in bn_biases]
    groups = [{"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0},
              {"params": biases, "weight_decay": 0.0, "lr_scale": bn_bias_lr},
              {"params": others, "weight_decay": 0.0, "lr_scale": 1.0}]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)


def translated(images: torch.Tensor, shift: int) -> torch.Tensor:
    """uint8 NHWC images moved by `shift` pixels down and right (up and left if negative),
    the uncovered border reflected."""
    padded = F.pad(images.permute(0, 3, 1, 2).float(), (1, 1, 1, 1), mode="reflect")
    h, w = images.shape[1:3]
    start = 1 - shift
    return padded[:, :, start:start + h, start:start + w].permute(0, 2, 3, 1).to(images.dtype)


def evaluate(model: SeparableResNet, images, labels: torch.Tensor, mean, std,
             device: torch.device, flip_test: bool,
             translate_test: bool = False) -> tuple[float, float]:
    """Cross-entropy (without label smoothing) and accuracy over a whole split, in fp32. With
    `flip_test`, the logits are the mean over each image and its mirror image: the model
    was trained on random flips, so both views are equally its inputs; `translate_test`
    adds each view moved by one pixel down-right and up-left (the crops it trained on)."""
    was_training = model.training
    model.eval()
    images = torch.as_tensor(images)
    views = [images, images.flip(2)] if flip_test else [images]  # NHWC: dim 2 is the width
    if translate_test:
        views += [translated(view, shift) for view in views for shift in (1, -1)]
    logits = sum(classifier_features(model, view, mean, std, device, EVAL_BATCH_SIZE)[1]
                 for view in views) / len(views)
    model.train(was_training)
    labels = labels.cpu()
    return (F.cross_entropy(logits, labels).item(),
            (logits.argmax(1) == labels).float().mean().item())


def budgeted_classifier(params: Params, num_classes: int) -> tuple[SeparableResNet, int]:
    """Build the configured model, counted first without memory: refused before allocation
    unless it fits the parameter budget."""
    c = params.classifier
    build = lambda: build_classifier(c.widths, c.depths, num_classes, c.bn_scale,  # noqa: E731
                                     c.whiten)
    n_params = check_param_budget({"classifier": count_trainable(skeleton(build))},
                                  params.budget.classifier_params, "budget.classifier_params")
    return build(), n_params


class ClassifierTrainer:
    """One seed's budget-checked model, its optimizer behind the update cap, and the data on
    the device: the trainer of training/loop.py for one classifier seed."""

    def __init__(self, seed: int, data: PreparedData, params: Params, device: torch.device):
        c = params.classifier
        self.seed, self.params, self.device, self.bf16 = seed, params, device, c.bf16
        seed_everything(seed, c.deterministic)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)  # each seed's own peak
        if device.type == "cpu" and c.threads:
            # On a busy CPU one thread can beat several: each parallel op waits for its
            # slowest thread, and a thread the OS has paused is very slow.
            torch.set_num_threads(c.threads)
        self.model, self.n_params = budgeted_classifier(params, data.num_classes)
        self.param_budget = params.budget.classifier_params
        self.batches = EpochBatches(len(data.train_labels), c.batch_size, seed, device,
                                    "classifier")
        self.memory_format = memory_format(c.channels_last)
        self.model.to(device=device, memory_format=self.memory_format).train()
        self.normalize = Normalize(data.mean, data.std, device)
        if c.whiten:
            sample = torch.from_numpy(data.train_images[:WHITENING_IMAGES]).to(device)
            self.model.stem[0].fit(self.normalize(sample.permute(0, 3, 1, 2)))
        self.optimizer = sgd(self.model, c.lr, c.momentum, c.nesterov, c.weight_decay,
                             c.bn_bias_lr)
        # The evaluated (and saved) weights: an average of the trained ones, or those.
        self.ema_model = (copy.deepcopy(self.model).requires_grad_(False) if c.ema
                          else None)
        # The budget, not classifier.steps, is the cap: no code path can exceed it.
        self.updates = UpdateCap(self.optimizer, params.budget.classifier_steps, "classifier")
        self.forward = torch.compile(self.model) if c.compile else self.model
        self.images = torch.from_numpy(data.train_images).to(device)  # uint8 NHWC
        self.labels = torch.from_numpy(data.train_labels).to(device)
        self.eval_split = "val" if c.validation_images else "test"
        self.test_images = torch.from_numpy(data.test_images).to(device)
        self.test_labels = torch.from_numpy(data.test_labels)
        # Alternating flip: image i is mirrored in epochs e with flip_start[i] + e odd.
        self.flip_start = (torch.randint(0, 2, (len(self.labels),), device=device,
                                         generator=stateless_generator(seed, FLIP_STREAM,
                                                                       device=device))
                           if params.augment.flip and params.augment.alternating_flip else None)
        self.data = data
        self.means = RunningMeans(("train_loss", "correct"), device)
        self.step = 0

    def settings(self) -> dict[str, dict]:
        """What shapes this seed's run: its seed, the classifier's settings (steps among them:
        the schedule follows them) and the augmentation."""
        classifier = as_dict(self.params.classifier)
        classifier.pop("seeds")
        return {"classifier": {**classifier, "seed": self.seed},
                "augment": as_dict(self.params.augment)}

    def param_counts(self) -> dict[str, int]:
        return {"classifier": self.n_params}

    def iteration(self) -> None:
        """One update on batch `step`; its loss and correct predictions to the running means."""
        c, augment = self.params.classifier, self.params.augment
        lr = learning_rate(self.step, c.lr, c.warmup, c.steps, c.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        rows = self.batches(self.step)
        flips = None
        if self.flip_start is not None:
            flips = (self.flip_start[rows] + self.step // self.batches.per_epoch) % 2 == 1
        batch = augment_batch(self.images[rows].permute(0, 3, 1, 2), augment,
                              stateless_generator(self.seed, AUGMENT_STREAM, self.step,
                                                  device=self.device), flips)
        inputs = self.normalize(batch).contiguous(memory_format=self.memory_format)
        targets = self.labels[rows]
        with autocast(self.device, c.bf16):
            logits = self.forward(inputs)
        loss = F.cross_entropy(logits.float(), targets, label_smoothing=c.label_smoothing)
        self.updates.zero_grad()
        loss.backward()
        self.updates.step()
        if self.ema_model is not None:
            update_ema(self.ema_model, self.model, ema_decay(c.ema, self.step))
        self.means.add({"train_loss": loss.detach(),
                        "correct": (logits.argmax(1) == targets).sum()})
        self.step += 1

    @property
    def evaluated_model(self) -> SeparableResNet:
        return self.ema_model if self.ema_model is not None else self.model

    def history_row(self, means: dict) -> dict:
        """The training means since the last row, and the loss and accuracy on the evaluation
        split (the test set, or the validation images held out of training)."""
        c = self.params.classifier
        loss, accuracy = evaluate(self.evaluated_model, self.test_images, self.test_labels,
                                  self.data.mean, self.data.std, self.device, c.flip_test,
                                  c.translate_test)
        return {"epoch": round(self.step / self.batches.per_epoch, 3),
                "lr": learning_rate(self.step - 1, c.lr, c.warmup, c.steps, c.schedule),
                "train_loss": means["train_loss"], "train_acc": means["correct"] / c.batch_size,
                f"{self.eval_split}_loss": loss, f"{self.eval_split}_acc": accuracy}

    def state_dict(self) -> dict:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "step": self.step}
        if self.ema_model is not None:
            state["ema_model"] = self.ema_model.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        if self.ema_model is not None:
            self.ema_model.load_state_dict(state["ema_model"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = self.updates.updates = state["step"]


def train_seed(seed: int, data: PreparedData, params: Params, device: torch.device,
               files: TrainingFiles) -> SeedResult:
    """Train (or finish training, or just read back) one seed's classifier."""
    c = params.classifier
    if c.validation_images:
        data = hold_out_validation(data, c.validation_images, c.validation_seed)
    trainer = ClassifierTrainer(seed, data, params, device)
    result = train(trainer, c.steps, Every(log=c.eval_every, checkpoint=c.checkpoint_every),
                   files, identify_run(trainer.settings(), data, device, c.bf16,
                                       stage_code("train_classifier")),
                   f"classifier seed {seed}")
    return SeedResult(seed=seed, trainable_params=trainer.n_params, steps=trainer.step,
                      history=result.history,
                      model_file=model_file_state(trainer.evaluated_model, c.widths, c.depths,
                                                  data.mean, data.std, data.classes),
                      clock=result.clock)


def mean_history(histories: list[list[dict]]) -> list[dict]:
    """Row-wise mean over seeds (every seed records at the same steps)."""
    return [{key: statistics.fmean(rows[i][key] for rows in histories) for key in histories[0][i]}
            | {"step": histories[0][i]["step"]} for i in range(len(histories[0]))]


def final_metrics(row: dict) -> list[str]:
    """The metrics of a history row: test_acc, test_loss, train_acc, train_loss (val_*
    in place of test_* when validation images are held out)."""
    return sorted(key for key in row if key not in ("step", "epoch", "lr"))


def mean_std(values: list[float]) -> dict:
    """Mean and sample standard deviation (0 for a single seed)."""
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarize(results: list[SeedResult]) -> dict:
    """The metrics file: mean and std over seeds of the final metrics. Final train
    loss/accuracy are the averages over the last evaluation window (the last `eval_every`
    updates), not a separate pass."""
    return {**{key: mean_std([r.final[key] for r in results])
               for key in final_metrics(results[0].final)},
            "params": results[0].trainable_params, "steps": results[0].steps}


def diagnostics(results: list[SeedResult], params: Params, device: torch.device) -> dict:
    """The run's log: each seed's final metrics and time, speed, memory and device."""
    images = sum(r.steps for r in results) * params.classifier.batch_size
    train_seconds = sum(r.clock["train_seconds"] for r in results)
    return {
        "seeds": {str(r.seed): {**{key: r.final[key] for key in final_metrics(r.final)},
                                "steps": r.steps, "wall_seconds": round(r.clock["wall_seconds"], 1)}
                  for r in results},
        "wall_seconds": round(sum(r.clock["wall_seconds"] for r in results), 1),
        "train_images_per_second": round(images / train_seconds, 1) if train_seconds else None,
        peak_memory_key(device): round(max(r.clock["peak_memory_mib"] for r in results), 1),
        "device": device.type,
        "precision": precision(device, params.classifier.bf16),
    }
