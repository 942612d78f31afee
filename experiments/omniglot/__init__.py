"""Few-shot Omniglot: every metajax learner on one protocol, side by side."""
