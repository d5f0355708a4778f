import sys

from orchestrator.export import build_parser, main  # noqa: F401 - build_parser: the CLI's parser

if __name__ == "__main__":
    sys.exit(main())
