"""Learned LLM routing: pick, per request, the model that gives the needed quality at the lowest cost.

Importing :mod:`router` does no work: no model is loaded, no client built, no file read. Heavy
modules (torch, sentence-transformers, faiss) are imported only by the parts that need them.
"""

__version__ = "0.1.0"
