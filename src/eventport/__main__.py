from eventport.cli import main

main()
