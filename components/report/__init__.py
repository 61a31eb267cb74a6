"""The run's summary and its HTML report (RunReport), made from the run's artifacts."""
