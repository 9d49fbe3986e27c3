"""The Pulumi component: one child resource per tier, and their dynamic providers."""
