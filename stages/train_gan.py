"""Stage `train_generator` with generator.model=gan: train the class-conditional SN-GAN;
write models/gan/gan.pt and metrics/gan_training.json."""
import _local_src  # noqa: F401  (first: this tree's src/ before any installed copy)

from cifarbudget.config import load_params
from cifarbudget.data.prepared import load_prepared
from cifarbudget.io import atomic_dir, write_json
from cifarbudget.paths import generator_model, training_log, training_metrics
from cifarbudget.stage import run_stage
from cifarbudget.training.checkpoint import save_checkpoint
from cifarbudget.training.gan import train_gan


def main() -> None:
    params = load_params()
    data = load_prepared()
    run = train_gan(params, data)
    path = generator_model("gan")
    with atomic_dir(path.parent) as tmp:
        save_checkpoint(tmp / path.name, run.trainer.state_dict())
    metrics = run.metrics()
    write_json(training_log("gan"), run.diagnostics())
    write_json(training_metrics("gan"), metrics)
    print(f"{path}: step {metrics['steps']}, "
          f"G {metrics['params']['generator']:,} + D {metrics['params']['discriminator']:,} "
          f"parameters, updates G {metrics['updates']['generator']:,} / "
          f"D {metrics['updates']['discriminator']:,}")


if __name__ == "__main__":
    run_stage(main)
