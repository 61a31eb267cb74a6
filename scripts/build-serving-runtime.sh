#!/bin/sh
# Builds the serving runtime: a Python with the TensorFlow version that the TF
# Serving image runs (tensorflow/serving:X.Y.Z embeds TensorFlow X.Y.Z), so the
# serving validation loads every candidate in that runtime before it is pushed.
#   usage: build-serving-runtime.sh TF_VERSION DEST
# DEST/venv/bin/python is the runtime's interpreter when it ends.
#
# TensorFlow 2.19 and older have no wheels for Python 3.13, the environment's
# Python (Debian 13): the runtime's Python is a 3.11 or 3.12 (python311-venv.sh).
# Called by components/serving_runtime.py (on first use, under a lock) and by
# the Dockerfile (prebuilt into the image).
set -eu
version=${1:?usage: build-serving-runtime.sh TF_VERSION DEST}
dest=${2:?usage: build-serving-runtime.sh TF_VERSION DEST}
sh "$(dirname "$0")/python311-venv.sh" "$dest"
"$dest/venv/bin/python" -m pip install -q "tensorflow-cpu==$version" pillow
# The serving API's protos only: it depends on "tensorflow", which would pull a second, full TensorFlow.
"$dest/venv/bin/python" -m pip install -q --no-deps "tensorflow-serving-api==$version"

"$dest/venv/bin/python" -c "import tensorflow as tf; assert tf.__version__ == '$version', tf.__version__"
