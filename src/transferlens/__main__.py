"""``python -m transferlens``: the same command line as the ``transferlens`` script."""

from .cli import main

if __name__ == "__main__":
    main()
