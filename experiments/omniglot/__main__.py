from experiments.omniglot.main import main

main()
