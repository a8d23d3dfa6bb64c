"""Producers of touchpoint events: the journey simulator, the file and HTTP producers."""
