"""The promotion gate: the baseline (ServedModel: the model being served), the Evaluator and its metrics."""
