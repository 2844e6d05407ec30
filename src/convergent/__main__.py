from convergent.cli import main

main()
