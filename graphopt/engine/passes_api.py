"""The pass contract: Pass, Option, PassContext, and the registry that names passes.

A pass is a named unit with a description and typed options. Write one as a function ``(graph, ctx) -> bool`` under
``@register_pass("name")`` or as a :class:`Pass` subclass; packages add theirs through the entry-point group
``graphopt.passes`` (each entry point names a module, a Pass subclass or a registered function to import).
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, ClassVar

from graphopt.core.ir import Graph, Model
from graphopt.errors import PassError

ENTRY_POINT_GROUP = "graphopt.passes"
TARGETS = ("ort", "tensorrt")
DEBUG_ENV = "GRAPHOPT_DEBUG"


def debug_enabled() -> bool:
    """``GRAPHOPT_DEBUG`` is set (and not 0): exceptions in passes and rules propagate as they are, with their
    tracebacks, instead of becoming one-line errors that name the pass or rule."""
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


@dataclass(frozen=True)
class Option:
    """A typed pass option. ``type`` is bool, int, float or str; ``choices`` restricts the allowed values."""

    type: type
    default: Any
    help: str = ""
    choices: tuple[Any, ...] | None = None

    def parse(self, pass_name: str, key: str, raw: Any) -> Any:
        """Convert ``raw`` (a string from the command line, or a Python value) to this option's type."""
        value = raw
        try:
            if isinstance(raw, str) and self.type is not str:
                if self.type is bool:
                    low = raw.strip().lower()
                    if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                        raise ValueError(raw)
                    value = low in ("1", "true", "yes", "on")
                else:
                    value = self.type(raw.strip())
            elif self.type is float and isinstance(raw, int) and not isinstance(raw, bool):
                value = float(raw)
            elif not isinstance(raw, self.type) or (self.type is int and isinstance(raw, bool)):
                raise TypeError(raw)
        except (TypeError, ValueError):
            raise PassError(f"pass {pass_name!r}: option {key!r} expects {self.type.__name__}, got {raw!r}") from None
        if self.choices is not None and value not in self.choices:
            raise PassError(f"pass {pass_name!r}: option {key!r} must be one of {list(self.choices)}, got {value!r}")
        return value


@dataclass
class PassContext:
    """What a pass may know besides the graph: the model, its target, opsets, options and a logger."""

    model: Model
    target: str = "ort"
    options: dict[str, Any] = field(default_factory=dict)
    """Options given to ``optimize`` (not pass options; those are on the pass object)."""
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("graphopt"))
    counters: dict[str, int] = field(default_factory=dict)
    """Counts the running pass reports (say, how often each rewrite rule fired); they end up in its PassStats."""
    declines: dict[str, dict[str, int]] = field(default_factory=dict)
    """Matches the running pass's rules declined, per rule and reason; they end up in its PassStats."""
    results: dict[str, Any] = field(default_factory=dict)
    """What passes return besides the rewritten graph, by pass name (a model pass's result object, say the winograd
    decisions); the PassManager hands it over as ``PassReport.results``. Options flow in, results flow out."""

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    def opset(self, domain: str = "") -> int | None:
        """The opset version the model imports for ``domain``."""
        return self.model.opset(domain)

    @property
    def opsets(self) -> dict[str, int]:
        return dict(self.model.opset_imports)


class Pass:
    """Base class of every pass. Subclasses set ``name``, ``description`` and ``options`` and implement ``run``.

    ``recursive`` passes are run by the PassManager on every subgraph (If/Loop/Scan bodies) too; a pass that walks
    subgraphs itself sets it to False. ``self.options`` holds the parsed option values.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    options_spec: ClassVar[Mapping[str, Option]] = {}
    recursive: ClassVar[bool] = True
    lossless: ClassVar[bool] = True
    annotations_only: ClassVar[bool] = False
    """The pass edits only doc strings and metadata: what it changes never gives another pass new work, so the
    PassManager does not repeat the pipeline for it."""
    context_options: ClassVar[tuple[str, ...]] = ()
    """The ``ctx.options`` keys the pass reads (besides ``optimize``'s own parameters): ``graphopt.optimize`` accepts
    these as extra keywords and rejects any other."""

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.options_spec))
        if unknown:
            known = ", ".join(self.options_spec) or "none"
            raise PassError(f"pass {self.name!r} has no option {unknown[0]!r} (its options: {known})")
        self.options: dict[str, Any] = {k: opt.default for k, opt in self.options_spec.items()}
        for key, raw in options.items():
            self.options[key] = self.options_spec[key].parse(self.name, key, raw)

    def prepare(self, model: Model, ctx: PassContext) -> None:
        """Called once per run of the pass, before it visits the main graph and (if ``recursive``) every subgraph and
        function body: model-wide work the graph visits share (say, shape inference)."""

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        """Rewrite ``graph`` in place; return True if anything changed."""
        raise NotImplementedError

    def __repr__(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options.items() if v != self.options_spec[k].default)
        return f"{self.name}{{{opts}}}" if opts else self.name


@dataclass
class PassResult:
    """What a model pass returns when it has more to say than "changed": its result object (a report) lands in
    ``ctx.results[pass name]`` and ``PassReport.results``."""

    changed: bool
    value: Any = None


class ModelPass(Pass):
    """A pass that runs once on the whole model, not on each graph: implement ``run_model``.

    ``once`` marks a lossy one-shot transformation (quantization, pruning, Winograd autotuning): the PassManager runs
    it in the first sweep of a fixed-point pipeline only, so no pass needs a flag to avoid acting twice."""

    recursive: ClassVar[bool] = False
    once: ClassVar[bool] = False

    def run_model(self, model: Model, ctx: PassContext) -> bool | PassResult:
        """Rewrite ``model`` in place; return whether anything changed, or a PassResult carrying a result object."""
        raise NotImplementedError

    def run(self, graph: Graph, ctx: PassContext) -> bool:  # the PassManager calls run_model; this is for callers
        result = self.run_model(ctx.model, ctx)
        return result.changed if isinstance(result, PassResult) else bool(result)


class PipelinePass(ModelPass):
    """A pass made of other passes (``steps``, registered names), run in order as one step of a pipeline: ``cleanup``
    is one. It is a model pass: each step runs on the model as any pass does (a graph pass on every graph and
    subgraph, a model pass once); under a PassManager each step keeps its own statistics (``PassStats.steps``)."""

    steps: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.sub_passes: list[Pass] = [get_pass(name)() for name in self.steps]

    def run_model(self, model: Model, ctx: PassContext) -> bool:
        """Outside a PassManager: the steps in order, each on the whole model."""
        changed = False
        for p in self.sub_passes:
            changed |= run_on_model(p, model, ctx)
        return changed


def run_on_model(p: Pass, model: Model, ctx: PassContext) -> bool:
    """Run one pass on ``model`` as the PassManager does: a model pass once (its result object to ``ctx.results``),
    a graph pass after its ``prepare`` on the main graph and, if ``recursive``, every subgraph and function body.

    First the file's type annotations that onnxruntime does not check are set aside (no pass decides from them)."""
    from graphopt.core.shape_inference import trust_types

    trust_types(model)
    if isinstance(p, ModelPass):
        result = p.run_model(model, ctx)
        if isinstance(result, PassResult):
            if result.value is not None:
                ctx.results[p.name] = result.value
            return bool(result.changed)
        return bool(result)
    p.prepare(model, ctx)
    changed = bool(p.run(model.graph, ctx))
    if not p.recursive:
        return changed
    # Subgraphs are collected after the main graph ran, so those the pass removed are not visited.
    for g in list(model.graph.subgraphs()):
        changed |= bool(p.run(g, ctx))
    for func in model.functions.values():
        for g in (func.graph, *func.graph.subgraphs()):
            changed |= bool(p.run(g, ctx))
    return changed


class FunctionPass(Pass):
    """A pass made from a plain function ``(graph, ctx) -> bool``; options arrive as ``ctx``-independent kwargs."""

    func: ClassVar[Callable[..., bool]]

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        return bool(type(self).func(graph, ctx, **self.options))


class GraphSurgeonPass(ModelPass):
    """A pass made from a function on an ``onnx_graphsurgeon.Graph`` of the whole model."""

    func: ClassVar[Callable[..., bool]]

    def run_model(self, model: Model, ctx: PassContext) -> bool:
        from graphopt.core.gs import run_graphsurgeon

        return run_graphsurgeon(type(self).func, model, self.options)


# --------------------------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------------------------
_REGISTRY: dict[str, type[Pass]] = {}
_PLUGINS_LOADED = False
_NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]*$")


def register_pass(
    name: str,
    *,
    description: str = "",
    options: Mapping[str, Option] | None = None,
    recursive: bool = True,
    lossless: bool = True,
    replace: bool = False,
    graphsurgeon: bool = False,
    annotations_only: bool = False,
    context_options: tuple[str, ...] = (),
) -> Callable[[Any], Any]:
    """Register a pass under ``name``: decorate a function ``(graph, ctx, **options) -> bool`` or a Pass subclass.

    Function passes take their options as keyword arguments; ``recursive`` and ``lossless`` apply to them (a Pass
    subclass sets those as class attributes), and so does ``annotations_only`` (the pass edits only doc strings and
    metadata, so its changes do not make a fixed-point pipeline run again). ``replace=True`` allows overriding an
    existing name.
    ``graphsurgeon=True``: the function is ``(gs_graph, **options)`` on an ``onnx_graphsurgeon.Graph`` of the whole
    model, edited in place (see :mod:`graphopt.core.gs`).
    """
    if not _NAME_RE.match(name):
        raise PassError(f"invalid pass name {name!r}: use lowercase letters, digits, '-', '_' and '.'")
    for key, opt in (options or {}).items():
        if not isinstance(opt, Option):
            raise PassError(f"pass {name!r}: option {key!r} must be a graphopt.Option, got {type(opt).__name__}")

    def decorate(obj: Any) -> Any:
        if name in _REGISTRY and not replace and _REGISTRY[name] is not obj:
            raise PassError(
                f"a pass named {name!r} is already registered (replace=True overrides it, e.g. when a notebook cell "
                "that registers it runs again)"
            )
        if isinstance(obj, type) and issubclass(obj, Pass):
            obj.name = name
            if description:
                obj.description = description
            if options is not None:
                obj.options_spec = dict(options)
            if context_options:
                obj.context_options = tuple(context_options)
            cls = obj  # a class keeps its own ``recursive`` and ``lossless`` attributes
        elif callable(obj):
            doc = (obj.__doc__ or "").strip().splitlines()
            cls = type(
                f"FunctionPass[{name}]",
                (GraphSurgeonPass if graphsurgeon else FunctionPass,),
                {
                    "name": name,
                    "description": description or (doc[0] if doc else ""),
                    "options_spec": dict(options or {}),
                    "recursive": recursive and not graphsurgeon,
                    "lossless": lossless,
                    "annotations_only": annotations_only,
                    "context_options": tuple(context_options),
                    "func": staticmethod(obj),
                },
            )
        else:
            raise PassError(f"register_pass({name!r}) needs a function or a Pass subclass, got {obj!r}")
        _REGISTRY[name] = cls
        return obj

    return decorate


@contextlib.contextmanager
def registry_snapshot() -> Iterator[None]:
    """Passes registered (or replaced) inside the block are forgotten after it: tests and notebooks that register
    throw-away passes leave the registry as they found it. Built-ins and plugins are loaded first."""
    _load_builtin_and_plugins()
    before = dict(_REGISTRY)
    try:
        yield
    finally:
        _REGISTRY.clear()
        _REGISTRY.update(before)


BUILTIN_PASS_MODULES = ("graphopt.passes", "graphopt.prune.passes", "graphopt.quantize.passes")
"""Modules whose import registers the built-in passes: the lossless passes, and the lossy drivers' passes (which sit
above this layer, so they are named here, as plugins are named by entry points, not imported)."""


def _load_builtins() -> None:
    import importlib

    for module in BUILTIN_PASS_MODULES:
        importlib.import_module(module)


def _load_builtin_and_plugins() -> None:
    """Built-ins and entry-point plugins. Scanning installed packages for plugins takes tens of milliseconds, so it
    happens only when a name is not found among the passes already registered, or when all passes are listed."""
    global _PLUGINS_LOADED
    _load_builtins()
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as e:  # a broken plugin must not break graphopt  # noqa: BLE001
            warnings.warn(f"graphopt: could not load pass plugin {ep.name!r} ({ep.value}): {e}", stacklevel=2)
            continue
        if isinstance(obj, type) and issubclass(obj, Pass) and obj.name not in _REGISTRY:
            register_pass(obj.name or ep.name)(obj)


def context_options(plugins: bool = True) -> frozenset[str]:
    """The ``ctx.options`` keys the registered passes (built-ins and plugins) declare they read; ``plugins=False``:
    those of the passes registered so far (built-ins included), without scanning installed packages for plugins."""
    if not plugins:
        _load_builtins()
        return frozenset(key for cls in _REGISTRY.values() for key in cls.context_options)
    return frozenset(key for cls in list_passes().values() for key in cls.context_options)


def list_passes() -> dict[str, type[Pass]]:
    """Every registered pass (built-in and plugins), by name."""
    _load_builtin_and_plugins()
    return dict(sorted(_REGISTRY.items()))


def get_pass(name: str) -> type[Pass]:
    """The pass class registered under ``name``; an unknown name gets the nearest names suggested."""
    _load_builtins()
    if name not in _REGISTRY:
        _load_builtin_and_plugins()
    cls = _REGISTRY.get(name)
    if cls is None:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "; `graphopt passes` lists them"
        raise PassError(f"unknown pass {name!r}{hint}")
    return cls


# --------------------------------------------------------------------------------------------------------------------
# pipelines
# --------------------------------------------------------------------------------------------------------------------
_ITEM_RE = re.compile(r"\s*([^,{}\s]+)\s*(?:\{([^{}]*)\})?\s*(?:,|$)")


def parse_pipeline(spec: str) -> list[Pass]:
    """Parse ``"a,b{key=value,key2=value2},c"`` into pass instances."""
    passes: list[Pass] = []
    pos = 0
    spec = spec.strip()
    while pos < len(spec):
        m = _ITEM_RE.match(spec, pos)
        if m is None or m.end() == pos:
            raise PassError(f"malformed pipeline {spec!r} at position {pos}: expected name or name{{key=value,...}}")
        name, opts = m.group(1), m.group(2)
        kwargs: dict[str, str] = {}
        for item in (opts or "").split(","):
            if not item.strip():
                continue
            if "=" not in item:
                raise PassError(f"malformed option {item.strip()!r} for pass {name!r}: expected key=value")
            key, value = item.split("=", 1)
            kwargs[key.strip()] = value.strip()
        passes.append(get_pass(name)(**kwargs))
        pos = m.end()
    return passes


def as_passes(spec: str | Pass | type[Pass] | Callable[..., Any] | list[Any] | tuple[Any, ...] | None) -> list[Pass]:
    """Normalise a pipeline given as a string, pass names, Pass classes/instances, or registered functions."""
    if spec is None:
        return []
    if isinstance(spec, str):
        return parse_pipeline(spec)
    if not isinstance(spec, list | tuple):
        spec = [spec]
    out: list[Pass] = []
    for item in spec:
        if isinstance(item, Pass):
            out.append(item)
        elif isinstance(item, str):
            out.extend(parse_pipeline(item))
        elif isinstance(item, type) and issubclass(item, Pass):
            out.append(item())
        elif callable(item):
            _load_builtins()
            matches = [cls for cls in _REGISTRY.values() if getattr(cls, "func", None) is item]
            if not matches:
                matches = [cls for cls in list_passes().values() if getattr(cls, "func", None) is item]
            if not matches:
                raise PassError(f"{getattr(item, '__name__', item)!r} is not a registered pass; use @register_pass")
            out.append(matches[0]())
        else:
            raise PassError(f"cannot use {item!r} as a pass")
    return out


# Pipelines named by optimization level. Later passes add their names here; names not registered are skipped.
_LOSSLESS = [
    "fold-constants",
    "fuse-gelu",
    "cleanup",
    "hoist-loop-invariants",
    "fold-conv-bn",
    "cse",
    "canonicalize",
    "fuse-parallel-matmul",
    "cleanup",
    "strip-debug-info",
]
LEVELS: dict[int, list[str]] = {0: [], 1: ["cleanup"], 2: _LOSSLESS, 3: [*_LOSSLESS, "winograd"]}


def level_pipeline(level: int) -> list[Pass]:
    """The passes of optimization level ``level`` (0 to 3)."""
    if level not in LEVELS:
        raise PassError(f"optimization level must be 0, 1, 2 or 3, got {level}")
    _load_builtins()
    return [_REGISTRY[name]() for name in LEVELS[level] if name in _REGISTRY]
