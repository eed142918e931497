"""Stage `prepare`: check the archive, write data/prepared and the augmentation figure."""
import _local_src  # noqa: F401  (first: this tree's src/ before any installed copy)

from cifarbudget.config import load_params
from cifarbudget.data.cifar import read_cifar_archive
from cifarbudget.data.prepared import save_prepared
from cifarbudget.paths import ARCHIVE, AUGMENTATIONS_PNG, PREPARED
from cifarbudget.plots.data import save_augmentation_figure
from cifarbudget.stage import run_stage

def main() -> None:
    params = load_params()
    data = read_cifar_archive(ARCHIVE, params.data.name)
    # The figure first: if it cannot be written, the earlier prepared data stays as it was.
    save_augmentation_figure(data, params.augment, AUGMENTATIONS_PNG)
    save_prepared(data, PREPARED)
    shown = ", ".join(data.classes[:5]) + (", ..." if data.num_classes > 5 else "")
    print(f"{PREPARED}: {data.name}, {data.num_classes} classes ({shown}); "
          f"train {data.train_images.shape}, test {data.test_images.shape}\n"
          f"training-set mean {[round(m, 4) for m in data.mean]}, "
          f"std {[round(s, 4) for s in data.std]}")


if __name__ == "__main__":
    run_stage(main)
