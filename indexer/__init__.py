"""Offline indexer: turns a music library into catalogue rows and a FAISS index."""
