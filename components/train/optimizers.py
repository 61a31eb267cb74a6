"""How a stage learns: its optimizer, and the learning-rate curve it follows.

Warmup then constant or cosine decay, per stage; an optimizer made mid-stage
(when ``auto`` unfreezes another block) continues the stage's curve. With a
per-layer decay, each backbone block learns at a factor of the rate of what is
above it.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras

@tf_keras.saving.register_keras_serializable(package="thaw")
class WarmupCosine(tf_keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to the curve, which is ``peak`` held or decayed on a cosine to 0.

    A stage's steps are the optimizer's own plus ``offset``: an optimizer made
    mid-stage (when ``auto`` unfreezes a block) continues the stage's curve,
    and warms up to it again over its own first ``warmup_steps``, so the
    newly unfrozen block does not start with full-size steps. The cosine
    starts at ``decay_start`` (the stage's first warmup).
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0, decay: str = "cosine",
                 offset: int = 0, decay_start: int | None = None):
        self.peak, self.total_steps, self.warmup_steps = peak, max(1, total_steps), warmup_steps
        self.decay, self.offset = decay, offset
        self.decay_start = warmup_steps if decay_start is None else decay_start

    def __call__(self, step):
        own = tf.cast(step, tf.float32)
        peak = tf.constant(self.peak, tf.float32)
        if self.decay == "constant":
            curve = peak
        else:
            span = float(max(1, self.total_steps - self.decay_start))
            progress = tf.clip_by_value((own + float(self.offset - self.decay_start)) / span, 0.0, 1.0)
            curve = 0.5 * peak * (1.0 + tf.cos(math.pi * progress))
        if self.warmup_steps:
            curve = curve * tf.minimum(1.0, (own + 1.0) / float(self.warmup_steps))
        return curve

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "decay": self.decay, "offset": self.offset, "decay_start": self.decay_start}


_OPTIMIZERS = {
    "adam": tf_keras.optimizers.Adam,
    "adamw": tf_keras.optimizers.AdamW,
    "sgd": tf_keras.optimizers.SGD,
    "rmsprop": tf_keras.optimizers.RMSprop,
}
_LAYERWISE: dict[type, type] = {}


def _layerwise(base: type) -> type:
    """``base`` with a learning-rate factor per variable (the per-layer decay).

    Keras optimizers read ``self.learning_rate`` inside ``update_step``, which
    runs once per variable as the train step is traced; the factor for that
    variable is set around the call, so Adam's step size itself scales (scaling
    the gradient would not: Adam is invariant to it).
    """
    if base not in _LAYERWISE:
        class Layerwise(base):
            def __init__(self, lr_scales: list[tuple], **kwargs):
                super().__init__(jit_compile=False, **kwargs)  # the factor is Python state at trace time
                self._lr_scales = {self._var_key(v): scale for v, scale in lr_scales}
                self._lr_scale = None

            @property
            def learning_rate(self):
                lr = base.learning_rate.fget(self)
                return lr if self._lr_scale is None else lr * self._lr_scale

            @learning_rate.setter
            def learning_rate(self, value):
                base.learning_rate.fset(self, value)

            def update_step(self, gradient, variable):
                self._lr_scale = self._lr_scales.get(self._var_key(variable))
                try:
                    return super().update_step(gradient, variable)
                finally:
                    self._lr_scale = None

        Layerwise.__name__ = f"Layerwise{base.__name__}"
        _LAYERWISE[base] = Layerwise
    return _LAYERWISE[base]


def make_optimizer(name: str, weight_decay: float, schedule: WarmupCosine, lr_scales: list[tuple]):
    """The stage's optimizer by ``name``, following ``schedule``, with per-variable factors if any."""
    kwargs = {"learning_rate": schedule}
    if weight_decay or name == "adamw":
        kwargs["weight_decay"] = weight_decay
    if name == "sgd":
        kwargs["momentum"] = 0.9
    cls = _OPTIMIZERS[name]
    if lr_scales:
        return _layerwise(cls)(lr_scales=lr_scales, **kwargs)
    return cls(**kwargs)
