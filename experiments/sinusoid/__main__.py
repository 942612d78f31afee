from experiments.sinusoid.main import main

main()
