"""Names in the exported SavedModel that the trainer writes and serving reads.

Kept free of TFX and Keras: the serving probe imports it in the serving
runtime (the TensorFlow of the TF Serving image), where only TensorFlow is.
"""

# Written by the trainer into the SavedModel's assets.extra/ (TF Serving ignores
# it): the training split's count per class, so a later run's DataGate can
# measure drift against the data the served model learned from.
LABEL_COUNTS_FILE = "thaw_label_counts.json"

# TF Serving's warmup requests, in the SavedModel's assets.extra/.
WARMUP_FILE = "tf_serving_warmup_requests"
# The one input of serving_default: a batch of encoded images. The name ends in
# _bytes, so TF Serving's REST API takes {"b64": ...} for it.
SERVING_INPUT_KEY = "image_bytes"
