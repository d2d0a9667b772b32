"""Adversarial tests: a hostile node, cache client, DNS sender and man in the middle (issue 12, docs/security.md)."""
