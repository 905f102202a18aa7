from lmsat.cli import main

main()
