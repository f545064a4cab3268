"""Reliability suite: the real service in a subprocess, driven over HTTP the way Plivo drives it."""
