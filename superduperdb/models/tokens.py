"""Counting the tokens of text for API models: for rate limits, batches, estimates and cost.

``tokenizer`` names how (an :class:`~superduperdb.models.openai.OpenAIModel` field):

- ``None``: an estimate, one token per 4 characters (OpenAI's documented rule of thumb for
  English text, "1 token ~= 4 chars"; code and other languages run higher): no download,
  no dependency. On English prose it is typically within 10-25% of a real tokenizer's count.
- ``'tiktoken:<encoding>'`` (``'tiktoken:cl100k_base'``, ``'tiktoken:o200k_base'``): OpenAI's
  tokenizer; needs ``tiktoken`` and its encoding file (tiktoken downloads it on first use, or
  reads it from ``TIKTOKEN_CACHE_DIR``).
- a path to a Hugging Face ``tokenizer.json`` (or a directory holding one), with the optional
  prefix ``'hf:'``: the tokenizer of a local model, as an OpenAI-compatible server that serves
  it (vLLM, llama.cpp, Ollama) counts; needs ``tokenizers``.

>>> counter('estimate')('one two three four')
5
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

from superduperdb.base._deps import require
from superduperdb.base.exceptions import ConfigError, MissingDependencyError

Counter = Callable[[str], int]


def estimate(text: str) -> int:
    """Tokens of ``text`` estimated as characters / 4."""
    return len(text) // 4 + 1


@functools.lru_cache(maxsize=16)
def counter(tokenizer: str | None) -> Counter:
    """The token counter ``tokenizer`` names (see the module docstring)."""
    if tokenizer in (None, '', 'estimate'):
        return estimate
    assert tokenizer is not None
    if tokenizer.startswith('tiktoken:'):
        try:
            import tiktoken
        except ImportError as exc:  # not in an extra: it downloads its encodings at run time
            raise MissingDependencyError(
                f"tokenizer {tokenizer!r} needs 'tiktoken', which is not installed. Install it with: "
                'pip install tiktoken (it downloads the encoding on first use, or reads it from '
                'TIKTOKEN_CACHE_DIR), or set tokenizer=None to estimate 4 characters a token.',
                package='tiktoken',
                extra='',
            ) from exc
        encoding = tiktoken.get_encoding(tokenizer.partition(':')[2])
        return lambda text: len(encoding.encode(text, disallowed_special=()))
    path = tokenizer.removeprefix('hf:')
    if os.path.isdir(path):
        path = os.path.join(path, 'tokenizer.json')
    if not os.path.isfile(path):
        raise ConfigError(
            f'tokenizer {tokenizer!r} is neither "tiktoken:<encoding>" nor the path of a tokenizer.json '
            '(or a directory holding one): give one of those, or None to estimate 4 characters a token.'
        )
    tokenizers = require('tokenizers', extra='transformers', what='Counting tokens with a local tokenizer')
    loaded = tokenizers.Tokenizer.from_file(path)
    loaded.no_truncation()  # count every token, as the server does before refusing a long input
    loaded.no_padding()
    return lambda text: len(loaded.encode(text).ids)
