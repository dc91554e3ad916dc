"""The board client: the one way the process talks to a Taskinfa board.

``api`` has one method per endpoint, ``claims`` makes a claim certain, ``transport`` carries
requests (retries only what is safe to repeat), ``ratelimit`` shares one key's budget
between lanes, ``answer`` turns HTTP answers into wire ``models`` or the worker's errors.
"""
