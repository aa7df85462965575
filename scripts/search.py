"""Entrypoint for `ray job submit`: the same as `tunelab run STUDY.yaml [--set KEY=VALUE ...]`.

ray job submit --working-dir . -- python scripts/search.py studies/demo.yaml
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tunelab.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
