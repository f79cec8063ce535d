"""Benchmarks of the whole pipeline against its peers (``python -m bench``, ``make bench``)."""

__all__: list[str] = []
