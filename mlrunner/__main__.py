from mlrunner.cli import main

main()
