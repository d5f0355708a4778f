import sys

from orchestrator.data import main

if __name__ == "__main__":
    sys.exit(main())
