# The image every Kubeflow component of Thaw runs.
# It is built with the same scripts, on the same Debian 13, as the environment
# the tests run in (bin/thaw-env), so what the tests ran is what Kubeflow runs.
#   docker build -t thaw .                      # CPU
#   docker build -t thaw-gpu --build-arg GPU=true .   # tensorflow[and-cuda]
FROM debian:trixie-slim

ARG GPU=false
# The TensorFlow inside the TF Serving image (k8s/ serves tensorflow/serving:2.19.1):
# serving validation loads every candidate in it too. Keep equal to serving.tf_version.
ARG SERVING_TF_VERSION=2.19.1

COPY scripts/system-packages.txt scripts/install-system-packages.sh scripts/install-python-deps.sh /opt/thaw/src/scripts/
COPY requirements.in requirements-dev.in requirements.lock /opt/thaw/src/
RUN /opt/thaw/src/scripts/install-system-packages.sh \
 && /opt/thaw/src/scripts/install-python-deps.sh /opt/thaw/venv /usr/bin/python3 --no-dev \
 && if [ "$GPU" = true ]; then \
        /opt/thaw/venv/bin/pip install -q --no-cache-dir "tensorflow[and-cuda]==2.21.0" -c /opt/thaw/src/requirements.lock; \
    fi \
 && rm -rf /root/.cache

# The serving runtime, prebuilt: pods cannot build it (no root, maybe no registry).
COPY scripts/build-serving-runtime.sh scripts/python311-venv.sh /opt/thaw/src/scripts/
RUN sh /opt/thaw/src/scripts/build-serving-runtime.sh "$SERVING_TF_VERSION" \
        "/opt/thaw/serving-runtime/tf-$SERVING_TF_VERSION" \
 && touch "/opt/thaw/serving-runtime/tf-$SERVING_TF_VERSION/.thaw-ready" \
 && rm -rf /root/.cache

# The code is installed in the image, not mounted.
COPY pyproject.toml README.md /opt/thaw/src/
COPY pipeline/ /opt/thaw/src/pipeline/
COPY components/ /opt/thaw/src/components/
COPY demo/ /opt/thaw/src/demo/
COPY thaw/ /opt/thaw/src/thaw/
COPY system/ /opt/thaw/src/system/
COPY schemas/ /opt/thaw/src/schemas/
RUN /opt/thaw/venv/bin/pip install -q --no-cache-dir --no-deps -e /opt/thaw/src

RUN useradd --uid 1000 --create-home --shell /usr/sbin/nologin thaw
USER 1000
WORKDIR /home/thaw
ENV PATH=/opt/thaw/venv/bin:$PATH \
    TF_USE_LEGACY_KERAS=1 \
    THAW_SERVING_RUNTIMES=/opt/thaw/serving-runtime \
    PYTHONUNBUFFERED=1
CMD ["thaw", "--help"]
