"""Side tools (not DVC stages): diff, tag, replay-history, sample-data, simpletuner, dedup-preview."""
