"""The worker pool: N slots in one process, and the loops that run beside them.

``worker_pool`` starts and stops everything; ``dispatcher`` claims work for a free slot;
``runner`` runs one task in one slot; ``registry`` holds the running tasks; ``reporting``
writes a task's ending and ``progress`` its progress comments; ``heartbeat``, ``takeaway``
(a person taking a task away) and ``recovery`` are the background loops, paced by
``budget``; ``state`` is what health, metrics and the status file show.
"""
