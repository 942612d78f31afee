from experiments.gp_cnp.main import main

main()
