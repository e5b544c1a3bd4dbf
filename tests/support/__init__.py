"""Helpers shared by the tests (and by the scripts that reuse a test harness)."""
