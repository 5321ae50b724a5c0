"""Config dataclasses <- YAML recipe <- command-line flags (trl's ``TrlParser`` convention).

A recipe is a flat YAML mapping whose keys are fields of one or more config dataclasses.
Flags given on the command line (``--learning_rate 1e-4``) override the YAML. Every value is
checked against the field's type, and against ``choices``/``min``/``max``/``gt``/``lt``/``multiple_of``
in the field's ``metadata``; NaN and infinity are refused everywhere. Any problem raises
:class:`ConfigError` naming the key and where it came from.

Declare fields with :func:`option` so help text and bounds live next to the default::

    @dataclass
    class TrainConfig:
        beta: float = option(5000.0, "DPO temperature", gt=0, max=1e6)
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A recipe or flag is wrong; the message names the key and its source."""


# Exit statuses of every command (docs/reliability.md).
EXIT_OK, EXIT_PROBLEMS, EXIT_BAD_INPUT, EXIT_STOPPED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def debugging() -> bool:
    """``--debug`` on the command line or ``PLURALIGN_DEBUG=1``: show the full traceback of an error
    (``PLURALIGN_TRACEBACK=1`` is read too)."""
    return bool(os.environ.get("PLURALIGN_DEBUG") or os.environ.get("PLURALIGN_TRACEBACK"))


def run_module(main, prog: str) -> int:
    """Run an entry point's ``main()`` (every ``pluralign`` command and ``python -m`` module).

    Bad input (a :class:`ConfigError`, a suite or data row error: the project raises ``ValueError``
    subclasses naming the file, row and field; a missing file, or an output that exists and may not
    be replaced) becomes one line on stderr and exit status 2 instead of a traceback; Ctrl-C is one
    line and status 130. ``--debug`` anywhere on the command line, or ``PLURALIGN_DEBUG=1``,
    re-raises instead, for bug reports.
    """
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
        os.environ["PLURALIGN_DEBUG"] = "1"
    try:
        return int(main() or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        if debugging():
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        print("(run with --debug or PLURALIGN_DEBUG=1 to see where it was raised)", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        if debugging():
            raise
        print(f"{prog}: interrupted; finished files are kept, unfinished ones were written under temporary names",
              file=sys.stderr)
        return EXIT_INTERRUPTED


def underscored(argv: list[str]) -> list[str]:
    """Accept ``--on-error`` as well as ``--on_error``: option names with hyphens become underscores."""
    out = []
    for a in argv:
        if a.startswith("--"):
            name, eq, value = a[2:].partition("=")
            a = "--" + name.replace("-", "_") + eq + value
        out.append(a)
    return out


def writable_dir(path: str | Path, key: str) -> Path:
    """Create ``path`` and prove it takes a file, before any work whose results would go there.

    Raises a :class:`ConfigError` naming the option ``key`` that set it. Checked up front because a
    run that fails to write after an hour of generation or training has lost that hour.
    """
    import os

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{key} {path} is not writable ({exc.strerror or exc}); choose another {key}") from None
    return path


def option(default: Any = dataclasses.MISSING, help: str = "", *, choices=None, min=None, max=None, gt=None,
           lt=None, multiple_of=None, allow_nonfinite: bool = False, factory=None):
    """A dataclass field with help text and validation bounds in its metadata.

    ``min``/``max`` are inclusive bounds and ``gt``/``lt`` exclusive ones (a DPO ``beta`` of 0 makes
    the sigmoid loss constant and IPO's divide by zero, so it takes ``gt=0``); ``multiple_of`` asks for
    a multiple (image sides the VAE and the latent packing must divide). ``choices`` and every bound
    apply to each element of a list value. NaN and infinity are refused unless ``allow_nonfinite``:
    NaN compares false with every bound, so bounds alone would let it through.
    """
    meta = {"help": help, "choices": choices, "min": min, "max": max, "gt": gt, "lt": lt, "multiple_of": multiple_of,
            "allow_nonfinite": allow_nonfinite}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Convert ``value`` (from YAML or a CLI string) to ``tp`` or raise a ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key, source)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{source}: key '{key}': {value!r} is not a valid {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{source}: key '{key}': {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: key '{key}': expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [coerce(v, inner, key, source) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: key '{key}': expected a mapping, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{source}: key '{key}': expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{source}: key '{key}': expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{source}: key '{key}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{source}: key '{key}': expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: key '{key}': expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{source}: key '{key}': expected a string, got {value!r}")
        return str(value)
    if tp is Path:
        return Path(value)
    return value


def _bound_problem(v: Any, meta) -> str | None:
    """What is wrong with one value (a scalar or one element of a list) against the field's metadata."""
    choices = meta.get("choices")
    if choices is not None and v not in choices:
        return f"{v!r} is not one of {list(choices)}"
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return None
    if isinstance(v, float) and not math.isfinite(v):
        if meta.get("allow_nonfinite"):
            return None
        return f"{v} is not a finite number (NaN and infinity are not allowed)"
    lo, hi, gt, lt, step = (meta.get(k) for k in ("min", "max", "gt", "lt", "multiple_of"))
    if lo is not None and v < lo:
        return f"{v} is below the minimum {lo}"
    if hi is not None and v > hi:
        return f"{v} is above the maximum {hi}"
    if gt is not None and not v > gt:
        return f"{v} must be above {gt}"
    if lt is not None and not v < lt:
        return f"{v} must be below {lt}"
    if step is not None and v % step != 0:
        return f"{v} is not a multiple of {step}"
    return None


def _check_bounds(value: Any, field: dataclasses.Field, source: str) -> None:
    if value is None:
        return
    is_list = isinstance(value, (list, tuple))
    for n, v in enumerate(value if is_list else [value]):
        problem = _bound_problem(v, field.metadata)
        if problem is not None:
            item = f", item {n + 1}" if is_list else ""
            raise ConfigError(f"{source}: key '{field.name}'{item}: {problem}")


def _checked(value: Any, field: dataclasses.Field, tp: Any, source: str) -> Any:
    """``value`` converted to the field's type and checked against its bounds."""
    value = coerce(value, tp, field.name, source)
    _check_bounds(value, field, source)
    return value


def _fields(cls) -> dict[str, tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls) if f.init}


def build(cls, values: dict[str, Any], source: str = "<dict>"):
    """Instantiate ``cls`` from ``values``, validating every key (unknown keys are errors)."""
    fields = _fields(cls)
    unknown = [k for k in values if k not in fields]
    if unknown:
        raise ConfigError(_unknown_message(unknown[0], list(fields), source))
    kwargs = {}
    for key, value in values.items():
        field, tp = fields[key]
        kwargs[key] = _checked(value, field, tp, source)
    for name, (field, _) in fields.items():
        if name not in kwargs and field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: required key '{name}' is missing")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _unknown_message(key: str, known: list[str], source: str) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{source}: key '{key}' is not a known option{hint}"


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key, line: int, first: int):
        super().__init__(f"key {key!r} on line {line} is also on line {first}")
        self.key, self.line, self.first = key, line, first


class _RecipeLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, except that a key given twice in one mapping is an error: PyYAML keeps
    the last one silently, so a recipe that sets ``learning_rate`` twice would run with whichever
    came last and nobody would notice."""

    def construct_mapping(self, node, deep=False):
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` overrides on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in first_line:
                    raise _DuplicateKey(key, line, first_line[key])
                first_line[key] = line
            except TypeError:  # an unhashable key: SafeLoader's own error says so below
                pass
        return super().construct_mapping(node, deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML error: where it is and what is wrong (PyYAML's own text spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return where + problem


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A recipe file as a dict; every problem is a :class:`ConfigError` naming the file (and the line)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the recipe as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the recipe ({exc.strerror or exc})") from None
    try:
        data = yaml.load(text, Loader=_RecipeLoader)  # a SafeLoader: no arbitrary objects
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}: line {exc.line}: key '{exc.key}' is given twice (first on line {exc.first}); "
                          "keep one") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    if data is None or data == {}:
        # an empty file would otherwise run every default, which is rarely what its author meant
        raise ConfigError(f"{path}: the recipe is empty; write option: value lines, or leave out --config to run "
                          "the defaults")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of option: value, got {type(data).__name__}")
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(f"{path}: key {key!r} is not an option name")
    return data


def parse(classes: tuple[type, ...], argv: list[str] | None = None, *, prog: str | None = None,
          description: str | None = None) -> tuple:
    """Parse ``--config FILE`` plus ``--key value`` flags into one instance per class.

    Keys are shared by name across the classes (a key that two classes declare is given to
    both). Flags win over the YAML file.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", type=Path, help="YAML recipe of option: value")
    all_fields: dict[str, tuple[dataclasses.Field, Any]] = {}
    for cls in classes:
        group = parser.add_argument_group(cls.__name__)
        for name, (field, tp) in _fields(cls).items():
            if name in all_fields:
                continue
            all_fields[name] = (field, tp)
            default = field.default if field.default is not dataclasses.MISSING else None
            help_ = field.metadata.get("help", "") or " "
            if field.metadata.get("choices"):
                help_ += f" (choices: {', '.join(map(str, field.metadata['choices']))})"
            # argparse %-formats help text: a literal "95%" would crash --help
            text = f"{help_} [default: {default}]".replace("%", "%%")
            group.add_argument(f"--{name}", dest=name, default=argparse.SUPPRESS, metavar=_type_name(tp).upper(),
                               help=text)
    ns, rest = parser.parse_known_args(argv)
    if rest:
        flag = rest[0].lstrip("-").split("=")[0]
        raise ConfigError(_unknown_message(flag, list(all_fields), "command line"))
    values: dict[str, tuple[Any, str]] = {}
    if ns.config is not None:
        for key, value in load_yaml(ns.config).items():
            if key not in all_fields:
                raise ConfigError(_unknown_message(key, list(all_fields), str(ns.config)))
            values[key] = (value, str(ns.config))
    for key, value in vars(ns).items():
        if key != "config":
            values[key] = (value, "command line")
    out = []
    for cls in classes:
        names = _fields(cls)
        mine = {k: v for k, v in values.items() if k in names}
        # validate each value with its own source so errors point at the right place
        kwargs = {}
        for key, (value, source) in mine.items():
            field, tp = names[key]
            kwargs[key] = _checked(value, field, tp, source)
        out.append(build(cls, kwargs, str(ns.config) if ns.config else "command line"))
    return tuple(out)


def to_dict(obj) -> dict[str, Any]:
    """A JSON/YAML-friendly dict of a config dataclass (paths become strings)."""
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        out[f.name] = str(v) if isinstance(v, Path) else v
    return out


def option_defaults(cls) -> dict[str, Any]:
    """Each option of a config dataclass with its default, as :func:`to_dict` writes values (options without a
    default are left out). A run recorded before an option existed did what the option's default does, so
    resume checks compare a missing recorded value with this."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            v = f.default
        elif f.default_factory is not dataclasses.MISSING:
            v = f.default_factory()
        else:
            continue
        out[f.name] = str(v) if isinstance(v, Path) else v
    return out
