"""Day-2 operations on a live cluster, each a sequence of converges and checks."""
