"""Serving: the pyfunc around any family's ModelAPI, packaging, the scoring app and its guard, request capture."""
