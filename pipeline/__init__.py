"""Thaw's pipeline as a whole: configuration, the DAG, its runners and the CLI."""

import components  # noqa: F401  (chooses the one Keras before TensorFlow loads)
