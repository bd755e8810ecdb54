"""Renderers of run files: console (rich), markdown, html, csv, pytest-benchmark JSON."""
