"""MAML on sinusoid regression (Finn et al., 2017, Sec. 5.1)."""
from experiments.sinusoid.main import main

main()
