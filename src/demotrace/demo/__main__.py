"""``python -m demotrace.demo`` = ``demotrace demo``."""

from ..cli import main

if __name__ == "__main__":
    import sys

    sys.argv[1:1] = ["demo"]
    main()
