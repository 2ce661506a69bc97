from flexrl.cli import main

main()
