"""OpenAI and OpenAI-compatible APIs as models: embeddings and chat (needs the ``openai`` extra).

Only settings are stored (model name, task, base URL, batching and retry
limits); the API key never is. The client is built on first use from
``CFG.openai.api_key`` (``SUPERDUPERDB_OPENAI__API_KEY``, falling back to
``OPENAI_API_KEY``) and ``base_url`` (the model's own, else
``CFG.openai.base_url``, i.e. ``SUPERDUPERDB_OPENAI__BASE_URL``), so any
process with the same configuration can load and run the model.

Rate limits (``rate_requests`` and ``rate_tokens`` per ``rate_window`` seconds,
``max_concurrency`` requests in flight) are one budget shared by every process that runs
the model over a database (local, Dask workers, the server, ``cdc``): kept in the metadata
store, or in Redis when ``CFG.openai.budget`` names it (see :mod:`superduperdb.base.budget`).
Each request reserves its slot before it is sent; embedding batches are cut to fit the token
limit. This module's retry policy is the only one (the ``openai`` client's own retries are
off): requests that fail with HTTP 408, 409, 429 or 5xx, time out, or cannot connect are
retried with exponential backoff (``retry_base_delay * 2**attempt``, capped at
``retry_max_delay``), honouring the server's ``Retry-After`` (a 429's pause holds for every
process sharing the budget); at most ``max_retries`` times and ``retry_max_wait`` seconds of
waiting in all per request. Other errors (a bad key, a bad request) are not retried.
Tokens, requests, errors and cost are counted in ``usage_`` (see :class:`Usage`).

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
import contextlib
import email.utils
import functools
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from superduperdb.base._deps import require
from superduperdb.base.budget import Budget, Limits, LocalRecord, Record
from superduperdb.base.exceptions import ConfigError, QueryError, ServiceError, SuperDuperError
from superduperdb.components.model import Model
from superduperdb.models.tokens import counter

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
    - ``max_batch_items``, ``max_batch_tokens``: limits of one embeddings request (tokens
      counted with ``tokenizer``: see :mod:`superduperdb.models.tokens`; None estimates
      4 characters a token).
    - ``rate_requests``, ``rate_tokens``: the API's limits per ``rate_window`` seconds (60:
      per minute, as OpenAI states them); ``max_concurrency``: requests in flight at once
      (across processes when a rate limit is set). ``budget``: the name of the shared budget
      (None: the API model at its base URL; models that share one API key's limits name one).
    - ``max_retries``, ``retry_base_delay``, ``retry_max_delay``, ``retry_max_wait``: retries.
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
    rate_requests: int | None = None
    rate_tokens: int | None = None
    rate_window: float = 60.0
    budget: str | None = None
    tokenizer: str | None = None
    timeout: float = 60.0
    max_retries: int = 5
    retry_base_delay: float = 1.0
    retry_max_delay: float = 60.0
    retry_max_wait: float = 300.0
    client_: Any = field(default=None, repr=False, compare=False)
    #: makes the shared record of a budget by name: set by predict over a query (the database's)
    budget_records_: Callable[[str], Record] | None = field(default=None, repr=False, compare=False)
    budget_: Budget | None = field(default=None, repr=False, compare=False)
    usage_: Usage = field(default_factory=lambda: Usage(), repr=False, compare=False)

    shares_budget: ClassVar[bool] = True

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
        # the client holds the API key: it never travels with the model (to workers, to disk);
        # the budget and the usage belong to this process
        return {**self.__dict__, 'client_': None, 'budget_records_': None, 'budget_': None, 'usage_': Usage()}

    # ----- limits and usage ----------------------------------------------------------
    def limits(self) -> Limits:
        """The API's limits as set on this model."""
        return Limits(
            requests=self.rate_requests,
            tokens=self.rate_tokens,
            concurrency=self.max_concurrency if self.rate_requests or self.rate_tokens else None,
            window=self.rate_window,
        )

    def rate_limits(self) -> dict[str, Any] | None:
        return {'requests': self.rate_requests, 'tokens': self.rate_tokens, 'window': self.rate_window}

    def budget_name(self) -> str:
        """The name of the budget this model's requests count against."""
        if self.budget:
            return self.budget
        from superduperdb.base.config import CFG

        where = (self.base_url or CFG.openai.base_url or DEFAULT_BASE_URL).rstrip('/')
        return f'{self.model}@{hashlib.sha256(where.encode()).hexdigest()[:12]}'

    def use_budget_records(self, records: Callable[[str], Record] | None) -> None:
        """Keep this model's budget in the records ``records`` makes (the database's, shared by
        every process that opens it); None: in this process."""
        self.budget_records_, self.budget_ = records, None

    def shared_budget(self) -> Budget:
        """The budget requests reserve their slots in (made on first use)."""
        if self.budget_ is None:
            limits = self.limits()
            record: Record
            if limits.any and self.budget_records_ is not None:
                record = self.budget_records_(self.budget_name())
            elif limits.any and _redis_budget():
                from superduperdb.base.budget import RedisRecord
                from superduperdb.base.config import CFG

                record = RedisRecord(CFG.openai.budget, f'_superduper_budget:{self.budget_name()}')
            else:
                record = LocalRecord()
            self.budget_ = Budget(record, limits, lease_ttl=self.timeout + 5, sleep=lambda s: _sleep(s))
        return self.budget_

    def take_usage(self) -> dict[str, Any] | None:
        """What this model's requests used since the last call (with their cost, None when no
        price is configured), reset to zero."""
        usage = self.usage_.take()
        usage['cost'] = price_of(self.model, usage['input_tokens'], usage['output_tokens'])
        return usage

    def tokens_and_requests(self, inputs: Sequence[Any]) -> tuple[int, int]:
        """The tokens and the requests ``predict_batch(inputs)`` would send (for estimates)."""
        if self.task != 'embedding':
            return sum(self._tokens_or_zero(x) for x in inputs), len(inputs)
        most = self.limits().tokens
        max_tokens = self.max_batch_tokens
        if most is not None:
            max_tokens = min(
                max_tokens, Budget(LocalRecord(), self.limits()).max_request_tokens() or max_tokens
            )
        texts = [x for x in inputs if isinstance(x, str) and x]
        batches = list(_batches(texts, self.max_batch_items, max_tokens, counter(self.tokenizer)))
        return sum(n for _, n in batches), len(batches)

    def _tokens_or_zero(self, x: Any) -> int:
        try:
            return self.tokens_of(x)
        except (QueryError, KeyError, IndexError, ValueError):  # the row would fail: nothing sent
            return 0

    def cost_of(self, input_tokens: int, output_tokens: int = 0) -> float | None:
        """USD for the tokens at ``CFG.openai.prices`` (None: no price set for ``model``)."""
        return price_of(self.model, input_tokens, output_tokens)

    def seconds_at_limit(self, requests: int, tokens: int) -> float | None:
        """Seconds ``requests`` requests of ``tokens`` tokens take at the rate limits (None: none set)."""
        if self.rate_requests is None and self.rate_tokens is None:
            return None
        budget = Budget(LocalRecord(), self.limits())
        return round(max(requests * budget.request_interval, tokens * budget.token_interval), 3)

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as ``tokenizer`` counts them."""
        return counter(self.tokenizer)(text)

    def tokens_of(self, x: Any) -> int:
        """Tokens one input sends (for chat: its messages, 3 a message and 3 for the reply as
        OpenAI documents, plus ``max_tokens`` of ``request_kwargs`` when set)."""
        if self.task == 'embedding':
            return self.count_tokens(_text(self, x))
        messages = self._messages(x)
        answer = int(
            self.request_kwargs.get('max_tokens') or self.request_kwargs.get('max_completion_tokens') or 0
        )
        return sum(self.count_tokens(m['content']) + 3 for m in messages) + 3 + answer

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

        allowed = {u.rstrip('/') for u in [CFG.openai.base_url or '', *CFG.openai.allowed_base_urls]}
        if self.base_url is not None and self.base_url.rstrip('/') not in allowed:
            raise ComponentNotAllowed(
                f'OpenAIModel {self.identifier!r} names base_url {self.base_url!r}: the server would send '
                'its API key there. Leave base_url unset (the server uses CFG.openai.base_url), add '
                'the model on the server, or let the operator allow the address (openai.allowed_base_urls).'
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
            # the hook runs as the request leaves: a request late for its slot takes a new one
            http = _http_client(openai)(timeout=self.timeout, event_hooks={'request': [_on_send]})
            self.client_ = openai.OpenAI(
                api_key=api_key, base_url=base_url, max_retries=0, timeout=self.timeout, http_client=http
            )
        return self.client_

    def _embed(self, inputs: Sequence[Any]) -> list[Any]:
        texts = [_text(self, x) for x in inputs]
        extra: dict[str, Any] = {'encoding_format': self.encoding_format, **self.request_kwargs}
        if self.dimensions is not None:
            extra['dimensions'] = self.dimensions
        budget = self.shared_budget()
        most = budget.max_request_tokens()
        max_tokens = self.max_batch_tokens if most is None else min(most, self.max_batch_tokens)
        count = counter(self.tokenizer)
        batches = list(_batches(texts, self.max_batch_items, max_tokens, count))

        def send(batch: tuple[list[str], int]) -> list[Any]:
            response = self._request(
                'embeddings',
                self.client().embeddings.create,
                batch[1],
                model=self.model,
                input=batch[0],
                **extra,
            )
            data = sorted(response.data, key=lambda d: d.index)
            if len(data) != len(batch[0]):
                raise SuperDuperError(
                    f'OpenAIModel {self.identifier!r}: the API returned {len(data)} embeddings for '
                    f'{len(batch[0])} texts.'
                )
            return [_vector(d.embedding) for d in data]

        if self.max_concurrency <= 1 or len(batches) == 1:
            return [v for batch in batches for v in send(batch)]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(batches))) as pool:
            return [v for vectors in pool.map(send, batches) for v in vectors]

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
        tokens = sum(self.count_tokens(m['content']) + 3 for m in messages) + 3
        response = self._request(
            'chat completion',
            self.client().chat.completions.create,
            tokens,
            model=self.model,
            messages=messages,
            **self.request_kwargs,
        )
        return str(response.choices[0].message.content or '')

    # ----- retries -------------------------------------------------------------
    def _request(self, what: str, send: Callable[..., Any], tokens: int, **request: Any) -> Any:
        """``send(**request)`` in a reserved slot of the budget, retried on 408/409/429, 5xx,
        timeouts and lost connections (the one retry policy: the client's own is off)."""
        openai = require('openai', extra='openai', what='OpenAI models')
        budget = self.shared_budget()
        usage = self.usage_
        waited = 0.0
        attempt = 0
        while True:
            _sending.lease, _sending.budget = budget.acquire(tokens), budget
            try:
                response = send(**request)
            except openai.APIStatusError as exc:
                budget.release(_sending.lease, 0)
                usage.add(requests=1, errors=1, rate_limited=int(exc.status_code == 429))
                if exc.status_code not in RETRY_STATUSES and exc.status_code < 500:
                    raise _failure(self, what, exc, exc.status_code, attempt + 1, retryable=False) from exc
                status: int | None = exc.status_code
                error: Exception = exc
                delay = _retry_after(exc.response.headers)
            except openai.APIConnectionError as exc:  # includes timeouts
                budget.release(_sending.lease, 0)
                usage.add(requests=1, errors=1)
                status, error, delay = None, exc, None
            except BaseException:
                budget.release(_sending.lease, 0)
                raise
            else:
                used = getattr(response, 'usage', None)
                prompt = int(getattr(used, 'prompt_tokens', 0) or 0) if used is not None else tokens
                answer = int(getattr(used, 'completion_tokens', 0) or 0) if used is not None else 0
                budget.release(_sending.lease, prompt + answer)
                usage.add(requests=1, input_tokens=prompt, output_tokens=answer, waited=_sending.lease.waited)
                return response
            shared = delay is not None or status == 429  # the server asks every caller to pause
            if delay is None:
                delay = min(self.retry_base_delay * 2**attempt, self.retry_max_delay)
            if attempt >= self.max_retries or waited + delay > self.retry_max_wait:
                raise _failure(self, what, error, status, attempt + 1, retryable=True) from error
            logger.info(
                '%s: %s failed (%s); retry %d in %.3g s', self.identifier, what, status, attempt + 1, delay
            )
            if shared:
                budget.pause(delay)  # the next acquire sleeps until the pause is over
            else:
                _sleep(delay)
            waited += delay
            attempt += 1


@dataclass
class Usage:
    """What a model's requests used in this process: counted as they are answered."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    errors: int = 0
    rate_limited: int = 0
    waited: float = 0.0
    lock_: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: float) -> None:
        with self.lock_:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def take(self) -> dict[str, Any]:
        """The counts so far, reset to zero."""
        with self.lock_:
            out = {
                k: getattr(self, k)
                for k in ('requests', 'input_tokens', 'output_tokens', 'errors', 'rate_limited')
            }
            out['waited'] = round(self.waited, 3)
            self.requests = self.input_tokens = self.output_tokens = self.errors = self.rate_limited = 0
            self.waited = 0.0
        return out


def price_of(model: str, input_tokens: int, output_tokens: int = 0) -> float | None:
    """USD for the tokens at ``CFG.openai.prices`` (None: no price configured for ``model``)."""
    from superduperdb.base.config import CFG, parse_prices

    price = parse_prices(CFG.openai.prices).get(model)
    if price is None:
        return None
    return (input_tokens * price[0] + output_tokens * price[1]) / 1e6


#: the lease of the request this thread is sending, for :func:`_on_send`
_sending = threading.local()


def _on_send(request: Any) -> None:
    """An HTTP request hook: the request leaves now; if it is late for its slot, take another."""
    budget = getattr(_sending, 'budget', None)
    if budget is not None:
        _sending.lease = budget.on_time(_sending.lease)


@functools.cache
def _http_client(openai: Any) -> type:
    """The SDK's HTTP client class, closing its connections when dropped (as the SDK's own does)."""

    class HttpClient(openai.DefaultHttpxClient):  # type: ignore[misc, name-defined]
        def __del__(self) -> None:
            with contextlib.suppress(Exception):
                self.close()

    return HttpClient


def _redis_budget() -> bool:
    from superduperdb.base.config import CFG

    return CFG.openai.budget != 'database'


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


def _batches(
    texts: list[str], max_items: int, max_tokens: int, count: Callable[[str], int]
) -> Iterator[tuple[list[str], int]]:
    """Consecutive groups of texts within the item limit and the token limit, with their tokens."""
    batch: list[str] = []
    tokens = 0
    for text in texts:
        n = count(text)
        if batch and (len(batch) >= max_items or tokens + n > max_tokens):
            yield batch, tokens
            batch, tokens = [], 0
        batch.append(text)
        tokens += n
    if batch:
        yield batch, tokens
