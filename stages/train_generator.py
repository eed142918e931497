"""Stage train_generator: train the generative model that generator.model names (gan or vae);
write models/<model>/<model>.pt, metrics/<model>_training.json and logs/<model>_training.json.
checkpoints/<model>/ lets an interrupted run continue where it stopped."""
import _local_src  # noqa: F401  (first: this tree's src/ before any installed copy)

from cifarbudget.config import load_params
from cifarbudget.data.prepared import load_prepared
from cifarbudget.io import atomic_dir, save_checkpoint, write_json
from cifarbudget.paths import generator_model, training_log, training_metrics
from cifarbudget.stage import run_stage
from cifarbudget.training.generative import train_generator


def main() -> None:
    params = load_params()
    model = params.generator.model
    run = train_generator(params, load_prepared())
    path = generator_model(model)
    with atomic_dir(path.parent) as tmp:
        save_checkpoint(tmp / path.name, run.trainer.state_dict())
    metrics = run.metrics()
    write_json(training_log(model), run.diagnostics())
    write_json(training_metrics(model), metrics)
    params_text = " + ".join(f"{network} {count:,}" for network, count in metrics["params"].items()
                             if network != "total")
    updates_text = " / ".join(f"{network} {count:,}"
                              for network, count in metrics["updates"].items())
    print(f"{path}: step {metrics['steps']}, {params_text} parameters, updates {updates_text}")


if __name__ == "__main__":
    run_stage(main)
