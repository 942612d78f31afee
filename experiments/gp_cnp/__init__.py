"""Conditional Neural Process on 1-D Gaussian-process regression."""
