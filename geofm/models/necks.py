"""Necks: adapt a backbone's feature list to what a decoder expects."""
