"""Stage `download`: put the dataset archive named by data.source at data/raw/archive.tar.gz."""
from cifarbudget.config import load_params
from cifarbudget.data.download import ARCHIVE_PATH, fetch_archive
from cifarbudget.stage import run_stage


def main() -> None:
    data = load_params().data
    fetch_archive(data.resolved_source, data.resolved_md5, ARCHIVE_PATH,
                  timeout=data.download_timeout, deadline=data.download_deadline)
    print(f"{ARCHIVE_PATH}: from {data.resolved_source}, md5 {data.resolved_md5} verified")


if __name__ == "__main__":
    run_stage(main)
