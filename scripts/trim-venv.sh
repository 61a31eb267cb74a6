#!/bin/sh
# Removes from the image's Python environments what no pod runs: C/C++ headers
# and static libraries (for compiling extensions against TensorFlow), and pip's
# caches. Every module stays, tests included: some packages import their own.
#   usage: trim-venv.sh DIR...
set -eu
for dir in "$@"; do
    find "$dir" -depth -type d \( -path '*/site-packages/tensorflow/include' \
        -o -path '*/site-packages/*/include/third_party' \) -exec rm -rf {} +
    find "$dir" -type f -name '*.a' -path '*/site-packages/*' -delete
done
rm -rf /root/.cache
