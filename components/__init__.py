"""Thaw's components and the user code that stock TFX components run.

One Keras for the whole project: tf_keras (Keras 2). TF Transform sets
TF_USE_LEGACY_KERAS=1 on import and its transform layer is a tf_keras model, and
TFX 1.21's own image runs tf_keras, so we choose it explicitly here, before
anything imports TensorFlow. Every module that needs Keras imports ``tf_keras``.
Beam workers and TFX executors import this package first, so they agree.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
