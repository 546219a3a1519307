"""OpenAI and OpenAI-compatible APIs as models: embeddings and chat (needs the ``openai`` extra).

Only settings are stored (model name, task, base URL, batching and retry
limits); the API key never is. The client is built on first use from
``CFG.openai.api_key`` (``SUPERDUPERDB_OPENAI__API_KEY``, falling back to
``OPENAI_API_KEY``) and ``base_url`` (the model's own, else
``CFG.openai.base_url``, i.e. ``SUPERDUPERDB_OPENAI__BASE_URL``), so any
process with the same configuration can load and run the model.

Requests that fail with HTTP 408, 409, 429 or 5xx, time out, or cannot connect are
retried with exponential backoff (``retry_base_delay * 2**attempt``, capped at
``retry_max_delay``), honouring the server's ``Retry-After``; at most
``max_retries`` times and ``retry_max_wait`` seconds of waiting in all per
request. Other errors (a bad key, a bad request) are not retried.

>>> from superduperdb.models.openai import OpenAIModel
>>> m = OpenAIModel('embed', model='text-embedding-3-small', base_url='http://localhost:8000/v1')
>>> params = m.to_config()[0]['params']
>>> params['model'], params['task'], params['base_url']
('text-embedding-3-small', 'embedding', 'http://localhost:8000/v1')
>>> 'api_key' in params
False
"""

from __future__ import annotations

import base64
import email.utils
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from superduperdb.base._deps import require
from superduperdb.base.exceptions import ConfigError, QueryError, ServiceError, SuperDuperError
from superduperdb.components.model import Model

logger = logging.getLogger(__name__)

TASKS = ('embedding', 'chat')
DEFAULT_BASE_URL = 'https://api.openai.com/v1'
#: besides 5xx: request timeout, conflict (a lock timeout at OpenAI), rate limit; as the openai client
RETRY_STATUSES = frozenset({408, 409, 429})

# the one place this module waits; tests replace it to record delays without sleeping
_sleep: Callable[[float], None] = time.sleep


@dataclass(kw_only=True)
class OpenAIModel(Model):
    """An OpenAI-compatible API: ``task='embedding'`` (float32 vectors) or ``'chat'`` (text).

    - ``model``: the API's model name (``'text-embedding-3-small'``, ``'gpt-4o-mini'``).
    - ``prompt``: for chat, a format string for each input, e.g. ``'Summarize: {input}'``
      (``{}`` works too; a tuple input fills ``{0}``, ``{1}``; a dict input its keys).
      ``system``: an optional system message. None: the input is the message.
    - ``base_url``: the API's address; None means ``CFG.openai.base_url``, else OpenAI's.
    - ``max_batch_items``, ``max_batch_tokens``: limits of one embeddings request; the
      tokens are estimated as characters / 4.
    - ``max_retries``, ``retry_base_delay``, ``retry_max_delay``, ``retry_max_wait``: retries.
    - ``max_concurrency``: chat requests in flight at once.
    - ``request_kwargs``: more fields for every request (``{'temperature': 0}``).
    """

    model: str = 'text-embedding-3-small'
    task: str = 'embedding'
    prompt: str | None = None
    system: str | None = None
    base_url: str | None = None
    dimensions: int | None = None
    encoding_format: str = 'float'
    request_kwargs: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 256
    max_batch_items: int = 2048
    max_batch_tokens: int = 250_000
    max_concurrency: int = 4
    timeout: float = 60.0
    max_retries: int = 5
    retry_base_delay: float = 1.0
    retry_max_delay: float = 60.0
    retry_max_wait: float = 300.0
    client_: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def wrap(cls, client: Any, *, identifier: str | None = None, **kwargs: Any) -> OpenAIModel:
        """``superduper(OpenAI(...), model=..., task=...)``.

        The client's ``base_url`` is kept (unless it is OpenAI's own), its key is
        used in this process only: a model loaded elsewhere takes the key from
        the configuration.
        """
        if type(client).__name__.startswith('Async'):
            raise ConfigError(
                f'superduper() takes the synchronous client: openai.OpenAI(...), not {type(client).__name__}.'
            )
        base_url = str(getattr(client, 'base_url', '') or '').rstrip('/')
        if base_url and base_url != DEFAULT_BASE_URL:
            kwargs.setdefault('base_url', base_url)
        model = cls(identifier or kwargs.get('model', cls.model), **kwargs)
        model.client_ = client.with_options(max_retries=0, timeout=model.timeout)
        return model

    def __getstate__(self) -> dict[str, Any]:
        # the client holds the API key: it never travels with the model (to workers, to disk)
        return {**self.__dict__, 'client_': None}

    # ----- predicting ------------------------------------------------------------
    def predict(self, X: Any, *args: Any, **kwargs: Any) -> Any:
        self.client()  # a missing key or a bad task is one clear error, not a ledger entry per row
        return super().predict(X, *args, **kwargs)

    def predict_batch(self, inputs: Sequence[Any]) -> list[Any]:
        if self.task == 'embedding':
            return self._embed(inputs)
        if self.task == 'chat':
            return self._chat(inputs)
        raise ConfigError(f'OpenAIModel {self.identifier!r}: task must be one of {TASKS}, got {self.task!r}.')

    def check_from_request(self) -> None:
        """A token holder may not point the server (and its API key) at another address."""
        from superduperdb.base.config import CFG
        from superduperdb.base.exceptions import ComponentNotAllowed

        if self.base_url is not None and self.base_url.rstrip('/') != (CFG.openai.base_url or '').rstrip('/'):
            raise ComponentNotAllowed(
                f'OpenAIModel {self.identifier!r} names base_url {self.base_url!r}: the server would send '
                'its API key there. Leave base_url unset (the server uses CFG.openai.base_url), or add '
                'the model on the server.'
            )

    def client(self) -> Any:
        """The ``openai.OpenAI`` client, built on first use from the configuration."""
        if self.task not in TASKS:
            raise ConfigError(
                f'OpenAIModel {self.identifier!r}: task must be one of {TASKS}, got {self.task!r}.'
            )
        if self.client_ is None:
            from superduperdb.base.config import CFG

            openai = require('openai', extra='openai', what='OpenAI models')
            api_key = CFG.openai.api_key or os.environ.get('OPENAI_API_KEY')
            if not api_key:
                raise ConfigError(
                    f'OpenAIModel {self.identifier!r} needs an API key: set the environment variable '
                    'SUPERDUPERDB_OPENAI__API_KEY (or OPENAI_API_KEY), or [openai] api_key in the '
                    'config file, or CFG.openai.api_key in code. Keys are never stored with the model.'
                )
            base_url = self.base_url or CFG.openai.base_url or None
            self.client_ = openai.OpenAI(
                api_key=api_key, base_url=base_url, max_retries=0, timeout=self.timeout
            )
        return self.client_

    def _embed(self, inputs: Sequence[Any]) -> list[Any]:
        texts = [_text(self, x) for x in inputs]
        extra: dict[str, Any] = {'encoding_format': self.encoding_format, **self.request_kwargs}
        if self.dimensions is not None:
            extra['dimensions'] = self.dimensions
        outputs: list[Any] = []
        for batch in _batches(texts, self.max_batch_items, self.max_batch_tokens):
            response = self._request(
                'embeddings', self.client().embeddings.create, model=self.model, input=batch, **extra
            )
            data = sorted(response.data, key=lambda d: d.index)
            if len(data) != len(batch):
                raise SuperDuperError(
                    f'OpenAIModel {self.identifier!r}: the API returned {len(data)} embeddings for '
                    f'{len(batch)} texts.'
                )
            outputs.extend(_vector(d.embedding) for d in data)
        return outputs

    def _chat(self, inputs: Sequence[Any]) -> list[Any]:
        messages = [self._messages(x) for x in inputs]
        if self.max_concurrency <= 1 or len(messages) == 1:
            return [self._complete(m) for m in messages]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(messages))) as pool:
            return list(pool.map(self._complete, messages))

    def _messages(self, x: Any) -> list[dict[str, str]]:
        if self.prompt is None:
            content = _text(self, x)
        elif isinstance(x, dict):
            content = self.prompt.format(**x)
        elif isinstance(x, tuple):
            content = self.prompt.format(*x)
        else:
            content = self.prompt.format(x, input=x)
        messages = [{'role': 'system', 'content': self.system}] if self.system else []
        return [*messages, {'role': 'user', 'content': content}]

    def _complete(self, messages: list[dict[str, str]]) -> str:
        response = self._request(
            'chat completion',
            self.client().chat.completions.create,
            model=self.model,
            messages=messages,
            **self.request_kwargs,
        )
        return str(response.choices[0].message.content or '')

    # ----- retries -------------------------------------------------------------
    def _request(self, what: str, send: Callable[..., Any], **request: Any) -> Any:
        """``send(**request)``, retried on 408/409/429, 5xx, timeouts and lost connections."""
        openai = require('openai', extra='openai', what='OpenAI models')
        waited = 0.0
        attempt = 0
        while True:
            try:
                return send(**request)
            except openai.APIStatusError as exc:
                if exc.status_code not in RETRY_STATUSES and exc.status_code < 500:
                    raise _failure(self, what, exc, exc.status_code, attempt + 1, retryable=False) from exc
                status: int | None = exc.status_code
                error: Exception = exc
                delay = _retry_after(exc.response.headers)
            except openai.APIConnectionError as exc:  # includes timeouts
                status, error, delay = None, exc, None
            if delay is None:
                delay = min(self.retry_base_delay * 2**attempt, self.retry_max_delay)
            if attempt >= self.max_retries or waited + delay > self.retry_max_wait:
                raise _failure(self, what, error, status, attempt + 1, retryable=True) from error
            logger.info(
                '%s: %s failed (%s); retry %d in %.3g s', self.identifier, what, status, attempt + 1, delay
            )
            _sleep(delay)
            waited += delay
            attempt += 1


def OpenAIEmbedding(  # noqa: N802 - the seed's name, used like a class
    identifier: str | None = None, *, model: str = 'text-embedding-3-small', **kwargs: Any
) -> OpenAIModel:
    """An OpenAI(-compatible) embedding model: ``OpenAIModel(task='embedding')``, named after its
    API model unless ``identifier`` is given. The client is built from ``CFG.openai`` on first use.

    >>> m = OpenAIEmbedding()
    >>> m.identifier, m.task, m.model
    ('text-embedding-3-small', 'embedding', 'text-embedding-3-small')
    """
    return OpenAIModel(identifier or model, model=model, task='embedding', **kwargs)


def _failure(
    model: OpenAIModel, what: str, error: Exception, status: int | None, attempts: int, *, retryable: bool
) -> ServiceError:
    where = str(getattr(model.client_, 'base_url', None) or model.base_url or 'the OpenAI API').rstrip('/')
    problem = f'HTTP {status}' if status is not None else type(error).__name__
    detail = str(getattr(error, 'message', None) or error)[:500].rstrip('.')
    advice = (
        'The service is failing or rate-limiting: try again later (a rerun of predict retries '
        'only the failed rows), or raise max_retries / retry_max_wait.'
        if retryable
        else 'Retrying will not help: check the API key, the model name and the inputs.'
    )
    return ServiceError(
        f'OpenAIModel {model.identifier!r}: {what} request to {where} failed with {problem} '
        f'after {attempts} attempt{"s" if attempts != 1 else ""}: {detail}. {advice}',
        status=status,
        attempts=attempts,
        retryable=retryable,
    )


def _retry_after(headers: Any) -> float | None:
    """Seconds the server asks us to wait (``retry-after-ms`` or ``Retry-After``), if any."""
    value = headers.get('retry-after-ms')
    if value is not None:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get('retry-after')
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _vector(embedding: Any) -> np.ndarray:
    if isinstance(embedding, str):  # encoding_format='base64': little-endian float32
        return np.frombuffer(base64.b64decode(embedding), dtype='<f4').astype(np.float32)
    return np.asarray(embedding, dtype=np.float32)


def _text(model: OpenAIModel, x: Any) -> str:
    if not isinstance(x, str) or not x:
        raise QueryError(
            f'OpenAIModel {model.identifier!r} takes non-empty text, got {type(x).__name__} {str(x)[:50]!r}. '
            'Pick a text column with X=, or give chat a prompt= that formats the input.'
        )
    return x


def _batches(texts: list[str], max_items: int, max_tokens: int) -> Iterator[list[str]]:
    """Consecutive groups of texts within the item limit and the estimated-token limit."""
    batch: list[str] = []
    tokens = 0
    for text in texts:
        estimate = len(text) // 4 + 1
        if batch and (len(batch) >= max_items or tokens + estimate > max_tokens):
            yield batch
            batch, tokens = [], 0
        batch.append(text)
        tokens += estimate
    if batch:
        yield batch
