from pathlib import Path

from leanattn.docs import stale_blocks

ROOT = Path(__file__).resolve().parent.parent


def test_generated_doc_blocks_are_current():
    assert stale_blocks(ROOT) == [], "run `python -m leanattn.docs` to regenerate"
