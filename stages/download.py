"""Stage `download`: put the dataset archive named by data.source at data/raw/archive.tar.gz."""
import _local_src  # noqa: F401  (first: this tree's src/ before any installed copy)

from cifarbudget.config import load_params
from cifarbudget.data.download import fetch_archive
from cifarbudget.paths import ARCHIVE
from cifarbudget.stage import run_stage


def main() -> None:
    data = load_params().data
    fetch_archive(data.resolved_source, data.resolved_md5, ARCHIVE,
                  timeout=data.download_timeout, deadline=data.download_deadline)
    print(f"{ARCHIVE}: from {data.resolved_source}, md5 {data.resolved_md5} verified")


if __name__ == "__main__":
    run_stage(main)
