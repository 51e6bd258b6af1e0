"""Conformance suite: every spec case x every framework package, and torch <-> Keras side by side."""
