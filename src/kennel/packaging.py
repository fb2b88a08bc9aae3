"""Kept for models logged by kennel 0.1: their ``pyfunc_model.py`` imports
``kennel.packaging.KennelPyfunc``. When such a model loads in a process that has already
imported this kennel (``kennel serve``, ``kennel predict``), that import resolves here.
New code imports :mod:`kennel.serve.pyfunc`."""

from kennel.serve.pyfunc import KennelPyfunc

__all__ = ["KennelPyfunc"]
