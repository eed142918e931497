"""Stage `train_generator` with generator.model=gan: train the class-conditional SN-GAN;
write models/gan/gan.pt and metrics/gan_training.json."""
from cifarbudget.config import load_params
from cifarbudget.data.prepared import load_prepared
from cifarbudget.io import atomic_dir, write_json
from cifarbudget.models.generator import model_file
from cifarbudget.stage import run_stage
from cifarbudget.training.checkpoint import save_checkpoint
from cifarbudget.training.gan import train_gan


def main() -> None:
    params = load_params()
    data = load_prepared()
    run = train_gan(params, data)
    path = model_file("gan")
    with atomic_dir(path.parent) as tmp:
        save_checkpoint(tmp / path.name, run.trainer.state_dict())
    metrics = run.metrics(params)
    write_json("metrics/gan_training.json", metrics)
    print(f"{path}: step {metrics['steps']}, "
          f"G {metrics['params']['generator']:,} + D {metrics['params']['discriminator']:,} "
          f"parameters, updates G {metrics['updates']['generator']:,} / "
          f"D {metrics['updates']['discriminator']:,}")


if __name__ == "__main__":
    run_stage(main)
