"""Ingestion: images in, tf.Examples out (ImageExampleGen), and the data verdict (DataGate)."""
