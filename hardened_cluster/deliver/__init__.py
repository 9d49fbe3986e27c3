"""Delivery: preflight, the offline bundle, Ansible runs, the rerun fingerprint, one converge."""
