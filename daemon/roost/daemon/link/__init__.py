"""The link between roostd and one worker process: a Unix socketpair carrying typed frames.

`transport` frames messages (a kind, a JSON header and blobs) on the socket; `messages` has one
typed record per kind, each owning its frame's JSON keys and blob order.
"""
