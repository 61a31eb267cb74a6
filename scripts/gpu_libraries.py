# Does TensorFlow in the GPU image find its CUDA and cuDNN libraries? Where no GPU is, load them, not a device:
#   scripts/podman.sh run --rm --network none -v "$PWD/scripts:/s:ro" thaw-gpu:latest python /s/gpu_libraries.py
import ctypes, glob, json, os
import tensorflow as tf
info = tf.sysconfig.get_build_info()
site = os.path.dirname(os.path.dirname(tf.__file__))
found = {}
for pattern in ("cuda_runtime/lib/libcudart.so.*", "cudnn/lib/libcudnn.so.*", "cublas/lib/libcublas.so.*",
                "cublas/lib/libcublasLt.so.*", "cufft/lib/libcufft.so.*", "cusparse/lib/libcusparse.so.*",
                "cusolver/lib/libcusolver.so.*", "nccl/lib/libnccl.so.*", "cuda_nvrtc/lib/libnvrtc.so.*"):
    paths = sorted(glob.glob(os.path.join(site, "nvidia", pattern)))
    for p in paths:
        ctypes.CDLL(p)  # raises if it or a library it needs cannot be loaded
        found[os.path.basename(p)] = "loaded"
    if not paths:
        found[pattern] = "MISSING"
print(json.dumps({"tf": tf.__version__, "is_cuda_build": info.get("is_cuda_build"),
                  "cuda_version": info.get("cuda_version"), "cudnn_version": info.get("cudnn_version"),
                  "libraries": found, "gpus_visible": len(tf.config.list_physical_devices("GPU"))}, indent=1))
