"""make bench: every benchmark in turn."""

import sys

from bench import ingestion

sys.argv = [sys.argv[0]]
ingestion.main()
