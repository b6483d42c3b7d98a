"""Imports inside apollo_jax go one way: no module imports another that imports it back.

Read from the source with ast (nothing is imported), counting imports at any depth: a cycle
hidden inside a function still means two modules that cannot be understood, or moved, apart.
The one exception is a module's ``if __name__ == "__main__":`` block: it runs only when the
file is the ``__main__`` script (``python -m apollo_jax.interop``), never when it is imported.
"""

import ast

from tests.conftest import REPO

PACKAGE = "apollo_jax"


def modules() -> dict[str, ast.Module]:
  """Every module of the package by dotted name (a package by its own name)."""
  out = {}
  for path in sorted((REPO / PACKAGE).rglob("*.py")):
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
      parts.pop()
    out[".".join(parts)] = ast.parse(path.read_text(), str(path))
  return out


def _is_main_guard(node: ast.stmt) -> bool:
  return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
          and ast.unparse(node.test) in ('__name__ == "__main__"', "__name__ == '__main__'"))


def imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
  """The package's modules that ``name`` imports anywhere in its body."""
  is_package = any(k.startswith(name + ".") for k in known)
  found = set()
  body = [n for n in tree.body if not _is_main_guard(n)]
  for node in (n for top in body for n in ast.walk(top)):
    if isinstance(node, ast.Import):
      found |= {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative: resolved against this module's package
        anchor = name.split(".") if is_package else name.split(".")[:-1]
        anchor = anchor[:len(anchor) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      # `from pkg import sub` imports the submodule pkg.sub, `from pkg import name` pkg itself.
      found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
  # `import a.b.c` binds the deepest module we know of.
  resolved = set()
  for mod in found:
    while mod and mod not in known:
      mod = mod.rpartition(".")[0]
    if mod and mod != name:
      resolved.add(mod)
  return resolved


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle as a path [a, b, ..., a], or None (depth-first search, three colours)."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph[node]):
      if state.get(nxt) == "open":
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state and (cycle := visit(nxt)):
        return cycle
    state[node] = "done"
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in state and (cycle := visit(node)):
      return cycle
  return None


def test_the_cycle_finder_finds_a_function_level_cycle():
  # The checker itself: two modules importing each other, one of them inside a function.
  a = ast.parse("from pkg import b\n")
  b = ast.parse("def main():\n  from pkg.a import x\n")
  assert imports("pkg.a", ast.parse("if __name__ == '__main__':\n  from pkg import b\n"),
                 {"pkg", "pkg.a", "pkg.b"}) == set()
  known = {"pkg", "pkg.a", "pkg.b"}
  graph = {"pkg": set(), "pkg.a": imports("pkg.a", a, known), "pkg.b": imports("pkg.b", b, known)}
  assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]


def test_no_import_cycles_in_the_package():
  trees = modules()
  graph = {name: imports(name, tree, set(trees)) for name, tree in trees.items()}
  # A package importing its own submodules (an __init__ re-exporting) is not a cycle by itself;
  # it is one only if a submodule also imports the package back, which the graph shows.
  cycle = find_cycle(graph)
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


# The layers of the package, lowest first (README, Layout). A module may import modules of
# its own layer or a lower one, never a higher one, so each layer can be read, tested and
# changed knowing only what is below it. The generator chain is config -> spectral/layers
# -> model -> gan -> training, the checkpoint chain checkpoints -> inference -> cli.
LAYERS = [
    {"config", "signals", "compile_cache", "xla_options", "audio"},  # plain Python / numpy, no model
    {"spectral", "layers"},
    {"model"},
    {"gan"},
    {"data"},
    {"checkpoints"},
    {"inference"},
    {"evaluation"},
    {"training"},
    {"cli"},
]
# Old paths kept only so `python -m apollo_jax.<old>` and old imports keep working: thin
# forwards to the new home, which nothing inside the package may import.
ALIASES = {"restore", "interop", "streaming"}


def layer(module: str) -> int | None:
  """The layer of ``apollo_jax.<top>...`` (None: the package itself or an alias)."""
  top = module.split(".")[1] if module.count(".") else None
  if top is None or top in ALIASES:
    return None
  for i, names in enumerate(LAYERS):
    if top in names:
      return i
  raise AssertionError(f"{module}: not in any layer of tests/test_imports.py; add it to LAYERS")


def test_imports_go_down_the_layers():
  trees = modules()
  wrong = []
  for name, tree in trees.items():
    own = layer(name)
    for dep in imports(name, tree, set(trees)):
      if dep.split(".")[1:2] and dep.split(".")[1] in ALIASES and name != PACKAGE:
        if layer(name) is not None:
          wrong.append(f"{name} imports the old-path alias {dep}")
        continue
      if own is not None and (d := layer(dep)) is not None and d > own:
        wrong.append(f"{name} (layer {own}) imports {dep} (layer {d})")
  assert not wrong, "imports going up the layers:\n" + "\n".join(sorted(wrong))


def test_aliases_only_forward():
  # An alias holds no code of its own: a docstring, imports and the __main__ forward.
  trees = modules()
  for alias in sorted(ALIASES):
    body = trees[f"{PACKAGE}.{alias}"].body
    kinds = {type(n).__name__ for n in body[1:]}
    assert kinds <= {"ImportFrom", "Import", "If"}, (alias, kinds)


def test_the_layer_check_catches_an_upward_import():
  known = {"apollo_jax", "apollo_jax.model", "apollo_jax.training.loop"}
  up = imports("apollo_jax.model", ast.parse("def f():\n  from apollo_jax.training import loop\n"), known)
  assert up == {"apollo_jax.training.loop"}
  assert layer("apollo_jax.training.loop") > layer("apollo_jax.model")
