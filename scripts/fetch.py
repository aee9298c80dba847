"""Fetch exactly the Narratives files a score run reads: `python scripts/fetch.py --help`.

    python scripts/fetch.py --data.root /data/narratives --data.tasks pieman --dry-run   # list, sizes, total
    python scripts/fetch.py --data.root /data/narratives --data.tasks pieman   # download (rerun to resume)
    python scripts/fetch.py --data.root /data/ds002345 --data.tasks pieman --via datalad   # in a DataLad clone

The --data options mean what they mean to score.py; a fetched --data.root scores unchanged.
Exit code 1 when a file failed (each is named), 2 for a bad option or an unreachable server.
"""
import sys

from assocjax.cli import run_cli
from assocjax.data.fetch import FetchError
from assocjax.pipeline.fetch_plan import FetchConfig, fetch

if __name__ == "__main__":
    sys.exit(run_cli(fetch, FetchConfig, errors=(FetchError,), description=__doc__))
