"""`python -m hardened_cluster.cli.main`."""
import sys

from hardened_cluster.cli.main.main import main

sys.exit(main())
