"""The "house" of the package: a static survey of superduperdb/ for a planned redesign.

Every ``.py`` file under ``superduperdb/`` is parsed with ``ast`` (nothing is imported) and
five things are measured:

1. Runtime import cycles: the graph of ``import x`` / ``from x import y`` statements that name
   a superduperdb module, leaving out those under ``if TYPE_CHECKING:``. Relative imports are
   resolved, and ``from package import submodule`` points at the submodule. Two graphs:
   module-level imports only, and module-level plus lazy (function-level) imports. For each,
   the strongly connected components with more than one module (iterative Kosaraju).
   An edge goes to the module named only; the parent packages' ``__init__`` that Python also
   runs are not added.
2. Imports "back up": runtime imports (module-level or lazy) from a module in a lower layer to
   a module in a strictly higher layer of the target order in ``LAYERS``.
3. The ten largest modules by line count.
4. Uses of private ``Datalayer`` members outside ``superduperdb/datalayer/datalayer.py``:
   any ``<expr>._name`` where ``_name`` is a ``self._name`` assigned, or a ``def _name``, in
   class ``Datalayer`` (a heuristic: the object is not checked to be a Datalayer).
5. Backend probes, ``hasattr(``/``getattr(`` whose first argument mentions ``backend``, and
   ``dialect ==`` comparisons, per module.

Run from the repository root:

    .venv/bin/python tests/house.py [--json]
"""

from __future__ import annotations

import argparse
import ast
import json
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = 'superduperdb'

# Target layer order, lowest first: a folder (or a top-level file) name -> its layer.
LAYERS = {
    'base': 0,
    'query': 1,
    'backends': 2,
    'components': 3,
    'models': 3,
    'encoders': 3,
    'store': 4,
    'jobs': 5,
    'predict': 6,
    'vector_search': 6,
    'freshness': 7,
    'datalayer': 8,
    'connect': 9,
    'server': 10,
    'ui': 10,
    'cli': 12,
    'demo': 12,
    '__init__': 12,
    'superduper': 12,
    '__main__': 12,
}
DATALAYER_FILE = 'superduperdb.datalayer.datalayer'


def load_modules() -> dict[str, tuple[Path, ast.Module]]:
    """Parse every .py file of the package: dotted module name -> (path, tree)."""
    modules = {}
    for path in sorted((ROOT / PACKAGE).rglob('*.py')):
        parts = list(path.relative_to(ROOT).with_suffix('').parts)
        if parts[-1] == '__init__' and len(parts) > 1:
            parts = parts[:-1]
        modules['.'.join(parts)] = (path, ast.parse(path.read_text(), str(path)))
    return modules


def is_type_checking(test: ast.expr) -> bool:
    """True for the test of ``if TYPE_CHECKING:`` or ``if typing.TYPE_CHECKING:``."""
    return (isinstance(test, ast.Name) and test.id == 'TYPE_CHECKING') or (
        isinstance(test, ast.Attribute) and test.attr == 'TYPE_CHECKING'
    )


def runtime_imports(tree: ast.Module) -> list[tuple[ast.stmt, bool]]:
    """Import statements that run at import or call time, each with ``lazy`` (inside a def)."""
    found = []

    def visit(nodes, lazy: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and is_type_checking(node.test):
                visit(node.orelse, lazy)  # the ``else:`` of ``if TYPE_CHECKING:`` does run
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append((node, lazy))
            visit(
                ast.iter_child_nodes(node), lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            )

    visit(tree.body, False)
    return found


def targets(module: str, is_package: bool, node: ast.stmt, known: set[str]) -> set[str]:
    """The superduperdb modules an import statement in ``module`` refers to."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        return {n for n in names if n in known}
    base = node.module or ''
    if node.level:
        package = module.split('.') if is_package else module.split('.')[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = '.'.join(package + ([base] if base else []))
    found = set()
    for alias in node.names:
        if f'{base}.{alias.name}' in known:
            found.add(f'{base}.{alias.name}')
        elif base in known:
            found.add(base)
    return found


def import_edges(modules: dict) -> list[tuple[str, str, bool]]:
    """Every runtime import edge (importer, imported, lazy), self-imports left out."""
    known = set(modules)
    edges = set()
    for name, (path, tree) in modules.items():
        is_package = path.name == '__init__.py'
        for node, lazy in runtime_imports(tree):
            for target in targets(name, is_package, node, known):
                if target != name:
                    edges.add((name, target, lazy))
    return sorted(edges)


def cycles(nodes: list[str], edges: list[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (iterative Kosaraju), largest first."""
    forward, backward = defaultdict(list), defaultdict(list)
    for a, b in edges:
        forward[a].append(b)
        backward[b].append(a)
    order, seen = [], set()
    for start in nodes:  # first pass: record nodes by finishing time
        if start in seen:
            continue
        seen.add(start)
        stack = [(start, iter(forward[start]))]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                order.append(node)
            elif child not in seen:
                seen.add(child)
                stack.append((child, iter(forward[child])))
    components, assigned = [], set()
    for start in reversed(order):  # second pass: on the reversed graph
        if start in assigned:
            continue
        assigned.add(start)
        component, stack = [], [start]
        while stack:
            node = stack.pop()
            component.append(node)
            for parent in backward[node]:
                if parent not in assigned:
                    assigned.add(parent)
                    stack.append(parent)
        if len(component) > 1:
            components.append(sorted(component))
    return sorted(components, key=lambda c: (-len(c), c))


def layer(module: str) -> tuple[str, int | None]:
    """The folder (or top-level file) of a module and its layer, None if it has no layer."""
    parts = module.split('.')
    place = parts[1] if len(parts) > 1 else '__init__'
    return place, LAYERS.get(place)


def back_up(edges: list[tuple[str, str, bool]]) -> list[str]:
    """Imports from a lower layer to a strictly higher one, as 'importer -> imported (kind)'."""
    found = []
    for a, b, lazy in edges:
        (place_a, layer_a), (place_b, layer_b) = layer(a), layer(b)
        if place_a == place_b or layer_a is None or layer_b is None:
            continue
        if layer_a < layer_b:
            found.append(f'{a} -> {b} ({"lazy" if lazy else "module-level"})')
    return found


def private_members(node: ast.AST) -> set[str]:
    """Private names defined under ``node``: ``def _x`` in a class body, ``self._x = ...``."""
    names = set()
    for n in ast.walk(node):
        if isinstance(n, ast.ClassDef):
            names |= {f.name for f in n.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}
        stored = isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)
        if stored and isinstance(n.value, ast.Name) and n.value.id == 'self':
            names.add(n.attr)
    return {n for n in names if n.startswith('_') and not n.startswith('__')}


def datalayer_private_uses(modules: dict) -> dict[str, dict]:
    """Per private Datalayer member: the other modules that access it (with counts), and the
    other modules that define a private member of that name themselves (so may mean their own)."""
    tree = modules[DATALAYER_FILE][1]
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == 'Datalayer')
    private = private_members(cls)
    uses = {n: {'uses': Counter(), 'also_defined_in': []} for n in sorted(private)}
    for name, (_, other) in modules.items():
        if name == DATALAYER_FILE:
            continue
        for member in private & private_members(other):
            uses[member]['also_defined_in'].append(name)
        for node in ast.walk(other):
            if isinstance(node, ast.Attribute) and node.attr in private:
                uses[node.attr]['uses'][name] += 1
    return {m: {'uses': dict(u['uses']), 'also_defined_in': u['also_defined_in']} for m, u in uses.items()}


def probes(modules: dict) -> dict[str, dict[str, int]]:
    """Per module, backend hasattr/getattr probes and ``dialect ==`` comparisons."""
    result = {}
    for name, (_, tree) in modules.items():
        count = Counter()
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ('hasattr', 'getattr')
                and node.args
                and 'backend' in ast.unparse(node.args[0])
            ):
                count['backend_probes'] += 1
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                for op, left, right in zip(node.ops, sides, sides[1:]):
                    if isinstance(op, ast.Eq) and 'dialect' in ast.unparse(left) + ast.unparse(right):
                        count['dialect_eq'] += 1
        if count:
            result[name] = {'backend_probes': count['backend_probes'], 'dialect_eq': count['dialect_eq']}
    return result


def measure() -> dict:
    """All the measurements, as one JSON-ready dict."""
    modules = load_modules()
    edges = import_edges(modules)
    module_level = sorted({(a, b) for a, b, lazy in edges if not lazy})
    everything = sorted({(a, b) for a, b, _ in edges})
    # An import that is both module-level and lazy somewhere counts once, as module-level.
    eager = set(module_level)
    edges = [(a, b, lazy) for a, b, lazy in edges if not (lazy and (a, b) in eager)]
    lines = {name: len(path.read_text().splitlines()) for name, (path, _) in modules.items()}
    uses = datalayer_private_uses(modules)
    per_module = probes(modules)
    return {
        'modules': len(modules),
        'cycles_module_level': cycles(list(modules), module_level),
        'cycles_with_lazy': cycles(list(modules), everything),
        'back_up_imports': back_up(edges),
        'largest_modules': sorted(lines.items(), key=lambda kv: -kv[1])[:10],
        'datalayer_private_uses': uses,
        'datalayer_private_total': sum(sum(u['uses'].values()) for u in uses.values()),
        'datalayer_private_unambiguous': sum(
            sum(u['uses'].values()) for u in uses.values() if not u['also_defined_in']
        ),
        'backend_probes_total': sum(m['backend_probes'] for m in per_module.values()),
        'dialect_eq_total': sum(m['dialect_eq'] for m in per_module.values()),
        'probes_per_module': dict(sorted(per_module.items(), key=lambda kv: -sum(kv[1].values()))[:10]),
    }


def report(data: dict) -> str:
    """The measurements as plain text."""
    out = [f'superduperdb house: {data["modules"]} modules']
    for key, title in (
        ('cycles_module_level', 'a, module-level imports'),
        ('cycles_with_lazy', 'b, module-level + lazy imports'),
    ):
        comps = data[key]
        out.append(
            f'\n1{title[0]}. Import cycles, {title[3:]}: {len(comps)} cycle(s), largest '
            f'{len(comps[0]) if comps else 0} modules'
        )
        for comp in comps:
            out.append(f'   [{len(comp)}] ' + ', '.join(comp))
    out.append(f'\n2. Imports back up the layer order: {len(data["back_up_imports"])}')
    out += [f'   {line}' for line in data['back_up_imports']]
    out.append('\n3. Largest modules (lines)')
    out += [f'   {n:6d}  {name}' for name, n in data['largest_modules']]
    out.append(
        f'\n4. Private Datalayer members used outside datalayer.py: '
        f'{data["datalayer_private_total"]} (heuristic: any `<expr>._name` counts); '
        f'{data["datalayer_private_unambiguous"]} of names no other module defines'
    )
    ranked = sorted(data['datalayer_private_uses'].items(), key=lambda kv: -sum(kv[1]['uses'].values()))
    for member, u in ranked:
        if u['uses']:
            also = len(u['also_defined_in'])
            note = f' [ambiguous: {also} other module(s) define {member}]' if also else ''
            out.append(f'   {member}: {sum(u["uses"].values())} ({", ".join(sorted(u["uses"]))}){note}')
    out.append(
        f'\n5. Backend probes (hasattr/getattr on *backend*): {data["backend_probes_total"]}, '
        f'`dialect ==`: {data["dialect_eq_total"]}; top 10 modules'
    )
    out += [
        f'   {m["backend_probes"]:4d} {m["dialect_eq"]:4d}  {name}'
        for name, m in data['probes_per_module'].items()
    ]
    return '\n'.join(out)


def main() -> None:
    """Parse the arguments, measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--json', action='store_true', help='print a JSON object instead')
    data = measure()
    print(json.dumps(data, indent=2) if parser.parse_args().json else report(data))


if __name__ == '__main__':
    main()
