"""The promotion gate: the baseline (LatestBlessedModel), the Evaluator and its metrics."""
