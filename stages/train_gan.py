"""Stage `train_gan`: train the class-conditional SN-GAN; write models/gan/gan.pt and its metrics."""
from pathlib import Path

from cifarbudget.config import load_params
from cifarbudget.data.prepared import load_prepared
from cifarbudget.io import atomic_dir, write_json
from cifarbudget.stage import run_stage
from cifarbudget.training.checkpoint import save_checkpoint
from cifarbudget.training.gan import train_gan

MODEL_DIR = Path("models/gan")
METRICS_JSON = Path("metrics/gan_training.json")


def main() -> None:
    params = load_params()
    data = load_prepared()
    run = train_gan(params, data)
    with atomic_dir(MODEL_DIR) as tmp:
        save_checkpoint(tmp / "gan.pt", run.trainer.state_dict())
    metrics = run.metrics(params)
    write_json(METRICS_JSON, metrics)
    print(f"{MODEL_DIR}/gan.pt: step {metrics['steps']}, "
          f"G {metrics['params']['generator']:,} + D {metrics['params']['discriminator']:,} "
          f"parameters, updates G {metrics['updates']['generator']:,} / "
          f"D {metrics['updates']['discriminator']:,}")


if __name__ == "__main__":
    run_stage(main)
