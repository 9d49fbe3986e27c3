"""Verification: the CIS catalogue and engine, probes from outside, live-cluster proofs, kube-bench."""
