# Thaw: every target runs inside Thaw's environment, built on first use by
# bin/thaw-env (a venv, or a Debian 13 rootfs on hosts with glibc < 2.39).

.PHONY: run test env demo lock bench image image-test clean clean-env

run:            ## run the whole pipeline on the bundled demo
	bin/thaw run

test:           ## run the test suite
	bin/thaw-env python -m pytest -p no:cacheprovider tests

env:            ## build the environment now (a no-op when it is cached)
	bin/thaw-env --build

demo:           ## make the demo data and pretrained backbone under build/demo
	bin/thaw demo

lock:           ## re-resolve requirements*.in into requirements.lock
	bin/thaw-env scripts/lock.sh

image:          ## build the Dockerfile's image with podman (GPU=true: thaw-gpu; BACKBONE=false: no torch stage)
	scripts/build-image.sh

image-test:     ## build the image, run the pipeline's tasks and `thaw run` in it (podman)
	scripts/image-test.sh

bench:          ## run the benchmarks (ratios against a baseline in the same run)
	bin/thaw-env python -m bench

clean:          ## remove the demo and local run outputs
	rm -rf build thaw-output thaw-output-real

clean-env:      ## remove every cached environment (rebuilt on next use)
	rm -rf "$${THAW_CACHE_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/thaw}"
