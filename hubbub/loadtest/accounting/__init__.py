"""Counting what happened: the stamp every publication carries (``payload``), loss,
duplicates and reordering per stream (``sequences``, ``receiver``), latency
histograms (``hist``), a worker's counters (``stats``) and the coordinator's
merge of them (``aggregate``)."""
