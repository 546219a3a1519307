"""HTML for notebooks: Documents, ``db.status()`` and ``db.jobs()`` show as tables.

Images become small thumbnails, arrays and tensors a one-line summary (dtype, shape, the
first values), long text and lists are cut: a row of a 384-d embedding renders in a few
hundred bytes, never the whole vector.

>>> print(value_html('a <b>'))
a &lt;b&gt;
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

THUMBNAIL = 64  # pixels, the longer side
_TEXT = 200  # characters of a string shown
_ITEMS = 8  # items of a list, values of an array shown


def value_html(value: Any) -> str:
    """One value as HTML (escaped, summarised)."""
    from superduperdb.base.document import Encodable

    if isinstance(value, Encodable):
        if value.pending:
            return f'<i>not downloaded yet</i>: {_text(value.uri or "")}'
        return f'<span title="{html.escape(value.encoder.identifier)}">{value_html(value.x)}</span>'
    module = type(value).__module__
    if module.startswith('PIL.') and hasattr(value, 'thumbnail'):
        return _image(value)
    if (
        hasattr(value, 'shape')
        and hasattr(value, 'dtype')
        and (module == 'numpy' or module.startswith('torch'))
    ):
        return _array(value)
    if isinstance(value, Mapping):
        return table_html([{'key': k, 'value': v} for k, v in value.items()], header=False)
    if isinstance(value, (list, tuple)):
        shown = ', '.join(value_html(v) for v in value[:_ITEMS])
        more = f', … ({len(value)} items)' if len(value) > _ITEMS else ''
        return f'[{shown}{more}]'
    if isinstance(value, (bytes, bytearray)):
        return f'<i>{len(value)} bytes</i>'
    return _text(value if isinstance(value, str) else repr(value))


def document_html(doc: Mapping[str, Any]) -> str:
    """A document as a two-column table; its outputs as ``_outputs.<key>.<model>`` rows."""
    rows: list[dict[str, Any]] = []
    for key, value in doc.items():
        if key == '_outputs' and isinstance(value, Mapping):
            for k, per_model in value.items():
                for model, output in per_model.items() if isinstance(per_model, Mapping) else []:
                    rows.append({'field': f'_outputs.{k}.{model}', 'value': output})
        else:
            rows.append({'field': key, 'value': value})
    return table_html(rows, header=False)


def table_html(rows: Sequence[Mapping[str, Any]], *, header: bool = True) -> str:
    """Rows of dicts as an HTML table (the columns of the first row)."""
    if not rows:
        return '<i>none</i>'
    columns = list(rows[0])
    head = '<tr>' + ''.join(f'<th>{html.escape(str(c))}</th>' for c in columns) + '</tr>' if header else ''
    body = ''.join(
        '<tr>'
        + ''.join(
            f'<th style="text-align:left">{value_html(row.get(c))}</th>'
            if not header and i == 0
            else f'<td style="text-align:left">{value_html(row.get(c))}</td>'
            for i, c in enumerate(columns)
        )
        + '</tr>'
        for row in rows
    )
    return f'<table>{head}{body}</table>'


def _text(text: str) -> str:
    cut = text if len(text) <= _TEXT else text[:_TEXT] + f'… ({len(text)} characters)'
    return html.escape(cut)


def array_summary(value: Any) -> str:
    """An array or tensor in one line: dtype, shape and its first values (plain text)."""
    import numpy as np

    if not isinstance(value, np.ndarray):  # a torch tensor
        value = value.detach().cpu().numpy()
    flat = value.reshape(-1)[:_ITEMS]
    shown = np.array2string(flat, precision=3, separator=', ', max_line_width=10_000).strip('[]')
    more = ', …' if value.size > _ITEMS else ''
    return f'{value.dtype} {tuple(value.shape)} [{shown}{more}]'


def thumbnail_url(image: Any, size: int = THUMBNAIL) -> tuple[str, str]:
    """A PIL image as a PNG thumbnail ``data:`` URL (longer side ``size``), and its title
    (``'640x480 RGB'``)."""
    thumbnail = image.copy()
    thumbnail.thumbnail((size, size))
    if thumbnail.mode not in ('RGB', 'RGBA', 'L'):
        thumbnail = thumbnail.convert('RGBA')
    buffer = io.BytesIO()
    thumbnail.save(buffer, format='PNG')
    data = base64.b64encode(buffer.getvalue()).decode()
    w, h = image.size
    return f'data:image/png;base64,{data}', f'{w}x{h} {image.mode}'


def _array(value: Any) -> str:
    return html.escape(array_summary(value))


def _image(image: Any) -> str:
    url, title = thumbnail_url(image)
    w, h = image.size
    return f'<img src="{url}" title="{html.escape(title)}" alt="image {w}x{h}"/>'
