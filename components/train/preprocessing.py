"""Transform's user code: the label vocabulary; images stay encoded bytes.

Decoded float pixels are about 600 KB per 224x224 image against some 20 KB of
JPEG, so Transform does not materialize pixels: it passes the encoded bytes
through and learns the class names. Pixels are made by components.image_ops,
the same function in training, evaluation and serving.
"""

import tensorflow as tf
import tensorflow_transform as tft

IMAGE_KEY = "image_bytes"
LABEL_KEY = "label"
LABEL_ID_KEY = "label_id"
LABEL_VOCABULARY = "label"


def _dense(tensor: tf.Tensor) -> tf.Tensor:
    """Features with a fixed shape of [1] in the schema arrive as [batch, 1]."""
    if isinstance(tensor, tf.SparseTensor):
        tensor = tf.sparse.to_dense(tensor, default_value="")
    return tf.reshape(tensor, [-1])


def preprocessing_fn(inputs):
    """Class names in a vocabulary file, and each example's class id.

    Ids follow TF Transform's vocabulary order (by frequency), which can change
    between runs; the model exports its own class names with it, so callers
    and the gate compare names, never bare ids across models.
    """
    label = _dense(inputs[LABEL_KEY])
    return {
        IMAGE_KEY: _dense(inputs[IMAGE_KEY]),
        LABEL_ID_KEY: tft.compute_and_apply_vocabulary(
            label, vocab_filename=LABEL_VOCABULARY, store_frequency=False, num_oov_buckets=0
        ),
    }
