"""Network namespaces, TAP plumbing and real kernel peers (see netns.py, peer.py)."""
