"""Helpers shared by integration and system tests: real components started for a test run."""
