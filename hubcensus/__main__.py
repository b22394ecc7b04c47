from hubcensus.cli import main

main()
