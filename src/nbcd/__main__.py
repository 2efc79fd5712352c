"""`python -m nbcd` runs the command line."""

from nbcd.cli import main

if __name__ == "__main__":
    main()
