"""Session-aware on-device re-ranking demo: synthetic clickstreams, reference features, ranker."""
