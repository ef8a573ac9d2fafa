"""The link between roostd and one worker process: a Unix socketpair carrying typed frames.

`transport` frames messages (a kind, a JSON header and blobs) on the socket.
"""
