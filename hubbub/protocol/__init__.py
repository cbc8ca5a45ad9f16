"""hubbub's Sans-I/O protocol layer: framing, codecs, messages, channels, codes.

Nothing here does I/O or reads a clock: bytes and ``now`` go in, messages and
bytes come out (STYLE.md, after websockets and h11).
"""
