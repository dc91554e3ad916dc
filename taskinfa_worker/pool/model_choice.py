"""Which model and provider a run uses: the worker's own settings, or the dashboard's choice.

Precedence, highest first (docs/configuration.md says the same):

1. The worker's explicit settings. ``MODEL`` (or ``ANTHROPIC_MODEL`` named in
   ``AGENT_ENV_ALLOW``) fixes the model. ``ANTHROPIC_BASE_URL`` (the setting, or it or
   ``ANTHROPIC_AUTH_TOKEN`` named in ``AGENT_ENV_ALLOW``) fixes the endpoint and
   credential: the dashboard's choice is then not read at all.
2. The project's choice for the kind of run (``/llm-config``, ``session_type`` ``task``
   for a task's run, ``message`` for an answer to a person's message).
3. The workspace's choice (the same, with no project).
4. The defaults: Claude Code's model, the operator's ``ANTHROPIC_API_KEY`` or Claude login.

A choice of provider ``anthropic`` sets only the model: the run keeps the operator's own
key and endpoint (the dashboard has no token for it). A choice of another provider sends
the run to that provider's ``base_url`` with its token as the one credential (a keyless
local server gets the provider's name, as the dashboard's own orchestrator sends). A choice
naming a provider the board has no row for, or one without a base URL, cannot be followed:
the run uses the worker's own settings, with one WARNING per such choice.

The answer is read once per ``MAX_AGE`` at most, by one request however many runs start
(it costs a request of the key's budget on this side even where the board does not count
it), and every token in it is taught to the redactor before anything else sees it. A board
without the route, a failed read or a malformed answer never fails a run: the last good
answer (or none) applies, with a WARNING for the failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import anyio
from loguru import logger
from pydantic import SecretStr

from taskinfa_worker.agent.job import ModelRoute
from taskinfa_worker.client.llm_config import ANTHROPIC, TASK_SESSION, LlmConfig, LlmConfigApi
from taskinfa_worker.errors import BoardError
from taskinfa_worker.redact import Redactor
from taskinfa_worker.settings import Settings

MAX_AGE: Final = 60.0
"""Seconds an answer of ``/llm-config`` is used before it is read again."""

OWN_ENDPOINT_VARS: Final = frozenset({"ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"})
OWN_MODEL_VAR: Final = "ANTHROPIC_MODEL"


def own_endpoint(settings: Settings) -> bool:
    """Whether the operator fixed where the agent's requests go, and with what credential."""
    return bool(settings.anthropic_base_url) or bool(
        OWN_ENDPOINT_VARS & set(settings.agent_env_allow)
    )


def own_model(settings: Settings) -> bool:
    return bool(settings.model) or OWN_MODEL_VAR in settings.agent_env_allow


def resolve(
    settings: Settings, config: LlmConfig | None, project_id: str | None, session_type: str
) -> tuple[ModelRoute, str | None]:
    """The route a run takes, and what went wrong with the dashboard's choice (or None)."""
    fixed = ModelRoute(model=settings.model)
    choice = None if config is None else config.choice_for(project_id, session_type)
    if config is None or choice is None:
        return fixed, None
    origin = f"project {choice.task_list_id}" if choice.task_list_id else "the workspace"
    model = settings.model if own_model(settings) else choice.model
    if choice.provider == ANTHROPIC:
        return ModelRoute(model=model, provider=ANTHROPIC, origin=origin), None
    provider = config.provider(choice.provider)
    if provider is None or not provider.base_url:
        lacks = "is not configured" if provider is None else "has no base URL"
        problem = (
            f"the model choice of {origin} names provider {choice.provider!r}, which {lacks} "
            "on the board; runs use the worker's own model settings"
        )
        return fixed, problem
    token = provider.auth_token or SecretStr(choice.provider)
    route = ModelRoute(
        model=model,
        base_url=provider.base_url,
        auth_token=token,
        provider=choice.provider,
        origin=origin,
    )
    return route, None


class ModelChoices:
    """The dashboard's model choice, read through a short cache, turned into routes."""

    def __init__(
        self,
        settings: Settings,
        api: LlmConfigApi,
        redactor: Redactor,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._api = api
        self._redact = redactor
        self._clock = clock
        self._config: LlmConfig | None = None
        self._read_at: float | None = None
        self._lock = anyio.Lock()
        self._warned: set[str] = set()
        self._said_own_endpoint = False

    async def route_for(
        self, project_id: str | None, session_type: str = TASK_SESSION
    ) -> ModelRoute:
        """The route of one run of ``session_type`` in ``project_id`` (never raises)."""
        if own_endpoint(self._settings):
            if not self._said_own_endpoint:
                self._said_own_endpoint = True
                logger.info(
                    "ANTHROPIC_BASE_URL is the worker's own: the dashboard's model choice is "
                    "not applied"
                )
            return ModelRoute(model=self._settings.model)
        route, problem = resolve(self._settings, await self._current(), project_id, session_type)
        if problem is not None:
            self._warn_once(problem)
        return route

    async def _current(self) -> LlmConfig | None:
        """The cached answer, read again when older than MAX_AGE (one reader at a time)."""
        async with self._lock:
            now = self._clock()
            fresh = self._read_at is not None and now - self._read_at < MAX_AGE
            if fresh or self._api.supported is False:
                return self._config
            try:
                config = await self._api.read()
            except BoardError as exc:
                # Read again after MAX_AGE, as an answer would be: a board in trouble gets
                # no extra request (and the log no extra line) per run.
                self._read_at = now
                kept = "the last one read" if self._config is not None else "none"
                logger.warning(
                    "could not read the dashboard's model choice ({}); using {}", exc, kept
                )
                return self._config
            if config is not None:
                for token in config.tokens():
                    self._redact.add(token)
            self._config, self._read_at = config, now
            return config

    def _warn_once(self, problem: str) -> None:
        if problem not in self._warned:
            self._warned.add(problem)
            logger.warning("{}", problem)
