"""Training: the user code the stock Transform and Trainer run, and the trainer's parts."""
