"""Fingerprints and the bitmap index built from them."""
