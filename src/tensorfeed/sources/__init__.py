"""One package per kind of source (``sql/``, ``lake/``, ``kafka/``, ``files/``) and ``memory.py``,
the simplest source; each implements the contracts of ``tensorfeed.dataset``."""
