"""How the local board behaves: ``BoardOptions``, and the profiles of the real releases.

Each option is one difference a real Taskinfa dashboard showed (API.md, "Real servers
differ"). A profile is a named set of them, so a test or a demo can say "the worker-era
release" or "the current release" instead of listing switches, and the individual switches
still override a profile (``options_for("v2", rate_limit=3)``):

- ``full``: everything API.md documents (atomic claim, heartbeats, comments, exact totals,
  ``task_list_id`` honoured by ``/tasks/next``). The default, and what most tests use.
- ``v1``: the worker-era release. No claim route, heartbeats but no comments, ``blocked``
  refused, ``/tasks/next`` ignores ``task_list_id``, ``total`` is the page's length, no
  ``offset`` on ``GET /tasks``, no rate limit and no rate-limit headers; ``started_at`` and
  ``completed_at`` are set once, by the first move, and never again.
- ``v2``: the current release. No claim route and no ``/workers`` routes, comments that
  require ``author`` and ``author_type``, ``blocked`` refused, ``/tasks/next`` ignores
  ``task_list_id`` and skips subtasks and tasks whose dependencies are not all ``done``
  (which its list answers mark ``is_blocked``), ``total`` is the page's length,
  ``POST /tasks`` creates in ``backlog``, 100 requests a minute per key on the task, project
  and agent routes (not the model choice) with a reset always a minute ahead, and the agent
  routes: sessions, events, pending messages, llm-config (and its two setting routes);
  ``started_at`` and ``completed_at`` set once, as on the worker-era release.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

Profile = Literal["full", "v1", "v2"]
PROFILE_NAMES: Final[tuple[str, ...]] = get_args(Profile)


@dataclass(frozen=True, slots=True)
class BoardOptions:
    """How the board behaves. The switches emulate real dashboards for client tests."""

    profile: Profile = "full"
    """The profile these options started from (shown in logs; the switches decide)."""
    rate_limit: int = 100
    """Requests per minute per key; 0 turns the limit (and its headers) off."""
    claim_route: bool = True
    """False: no ``POST /tasks/{id}/claim`` (no real release has it)."""
    heartbeat_route: bool = True
    """False: no ``/workers/heartbeat`` and no ``/workers`` (later releases)."""
    comments_route: bool = True
    """False: no ``/tasks/{id}/comments`` (early releases)."""
    accept_blocked: bool = True
    """False: status ``blocked`` is refused with 400, as real servers do."""
    next_filters_task_list: bool = True
    """False: ``/tasks/next`` ignores ``task_list_id`` (both real releases)."""
    next_skips_waiting: bool = False
    """True: ``/tasks/next`` skips subtasks and tasks with a dependency not yet done."""
    list_marks_blocked: bool = False
    """True: list answers mark a task with a dependency not yet done ``is_blocked`` (v2)."""
    exact_total: bool = True
    """False: ``total`` in list answers is the page's length (both real releases)."""
    list_offset: bool = True
    """False: ``GET /tasks`` ignores ``offset`` (the worker-era release)."""
    new_task_status: str = "todo"
    """The status ``POST /tasks`` gives a task that names none (``backlog`` on v2)."""
    rate_limit_task_routes_only: bool = False
    """True: only the task, project and agent routes (``/tasks``, ``/task-lists``,
    ``/sessions``, ``/events``) count against the limit and carry its headers (v2); the
    model choice (``/llm-config``) does not."""
    reset_a_minute_ahead: bool = False
    """True: ``X-RateLimit-Reset`` and ``Retry-After`` always say a full window, as v2 does,
    instead of the true time until a request leaves the window."""
    timestamps_once: bool = False
    """True: ``started_at`` is set by the first move to ``in_progress`` and ``completed_at`` by
    the first to ``review`` or ``done``, and later moves keep them (both real releases);
    False: every such move sets them, as API.md documents."""
    agent_routes: bool = False
    """True: ``/sessions``, ``/events``, ``/tasks/pending-messages`` and ``/llm-config``
    (with ``PATCH /llm-config/providers``, ``PATCH|DELETE /llm-config/session``)."""


_PROFILES: Final[dict[str, BoardOptions]] = {
    "full": BoardOptions(),
    "v1": BoardOptions(
        profile="v1",
        rate_limit=0,
        claim_route=False,
        heartbeat_route=True,
        comments_route=False,
        accept_blocked=False,
        next_filters_task_list=False,
        exact_total=False,
        list_offset=False,
        timestamps_once=True,
    ),
    "v2": BoardOptions(
        profile="v2",
        rate_limit=100,
        claim_route=False,
        heartbeat_route=False,
        comments_route=True,
        accept_blocked=False,
        next_filters_task_list=False,
        next_skips_waiting=True,
        list_marks_blocked=True,
        exact_total=False,
        new_task_status="backlog",
        rate_limit_task_routes_only=True,
        reset_a_minute_ahead=True,
        agent_routes=True,
        timestamps_once=True,
    ),
}


def options_for(profile: str = "full", **overrides: Any) -> BoardOptions:
    """The options of ``profile``, with any switch given here taking precedence."""
    try:
        base = _PROFILES[profile]
    except KeyError:
        raise ValueError(
            f"unknown board profile {profile!r}; choose one of {', '.join(PROFILE_NAMES)}"
        ) from None
    return dataclasses.replace(base, **overrides)
