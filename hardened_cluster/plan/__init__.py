"""The plan: every file for every host, rendered from the spec, and each role's variables."""
