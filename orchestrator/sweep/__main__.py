import sys

from orchestrator.sweep.driver import main, parse_args  # noqa: F401 - parse_args: the CLI's parser

if __name__ == "__main__":
    sys.exit(main())
