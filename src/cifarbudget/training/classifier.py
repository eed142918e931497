"""Training the classifier: SGD over a fixed budget of optimizer updates.

The prepared uint8 arrays live on the training device; each step gathers a batch
by index, augments and normalizes it there. Every random draw comes from the
seed and the epoch (shuffling) or the step (augmentation), and a checkpoint holds
the model, optimizer, step, window and history, so a run killed and restarted
ends with the same weights as one that never stopped.
"""
from __future__ import annotations

import hashlib
import math
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from cifarbudget.config import Params, as_dict
from cifarbudget.data.augment import augment_batch
from cifarbudget.data.prepared import PreparedData
from cifarbudget.device import (autocast, keep_freed_memory, precision, seed_everything,
                                stateless_generator)
from cifarbudget.errors import Interrupted, UserError
from cifarbudget.models.classifier import (SeparableResNet, build_classifier, classifier_features,
                                           model_file_state, normalize)
from cifarbudget.training.budget import (UpdateCap, check_param_budget, count_trainable,
                                         skeleton)
from cifarbudget.training.checkpoint import fingerprint, resume_state, save_checkpoint

HISTORY_COLUMNS = ("step", "epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc")
# Separate random streams, so that (seed, epoch) and (seed, step) never share a generator.
SHUFFLE_STREAM, AUGMENT_STREAM = 0, 1
EVAL_BATCH_SIZE = 1000


@dataclass
class SeedResult:
    """One seed's finished run, as read from its final checkpoint."""
    seed: int
    trainable_params: int
    steps: int
    history: list[dict]
    model_file: dict
    train_seconds: float
    wall_seconds: float
    peak_memory_mib: float

    @property
    def final(self) -> dict:
        return self.history[-1]


def learning_rate(step: int, peak: float, warmup_steps: int, total_steps: int) -> float:
    """The learning rate of update `step` (0-based): linear warm-up, then cosine decay to zero."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def sgd(model: torch.nn.Module, lr: float, momentum: float, nesterov: bool,
        weight_decay: float) -> torch.optim.SGD:
    """SGD with weight decay on convolution and linear weights only: decaying batch-norm
    scales and biases only fights the normalization."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)


class EpochShuffler:
    """Batch indices of step `step`: epoch e is a permutation drawn from (seed, e),
    cut into full batches (the remainder of each epoch is skipped)."""

    def __init__(self, seed: int, count: int, batch_size: int):
        if batch_size > count:
            raise UserError(f"classifier.batch_size: {batch_size} exceeds the {count} training "
                            f"images; lower classifier.batch_size")
        self.seed, self.count, self.batch_size = seed, count, batch_size
        self.steps_per_epoch = count // batch_size
        self._epoch, self._order = -1, None

    def indices(self, step: int) -> torch.Tensor:
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            gen = stateless_generator(self.seed, SHUFFLE_STREAM, epoch)
            self._epoch, self._order = epoch, torch.randperm(self.count, generator=gen)
        return self._order[position * self.batch_size:(position + 1) * self.batch_size]


def evaluate(model: SeparableResNet, images, labels: torch.Tensor, mean, std,
             device: torch.device, bf16: bool, flip_test: bool) -> tuple[float, float]:
    """Cross-entropy (without label smoothing) and accuracy over a whole split. With
    `flip_test`, the logits are the mean over each image and its mirror image: the model
    was trained on random flips, so both views are equally its inputs."""
    was_training = model.training
    model.eval()
    images = torch.as_tensor(images)
    _, logits = classifier_features(model, images, mean, std, device, EVAL_BATCH_SIZE, bf16)
    if flip_test:
        _, mirrored = classifier_features(model, images.flip(2), mean, std, device,
                                          EVAL_BATCH_SIZE, bf16)  # NHWC: dim 2 is the width
        logits = (logits + mirrored) / 2
    model.train(was_training)
    labels = labels.cpu()
    return (F.cross_entropy(logits, labels).item(),
            (logits.argmax(1) == labels).float().mean().item())


def run_config(params: Params, data: PreparedData, seed: int, device: torch.device) -> dict:
    """Everything that shapes one seed's run, the device type included (random draws differ
    between devices); a checkpoint resumes only an identical one."""
    settings = as_dict(params.classifier)
    settings.pop("seeds")
    settings.pop("checkpoint_every")  # when to save does not change what is computed
    return {"seed": seed, "device": device.type, "classifier": settings, "augment": as_dict(params.augment),
            "data": {"name": data.name, "mean": data.mean, "std": data.std,
                     "train_count": len(data.train_labels), "test_count": len(data.test_labels),
                     "labels": hashlib.sha256(data.train_labels.tobytes()
                                              + data.test_labels.tobytes()).hexdigest()}}


def peak_memory_mib(device: torch.device) -> float:
    """On a GPU the allocator's peak since the seed started (reset per seed); on the CPU the
    process's peak resident memory (it cannot be reset: the largest seed's, at least)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def peak_memory_key(device: torch.device) -> str:
    """What peak_memory_mib measures on `device`, as the diagnostics name it."""
    return "peak_gpu_memory_allocated_mib" if device.type == "cuda" else "peak_process_rss_mib"


def budgeted_classifier(params: Params, num_classes: int) -> tuple[SeparableResNet, int]:
    """Build the configured model, counted first without memory: refused before allocation
    unless it fits the parameter budget."""
    c = params.classifier
    build = lambda: build_classifier(c.widths, c.depths, num_classes)  # noqa: E731
    n_params = check_param_budget({"classifier": count_trainable(skeleton(build))},
                                  params.budget.classifier_params, "budget.classifier_params")
    return build(), n_params


class SeedTrainer:
    """One seed's budget-checked model, its optimizer behind the update cap, and the
    training data on the device; `step(i)` performs update i (0-based)."""

    def __init__(self, seed: int, data: PreparedData, params: Params, device: torch.device):
        c = params.classifier
        self.seed, self.params, self.device = seed, params, device
        seed_everything(seed)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)  # each seed's own peak
        if device.type == "cpu":
            keep_freed_memory()
            if c.threads:
                # On a busy CPU one thread can beat several: each parallel op waits for
                # its slowest thread, and a thread the OS has paused is very slow.
                torch.set_num_threads(c.threads)
        self.model, self.n_params = budgeted_classifier(params, data.num_classes)
        self.shuffler = EpochShuffler(seed, len(data.train_labels), c.batch_size)
        self.memory_format = torch.channels_last if c.channels_last else torch.contiguous_format
        self.model.to(device=device, memory_format=self.memory_format).train()
        self.optimizer = sgd(self.model, c.lr, c.momentum, c.nesterov, c.weight_decay)
        # The budget, not classifier.steps, is the cap: no code path can exceed it.
        self.updates = UpdateCap(self.optimizer, params.budget.classifier_steps, "classifier")
        self.forward = torch.compile(self.model) if c.compile else self.model
        self.images = torch.from_numpy(data.train_images).to(device)  # uint8 NHWC
        self.labels = torch.from_numpy(data.train_labels).to(device)
        self.mean, self.std = data.mean, data.std

    def load_state(self, model_state: dict, optimizer_state: dict, step: int) -> None:
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(optimizer_state)
        self.updates.updates = step

    def step(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One update on batch `step` -> (mean loss, number of correct predictions)."""
        c = self.params.classifier
        lr = learning_rate(step, c.lr, c.warmup_steps, c.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        index = self.shuffler.indices(step).to(self.device)
        batch = augment_batch(self.images[index].permute(0, 3, 1, 2), self.params.augment,
                              stateless_generator(self.seed, AUGMENT_STREAM, step))
        inputs = normalize(batch, self.mean, self.std).contiguous(memory_format=self.memory_format)
        targets = self.labels[index]
        with autocast(self.device, c.bf16):
            logits = self.forward(inputs)
        loss = F.cross_entropy(logits.float(), targets, label_smoothing=c.label_smoothing)
        self.updates.zero_grad()
        loss.backward()
        self.updates.step()
        return loss.detach(), (logits.argmax(1) == targets).sum()


def train_seed(seed: int, data: PreparedData, params: Params, device: torch.device,
               checkpoint_path: str | Path, progress: bool = True) -> SeedResult:
    """Train (or finish training, or just read back) one seed's classifier."""
    c = params.classifier
    trainer = SeedTrainer(seed, data, params, device)
    if progress:
        print(f"classifier seed {seed}: {trainer.n_params:,} trainable parameters "
              f"(budget: fewer than {params.budget.classifier_params:,}), on {device.type} "
              f"in {precision(device, c.bf16)}")
    run_fingerprint = fingerprint(run_config(params, data, seed, device))
    state = resume_state(checkpoint_path, run_fingerprint, device)
    if state is None and Path(checkpoint_path).exists() and progress:
        print(f"{checkpoint_path}: saved by a different configuration; starting seed {seed} over")
    if state is not None:
        trainer.load_state(state["model"], state["optimizer"], state["step"])
        if progress:
            print(f"classifier seed {seed}: resuming from {checkpoint_path} at step "
                  f"{state['step']} of {c.steps}")
    state = state or {
        "step": 0, "history": [], "window": {"steps": 0, "loss": 0.0, "correct": 0},
        "train_seconds": 0.0, "wall_seconds": 0.0, "peak_memory_mib": 0.0}
    step, history, window = state["step"], state["history"], state["window"]

    if step < c.steps:
        test_images = torch.from_numpy(data.test_images).to(device)
        test_labels = torch.from_numpy(data.test_labels)
        started, run_start_step, run_train_seconds = time.perf_counter(), step, 0.0
        bar = tqdm(total=c.steps, initial=step, desc=f"classifier seed {seed}", unit="step",
                   disable=not progress, dynamic_ncols=True)
        saved_step = state["step"] if state["step"] else None
        try:
            while step < c.steps:
                step_start = time.perf_counter()
                loss, correct = trainer.step(step)
                step += 1
                window["steps"] += 1
                window["loss"] += loss.item()
                window["correct"] += correct.item()
                run_train_seconds += time.perf_counter() - step_start
                bar.update(1)
                if step % 10 == 0 or step == c.steps:
                    images_per_second = (step - run_start_step) * c.batch_size / run_train_seconds
                    accuracy = window["correct"] / (window["steps"] * c.batch_size)
                    bar.set_postfix(loss=f"{window['loss'] / window['steps']:.3f}",
                                    acc=f"{accuracy:.3f}", img_s=f"{images_per_second:.0f}",
                                    refresh=False)
                if step % c.eval_every == 0 or step == c.steps:
                    test_loss, test_acc = evaluate(trainer.model, test_images, test_labels,
                                                   data.mean, data.std, device, c.bf16,
                                                   c.flip_test)
                    history.append({
                        "step": step, "epoch": round(step / trainer.shuffler.steps_per_epoch, 3),
                        "lr": learning_rate(step - 1, c.lr, c.warmup_steps, c.steps),
                        "train_loss": window["loss"] / window["steps"],
                        "train_acc": window["correct"] / (window["steps"] * c.batch_size),
                        "test_loss": test_loss, "test_acc": test_acc})
                    window = {"steps": 0, "loss": 0.0, "correct": 0}
                    bar.write(f"seed {seed} step {step}: train loss "
                              f"{history[-1]['train_loss']:.3f} acc "
                              f"{history[-1]['train_acc']:.3f}, test loss {test_loss:.3f} "
                              f"acc {test_acc:.3f}")
                if step % c.checkpoint_every == 0 or step == c.steps:
                    save_checkpoint(checkpoint_path, {
                        "fingerprint": run_fingerprint, "device": device.type, "step": step,
                        "history": history,
                        "window": window, "model": trainer.model.state_dict(),
                        "optimizer": trainer.optimizer.state_dict(),
                        "train_seconds": state["train_seconds"] + run_train_seconds,
                        "wall_seconds": state["wall_seconds"] + time.perf_counter() - started,
                        "peak_memory_mib": max(state["peak_memory_mib"], peak_memory_mib(device))})
                    saved_step = step
        except KeyboardInterrupt:
            raise Interrupted.at(f"classifier seed {seed}", step, saved_step, checkpoint_path,
                                 c.checkpoint_every) from None
        bar.close()
        state = resume_state(checkpoint_path, run_fingerprint, device)

    trainer.model.load_state_dict(state["model"])
    return SeedResult(seed=seed, trainable_params=trainer.n_params, steps=state["step"],
                      history=state["history"],
                      model_file=model_file_state(trainer.model, c.widths, c.depths, data.mean,
                                                  data.std, data.classes),
                      train_seconds=state["train_seconds"], wall_seconds=state["wall_seconds"],
                      peak_memory_mib=state["peak_memory_mib"])


def mean_history(histories: list[list[dict]]) -> list[dict]:
    """Row-wise mean over seeds (every seed records at the same steps)."""
    return [{key: statistics.fmean(rows[i][key] for rows in histories) for key in HISTORY_COLUMNS}
            | {"step": histories[0][i]["step"]} for i in range(len(histories[0]))]


def mean_std(values: list[float]) -> dict:
    """Mean and sample standard deviation (0 for a single seed)."""
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0}


FINAL_METRICS = ("test_acc", "test_loss", "train_acc", "train_loss")


def summarize(results: list[SeedResult]) -> dict:
    """The metrics file: mean and std over seeds of the final metrics. Final train
    loss/accuracy are the averages over the last evaluation window (the last `eval_every`
    updates), not a separate pass."""
    return {**{key: mean_std([r.final[key] for r in results]) for key in FINAL_METRICS},
            "params": results[0].trainable_params, "steps": results[0].steps}


def diagnostics(results: list[SeedResult], params: Params, device: torch.device) -> dict:
    """The run's log: each seed's final metrics and time, speed, memory and device."""
    images = sum(r.steps for r in results) * params.classifier.batch_size
    train_seconds = sum(r.train_seconds for r in results)
    return {
        "seeds": {str(r.seed): {**{key: r.final[key] for key in FINAL_METRICS},
                                "steps": r.steps, "wall_seconds": round(r.wall_seconds, 1)}
                  for r in results},
        "wall_seconds": round(sum(r.wall_seconds for r in results), 1),
        "train_images_per_second": round(images / train_seconds, 1) if train_seconds else None,
        peak_memory_key(device): round(max(r.peak_memory_mib for r in results), 1),
        "device": device.type,
        "precision": precision(device, params.classifier.bf16),
    }
