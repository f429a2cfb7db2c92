"""The tests' small corpus lives with the benchmarks' one in :mod:`tools.corpus`; this name stays for imports."""

from tools.corpus import Answers, write_corpus

__all__ = ["Answers", "write_corpus"]
