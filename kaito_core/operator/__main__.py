"""``python -m kaito_core.operator``: the same as ``kaito operator``."""

from kaito_core.operator.cli import main

if __name__ == "__main__":
    main()
