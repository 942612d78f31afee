"""The papers' hyperparameters (filled in below)."""
