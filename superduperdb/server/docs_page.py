"""The server's API docs as one self-contained HTML page (``GET /docs``).

No JavaScript, no stylesheet or font from a CDN: the page is built from the OpenAPI spec
on the server, so it works offline and behind the same token as the API.

>>> html = render({'info': {'title': 'x', 'version': '1'}, 'paths': {'/health': {'get': {'summary': 'Up?'}}}})
>>> '<code>/health</code>' in html and 'http' not in html.split('<body>')[0]
True
"""

from __future__ import annotations

import html
import json
from typing import Any

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}
h2{margin-top:2rem;border-bottom:1px solid #ddd}
.op{margin:1rem 0;padding:.5rem 1rem;border-left:4px solid #4a7;background:#f7f7f7}
.m{font-weight:bold;text-transform:uppercase;margin-right:.5rem}
pre{background:#fff;border:1px solid #eee;padding:.5rem;overflow:auto;font-size:13px}
"""


def render(spec: dict[str, Any]) -> str:
    """The HTML page for an OpenAPI ``spec``."""
    info = spec.get('info', {})
    title = html.escape(f'{info.get("title", "API")} {info.get("version", "")}')
    parts = [
        f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>',
        f'<style>{_STYLE}</style></head><body>',
        f'<h1>{title}</h1><p>{html.escape(info.get("description", ""))}</p>',
        '<p>The machine-readable spec: <code>GET /openapi.json</code> (with the same token).</p>',
    ]
    for path, operations in spec.get('paths', {}).items():
        for method, op in operations.items():
            parts.append('<div class="op">')
            parts.append(f'<span class="m">{html.escape(method)}</span><code>{html.escape(path)}</code>')
            parts.append(f'<p>{html.escape(op.get("summary", ""))}</p>')
            if op.get('description'):
                parts.append(f'<p>{html.escape(op["description"])}</p>')
            params = op.get('parameters', [])
            if params:
                rows = ''.join(
                    f'<li><code>{html.escape(p.get("name", ""))}</code> ({html.escape(p.get("in", ""))})'
                    f'{" required" if p.get("required") else ""}</li>'
                    for p in params
                )
                parts.append(f'<ul>{rows}</ul>')
            body = op.get('requestBody', {}).get('content', {}).get('application/json', {}).get('schema')
            if body:
                parts.append(f'<pre>{html.escape(json.dumps(body, indent=1))}</pre>')
            parts.append('</div>')
    schemas = spec.get('components', {}).get('schemas', {})
    if schemas:
        parts.append('<h2>Schemas</h2>')
        for name, schema in schemas.items():
            parts.append(
                f'<h3>{html.escape(name)}</h3><pre>{html.escape(json.dumps(schema, indent=1))}</pre>'
            )
    parts.append('</body></html>')
    return ''.join(parts)
