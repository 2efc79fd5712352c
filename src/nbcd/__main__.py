"""`python -m nbcd` runs the command line."""

from nbcd.entry import main

if __name__ == "__main__":
    main()
