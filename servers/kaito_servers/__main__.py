"""``python -m kaito_servers``: the server's command line (see :mod:`kaito_servers.cli`)."""

from kaito_servers.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
