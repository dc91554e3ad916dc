"""The current release's model choice: ``GET /llm-config`` and the two routes that set it.

The answer is ``{"providers": [...], "session_configs": [...]}``: each provider a workspace
configured (``provider`` its name, ``base_url``, and ``auth_token`` in plain text), and each
choice of ``provider`` and ``model`` for one ``session_type`` of one project
(``task_list_id``) or, with ``task_list_id`` null, of the whole workspace. Tokens are held
as ``SecretStr`` from the moment they are decoded, and no message made here quotes the
answer's body: a malformed answer is described by where it is wrong, never by its text.

Earlier releases lack the routes: the first 404 or 405 turns the feature off for the process
(one line in the log), and later reads return None without a request.
"""

from __future__ import annotations

import json
from typing import Any, Final, TypeVar

from loguru import logger
from pydantic import SecretStr, ValidationError

from taskinfa_worker.client.answer import Answer
from taskinfa_worker.client.models import WireModel
from taskinfa_worker.client.ratelimit import Lane
from taskinfa_worker.client.transport import BoardTransport

LLM_CONFIG: Final = "/llm-config"
LLM_PROVIDERS: Final = "/llm-config/providers"
LLM_SESSION: Final = "/llm-config/session"

TASK_SESSION: Final = "task"
"""The kind of session a task's run is (the release's orchestrator uses it for those)."""
MESSAGE_SESSION: Final = "message"
"""The kind of session an answer to a person's message is (as the orchestrator's)."""
ANTHROPIC: Final = "anthropic"
"""The provider that means "Anthropic itself, with the runner's own key"."""
PROVIDERS: Final = ("anthropic", "ollama", "lmstudio", "openrouter", "litellm", "custom")
SESSION_TYPES: Final = (
    "task",
    "ai_review",
    "fix_review",
    "testing",
    "fix_test_failure",
    "refinement",
    MESSAGE_SESSION,
)
M = TypeVar("M", bound=WireModel)
UNSET: Final[Any] = object()
"""A provider field not sent: the board keeps what it has."""


class LlmProvider(WireModel):
    """One provider row. ``auth_token`` never shows in a repr, a log or an error."""

    provider: str
    base_url: str | None = None
    auth_token: SecretStr | None = None


class LlmChoice(WireModel):
    """The provider and model (None: the provider's default) for one kind of session."""

    session_type: str
    provider: str = ANTHROPIC
    model: str | None = None
    task_list_id: str | None = None


class LlmConfig(WireModel):
    providers: list[LlmProvider]
    session_configs: list[LlmChoice]

    def choice_for(self, project_id: str | None, session_type: str) -> LlmChoice | None:
        """The project's own choice, else the workspace's, else None."""
        for wanted in (project_id, None) if project_id else (None,):
            for choice in self.session_configs:
                if choice.session_type == session_type and choice.task_list_id == wanted:
                    return choice
        return None

    def provider(self, name: str) -> LlmProvider | None:
        return next((p for p in self.providers if p.provider == name), None)

    def tokens(self) -> list[SecretStr]:
        """Every token in the answer, for the redactor to learn."""
        return [p.auth_token for p in self.providers if p.auth_token is not None]


class LlmConfigApi:
    """Typed calls of the llm-config routes, over the client's transport."""

    def __init__(self, transport: BoardTransport) -> None:
        self._transport = transport
        self.supported: bool | None = None
        """None until known; False once the board showed it has no such route."""

    async def read(self, *, lane: Lane = Lane.NORMAL) -> LlmConfig | None:
        """The workspace's providers and choices; None when the board has no llm-config.

        One attempt: a run that cannot read it runs with the worker's own settings, and
        whoever caches the answer keeps the last good one. Raises BoardError (a malformed
        answer is a MalformedResponseError that quotes none of it).
        """
        if self.supported is False:
            return None
        answer = await self._transport.request("GET", LLM_CONFIG, lane=lane, retry=False)
        if self._missing(answer):
            return None
        self._transport.expect_ok(answer)
        config = _decoded(answer, LlmConfig, None, self._transport)
        self.supported = True
        return config

    async def set_provider(
        self,
        provider: str,
        *,
        base_url: str | None = UNSET,
        auth_token: SecretStr | None = UNSET,
    ) -> LlmProvider:
        """Create or update the workspace's provider; a field left UNSET stays as it is."""
        body: dict[str, Any] = {"provider": provider}
        if base_url is not UNSET:
            body["base_url"] = base_url
        if auth_token is not UNSET:
            body["auth_token"] = None if auth_token is None else auth_token.get_secret_value()
        answer = await self._write("PATCH", LLM_PROVIDERS, body)
        return _decoded(answer, LlmProvider, "provider", self._transport)

    async def set_choice(
        self,
        provider: str,
        model: str | None,
        *,
        project_id: str | None = None,
        session_type: str = TASK_SESSION,
    ) -> LlmChoice:
        """The provider and model for one kind of session, of a project or the workspace."""
        body = {
            "session_type": session_type,
            "provider": provider,
            "model": model,
            "task_list_id": project_id,
        }
        answer = await self._write("PATCH", LLM_SESSION, body)
        return _decoded(answer, LlmChoice, "session_config", self._transport)

    async def clear_choice(
        self, *, project_id: str | None = None, session_type: str = TASK_SESSION
    ) -> None:
        """Forget one choice (the project then follows the workspace's, if any)."""
        body = {"session_type": session_type, "task_list_id": project_id}
        await self._write("DELETE", LLM_SESSION, body)

    async def _write(self, method: str, template: str, body: dict[str, Any]) -> Answer:
        # Setting the same values twice leaves the same rows: safe to retry.
        answer = await self._transport.request(
            method, template, lane=Lane.NORMAL, json=body, retry=True
        )
        if self._missing(answer):
            raise self._transport.error(answer)
        self._transport.expect_ok(answer)
        return answer

    def _missing(self, answer: Answer) -> bool:
        if answer.status not in (404, 405):
            return False
        if self.supported is not False:
            logger.info(
                "The board at {} has no llm-config: runs use the worker's own model settings.",
                self._transport.shown_base,
            )
        self.supported = False
        return True


def _decoded(answer: Answer, model: type[M], field: str | None, transport: BoardTransport) -> M:
    """The body (or its ``field``) as ``model``; the error says where, never what."""
    try:
        data = json.loads(answer.body)
    except (ValueError, RecursionError):
        raise answer.malformed("the answer is not JSON", transport.redact) from None
    if field is not None:
        data = data.get(field) if isinstance(data, dict) else None
    if not isinstance(data, dict):
        where = f'"{field}"' if field else "the answer"
        raise answer.malformed(f"{where} is not a JSON object", transport.redact)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "body"
        raise answer.malformed(
            f"{model.__name__} {where}: {first.get('msg', 'invalid')}", transport.redact
        ) from None
