"""Stage `train_generator` with generator.model=vae: train the class-conditional VAE;
write models/vae/vae.pt and metrics/vae_training.json."""
import _local_src  # noqa: F401  (first: this tree's src/ before any installed copy)

from cifarbudget.config import load_params
from cifarbudget.data.prepared import load_prepared
from cifarbudget.io import atomic_dir, write_json
from cifarbudget.paths import generator_model, training_log, training_metrics
from cifarbudget.stage import run_stage
from cifarbudget.training.checkpoint import save_checkpoint
from cifarbudget.training.vae import train_vae


def main() -> None:
    params = load_params()
    data = load_prepared()
    run = train_vae(params, data)
    path = generator_model("vae")
    with atomic_dir(path.parent) as tmp:
        save_checkpoint(tmp / path.name, run.trainer.state_dict())
    metrics = run.metrics()
    write_json(training_log("vae"), run.diagnostics())
    write_json(training_metrics("vae"), metrics)
    print(f"{path}: step {metrics['steps']}, encoder {metrics['params']['encoder']:,} + "
          f"decoder {metrics['params']['decoder']:,} parameters, "
          f"{metrics['updates']['decoder']:,} updates each")


if __name__ == "__main__":
    run_stage(main)
