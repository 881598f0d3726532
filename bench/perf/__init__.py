"""Benchmarks: each writes a table (Markdown and JSON) of medians measured after warm-up."""
