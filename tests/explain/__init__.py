"""Tests for `fitlens explain`."""
