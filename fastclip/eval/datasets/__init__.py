"""Loaders for real evaluation data in its official on-disk layouts; a wrong layout raises an error that prints the
expected tree."""
