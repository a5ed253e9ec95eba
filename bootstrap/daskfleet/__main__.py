from daskfleet.cli import main

main()
