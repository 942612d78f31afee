"""MAML on sinusoid regression (Finn et al., 2017, Sec. 5.1)."""
