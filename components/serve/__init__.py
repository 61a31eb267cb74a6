"""Serving: serving validation, the TF Serving image's runtime, the serving directory, the pusher."""
