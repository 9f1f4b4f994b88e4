"""Write a pipeline as a standalone Python script that rebuilds it with the public rtnb API.

The script is code a person would write: one assignment per node, named after the notebook's
variables; Params at their current (tuned) values with a command-line option each; functions
the user wrote carried over by source; secrets read from environment variables it documents.
"""

from __future__ import annotations

import ast
import datetime as _dt
import functools
import importlib
import inspect
import keyword
import math
import re
import sys
import textwrap
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

import numpy as np
import pandas as pd

from rtnb import _record
from rtnb._net import secret_header, secret_param, token_user
from rtnb._time import duration_code
from rtnb.errors import ExportError
from rtnb.params import Param

if TYPE_CHECKING:
    import jinja2

    from rtnb.pipeline import Pipeline

__all__ = ["render_script"]

#: Names the generated script defines itself; node variables never take them.
_RESERVED = {"rtnb", "runtime", "typer", "pd", "np", "Path", "Annotated", "Any", "PARAMS",
             "HERE", "build", "main", "params", "source", "annotations", "os", "urllib",
             "env_secret", "url_with_secrets", "sys", "shadow"}

#: The options every exported script has (``main()``'s parameters besides the Params').
_SCRIPT_OPTIONS = frozenset({"until", "max_events", "metrics_port", "log_format", "input",
                             "output", "checkpoint", "checkpoint_every", "cluster",
                             "scheduler"})

#: Keyword arguments that hold secrets, and the ``*_env`` argument that replaces each.
#: Credential query parameters and headers (``rtnb._net.secret_param``/``secret_header``) are
#: read through the helpers ``env_secret`` and ``url_with_secrets`` the script then defines.
_SECRET_KWARGS = {"password": "password_env", "token": "token_env"}

#: Public modules searched (in order) for the shortest name of a recorded callable.
_PUBLIC = ("rtnb", "rtnb.detect", "rtnb.sources", "rtnb.sinks", "rtnb.windows", "rtnb.datasets")


def public_path(obj: Any) -> str:
    """``rtnb.detect.ZScore`` for the class, ``rtnb.sources.replay`` for the function."""
    for module_name in _PUBLIC:
        module = importlib.import_module(module_name)
        for attr in getattr(module, "__all__", ()):
            if getattr(module, attr, None) is obj:
                return f"{module_name}.{attr}"
    module_name = str(getattr(obj, "__module__", "") or "")
    qualname = str(getattr(obj, "__qualname__", "") or "")
    if module_name and qualname and "<" not in qualname:
        return f"{module_name}.{qualname}"
    msg = f"{obj!r} is not part of rtnb's public API and cannot be exported"
    raise ExportError(msg)


def identifier(text: str, fallback: str = "node") -> str:
    """A valid, non-keyword Python identifier made from ``text``."""
    name = re.sub(r"\W+", "_", text).strip("_").lower() or fallback
    if name[0].isdigit():
        name = f"{fallback}_{name}"
    if keyword.iskeyword(name) or name in _RESERVED:
        name += "_"
    return name


@dataclass
class _Function:
    name: str
    source: str


@dataclass
class _Env:
    variable: str
    what: str


@dataclass(frozen=True)
class _SecretURL:
    """A URL whose secrets were taken out: the script puts them back from the environment.

    ``url`` keeps each credential query parameter with an empty value (``?token=&x=1``);
    ``query`` maps the parameter's name to its variable, ``user``/``password`` name the
    variables of the URL's user name (a token) and password.
    """

    url: str
    query: tuple[tuple[str, str], ...] = ()
    user: str | None = None
    password: str | None = None

    def code(self, url_code: str) -> str:
        """``url_with_secrets(<url_code>, ...)``."""
        args = [url_code]
        if self.query:
            args.append("{" + ", ".join(f"{name!r}: env_secret({variable!r})"
                                        for name, variable in self.query) + "}")
        if self.user is not None:
            args.append(f"user=env_secret({self.user!r})")
        if self.password is not None:
            args.append(f"password=env_secret({self.password!r})")
        return f"url_with_secrets({', '.join(args)})"


@dataclass
class _Option:
    """A command-line option of the script: a Param, or the source's URL/path."""

    key: str
    flag: str
    annotation: str
    default: str
    help: str

    @property
    def arg(self) -> str:
        """The parameter of ``main()`` that receives the option."""
        return identifier(self.key)


@dataclass
class ScriptParts:
    """What :func:`render_script` produces, before it is joined into a file."""

    imports: set[str] = field(default_factory=set)
    functions: dict[str, _Function] = field(default_factory=dict)
    params: dict[int, tuple[str, Param]] = field(default_factory=dict)
    body: list[str] = field(default_factory=list)
    env: list[_Env] = field(default_factory=list)
    data_files: dict[str, pd.DataFrame] = field(default_factory=dict)
    source_option: _Option | None = None
    #: Whether the script needs ``env_secret`` (and ``url_with_secrets``) to read secrets.
    secret_helpers: bool = False
    url_helper: bool = False


class _Writer:
    def __init__(self, pipeline: Pipeline, names: Mapping[int, str], data_dir: str) -> None:
        self.pipeline = pipeline
        self.names = names
        self.data_dir = data_dir
        self.parts = ScriptParts()
        self.vars: dict[int, str] = {}
        self.taken: set[str] = set(_RESERVED)
        self.node: list[str] = []
        self.source_slot: tuple[int, str] | None = None

    # -- naming -------------------------------------------------------------------------
    def _fresh(self, base: str) -> str:
        name = identifier(base)
        candidate, i = name, 2
        while candidate in self.taken:
            candidate, i = f"{name}_{i}", i + 1
        self.taken.add(candidate)
        return candidate

    def _error(self, what: str) -> ExportError:
        where = f"node {self.node[-1]!r}: " if self.node else ""
        return ExportError(where + what)

    # -- frames -------------------------------------------------------------------------
    def frame(self, frame: Any) -> str:
        """The variable holding ``frame``, writing its assignment (and its inputs') first."""
        key = id(frame)
        if key in self.vars:
            return self.vars[key]
        call = _record.call_of(frame)
        self.node.append(frame.name)
        try:
            if call is None:
                expr = self._attribute_of(frame)
            else:
                expr = self.call(call, root=frame if frame.is_root else None)
        finally:
            self.node.pop()
        base = self.names.get(key) or frame.name.rsplit(".", 1)[-1].split("[", 1)[0]
        var = self._fresh(base)
        self.vars[key] = var
        self.parts.body.append(f"{var} = {expr}")
        return var

    def node_object(self, obj: Any) -> str:
        """A view or status widget: one assignment, then its fluent calls (``.mark(...)``)."""
        key = id(obj)
        if key in self.vars:
            return self.vars[key]
        call = _record.call_of(obj)
        if call is None:
            msg = f"{obj!r:.80} was not built by a recorded rtnb call"
            raise self._error(msg)
        self.node.append(getattr(getattr(obj, "frame", None), "name", type(obj).__name__))
        try:
            expr = self.call(call)
            for link in _record.chain_of(obj):
                rendered = [self.value(a) for a in link.args]
                rendered += [f"{k}={self.value(v)}" for k, v in link.kwargs.items()]
                expr += f".{link.func}({', '.join(rendered)})"
        finally:
            self.node.pop()
        kind = str(getattr(obj, "kind", "") or type(obj).__name__.lower())
        frame_var = self.vars.get(id(getattr(obj, "frame", None)), "")
        var = self._fresh(f"{frame_var}_{kind}" if frame_var else kind)
        self.vars[key] = var
        self.parts.body.append(f"{var} = {expr}")
        return var

    def _attribute_of(self, frame: Any) -> str:
        for owner in self.pipeline.frames:
            if getattr(owner, "late", None) is frame:
                return f"{self.frame(owner)}.late"
            if getattr(owner, "_dead", None) is frame:
                return f"{self.frame(owner)}.dead_letters"
        if frame.is_root:
            msg = (f"frame {frame.name!r} has no source (batches are emitted into it by hand); "
                   "an exported script needs a source such as rtnb.sources.replay(...)")
            raise ExportError(msg)
        msg = (f"frame {frame.name!r} was built by code export cannot see (not an rtnb call "
               "on another node); build it with the StreamingFrame API")
        raise ExportError(msg)

    # -- calls --------------------------------------------------------------------------
    def call(self, call: _record.Call, *, root: Any = None) -> str:
        args, kwargs = list(call.args), dict(call.kwargs)
        if call.kind == "call":
            path = public_path(call.func)
            if root is not None:
                args, kwargs = self._source_arguments(call.func, args, kwargs, root)
            elif path.startswith("rtnb.sinks."):
                kwargs = self._secrets(call.func, args, kwargs)
            head = path
        elif call.kind == "index":
            return f"{self.target(call.target)}[{self.value(args[0])}]"
        elif call.kind == "attr":
            return f"{self.target(call.target)}.{call.func}"
        else:
            head = f"{self.target(call.target)}.{call.func}"
        rendered = [self.value(a) for a in args]
        rendered += [f"{k}={self.value(v)}" for k, v in kwargs.items()]
        return f"{head}({', '.join(rendered)})"

    def target(self, obj: Any) -> str:
        from rtnb.frame import StreamingFrame

        if isinstance(obj, StreamingFrame):
            return self.frame(obj)
        return self.value(obj)

    def _source_arguments(self, func: Any, args: list[Any], kwargs: dict[str, Any],
                          root: Any) -> tuple[list[Any], dict[str, Any]]:
        """Secrets to environment variables; the URL or path becomes the ``--source`` option."""
        kwargs = self._secrets(func, args, kwargs)
        try:
            bound = inspect.signature(func).bind_partial(*args, **kwargs)
        except TypeError as exc:  # pragma: no cover - the call already succeeded once
            msg = (f"cannot read the source's arguments: {exc}")
            raise self._error(msg) from exc
        for slot in ("url", "path"):
            # a source inside another (rtnb.sources.hybrid's history and live) keeps its own
            if slot in bound.arguments and root is self.pipeline.root:
                default = bound.arguments[slot]
                what = "URL" if slot == "url" else "file"
                extra = ""
                if isinstance(default, _SecretURL):
                    bound.arguments[slot] = _Raw(default.code(f"source or {default.url!r}"))
                    extra = ("; its credential query parameters, when empty or missing, "
                             "come from the environment")
                else:
                    bound.arguments[slot] = _Raw(f"source or {self.value(default)}")
                self.parts.source_option = _Option(
                    "source", "--source", "str | None", "None",
                    f"{what} of source {root.name!r} (default: as exported){extra}")
                break
        return list(bound.args), dict(bound.kwargs)

    def _secrets(self, func: Any, args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
        node = identifier(self.node[-1] if self.node else "sink").upper()
        try:
            params = inspect.signature(func).parameters
        except (TypeError, ValueError):  # pragma: no cover
            return kwargs
        for secret, env_kw in _SECRET_KWARGS.items():
            if kwargs.get(secret) is None:
                continue
            variable = self._variable(f"RTNB_{node}_{secret.upper()}")
            if env_kw in params:
                kwargs.pop(secret)
                kwargs[env_kw] = variable
            else:
                kwargs[secret] = self._env_code(variable)
            self.parts.env.append(_Env(variable, f"{secret} of {self.node[-1]!r}"))
        for env_kw in _SECRET_KWARGS.values():
            if isinstance(kwargs.get(env_kw), str):
                entry = _Env(kwargs[env_kw], f"{env_kw[:-4]} of {self.node[-1]!r}")
                if entry not in self.parts.env:
                    self.parts.env.append(entry)
        headers = kwargs.get("headers")
        if isinstance(headers, Mapping) and any(secret_header(str(k)) for k in headers):
            kwargs["headers"] = {
                k: self._header_secret(node, str(k)) if secret_header(str(k)) and v else v
                for k, v in headers.items()}
        # Credentials inside a URL (password, token user name, query parameters): taken out
        # of the URL, read from the environment instead.
        names = list(params)
        for i, value in enumerate(args):
            if isinstance(value, str) and i < len(names) and names[i] == "url":
                args[i] = self._url_secrets(value, kwargs, params)
        if isinstance(kwargs.get("url"), str):
            kwargs["url"] = self._url_secrets(kwargs["url"], kwargs, params)
        return kwargs

    def _variable(self, name: str) -> str:
        """``name`` as an environment variable (``A-Z0-9_``) no other secret of the script uses."""
        base = re.sub(r"[^A-Z0-9_]+", "_", name.upper()).strip("_")
        taken = {e.variable for e in self.parts.env}
        variable, i = base, 2
        while variable in taken:
            variable, i = f"{base}_{i}", i + 1
        return variable

    def _helpers(self, *, url: bool = False) -> None:
        """The script defines ``env_secret`` (and ``url_with_secrets``) and imports theirs."""
        self.parts.secret_helpers = True
        self.parts.imports.add("import os")
        if url:
            self.parts.url_helper = True
            self.parts.imports.add("import urllib.parse")

    def _env_code(self, variable: str) -> _Raw:
        self._helpers()
        return _Raw(f"env_secret({variable!r})")

    def _header_secret(self, node: str, header: str) -> _Raw:
        variable = self._variable(f"RTNB_{node}_{header}")
        self.parts.env.append(_Env(variable, f"header {header!r} of {self.node[-1]!r}"))
        return self._env_code(variable)

    def _url_secrets(self, url: str, kwargs: dict[str, Any],
                     params: Mapping[str, Any]) -> str | _SecretURL:
        """``url`` without its credentials; a :class:`_SecretURL` if the script puts some back."""
        node = identifier(self.node[-1]).upper()
        where = self.node[-1]
        try:
            parts = urlsplit(url)
            password = parts.password
        except ValueError as exc:
            msg = f"cannot read its URL ({exc})"
            raise self._error(msg) from exc
        userinfo, _, host = parts.netloc.rpartition("@")
        user_var = password_var = None
        if password is not None:
            userinfo = userinfo.split(":", 1)[0]
            if "password_env" not in params:  # the script puts it back into the URL
                password_var = self._variable(f"RTNB_{node}_URL_PASSWORD")
                self.parts.env.append(_Env(password_var, f"password of {where!r}"))
            elif kwargs.get("password_env") is None:  # the call reads it itself
                kwargs["password_env"] = self._variable(f"RTNB_{node}_PASSWORD")
                self.parts.env.append(_Env(kwargs["password_env"], f"password of {where!r}"))
        elif token_user(url):
            userinfo = ""
            if "token_env" not in params:
                user_var = self._variable(f"RTNB_{node}_URL_TOKEN")
                self.parts.env.append(_Env(user_var, f"token (URL user name) of {where!r}"))
            elif kwargs.get("token_env") is None:
                kwargs["token_env"] = self._variable(f"RTNB_{node}_TOKEN")
                self.parts.env.append(_Env(kwargs["token_env"], f"token of {where!r}"))
        netloc = f"{userinfo}@{host}" if userinfo else host
        query: list[tuple[str, str]] = []
        items = []
        for item in parts.query.split("&") if parts.query else []:
            name, sep, value = item.partition("=")
            if value and secret_param(name):
                decoded = unquote_plus(name)
                if decoded in dict(query):
                    msg = (f"its URL gives the credential query parameter {decoded!r} twice; "
                           "give it once")
                    raise self._error(msg)
                variable = self._variable(f"RTNB_{node}_{decoded}")
                query.append((decoded, variable))
                self.parts.env.append(_Env(variable, f"query parameter {decoded!r} of the URL "
                                                     f"of {where!r}"))
                value = ""
            items.append(f"{name}{sep}{value}")
        if any(secret_param(item.partition("=")[0]) and item.partition("=")[2]
               for item in parts.fragment.split("&")):
            msg = ("its URL's #fragment holds a credential; remove it (a client never sends "
                   "the fragment to the server)")
            raise self._error(msg)
        clean = urlunsplit((parts.scheme, netloc, parts.path, "&".join(items), parts.fragment))
        if not query and user_var is None and password_var is None:
            return clean
        self._helpers(url=True)
        return _SecretURL(clean, tuple(query), user_var, password_var)

    # -- values -------------------------------------------------------------------------
    def value(self, v: Any) -> str:
        from rtnb.frame import StreamingFrame, StreamingSeries

        if isinstance(v, _Raw):
            return v.code
        if isinstance(v, _SecretURL):
            return v.code(repr(v.url))
        if _is_view(v):
            return self.node_object(v)
        if isinstance(v, StreamingFrame):
            return self.frame(v)
        if isinstance(v, StreamingSeries):
            return self._series(v)
        if isinstance(v, Param):
            return self.param(v)
        call = _record.call_of(v)
        if call is not None:
            return self.call(call)
        if v is None or isinstance(v, bool | int | str | bytes):
            return repr(v)
        if isinstance(v, float):
            return repr(v) if math.isfinite(v) else f"float({str(v)!r})"
        if isinstance(v, np.generic):
            return self.value(v.item())
        if isinstance(v, pd.Timedelta | _dt.timedelta):
            return repr(duration_code(pd.Timedelta(v)))
        if isinstance(v, pd.Timestamp | _dt.datetime):
            self.parts.imports.add("import pandas as pd")
            return f"pd.Timestamp({pd.Timestamp(v).isoformat()!r})"
        if isinstance(v, PurePath):
            return self._path(Path(v))
        if isinstance(v, pd.DataFrame):
            return self._frame_value(v)
        if isinstance(v, list):
            return "[" + ", ".join(self.value(x) for x in v) + "]"
        if isinstance(v, tuple):
            items = ", ".join(self.value(x) for x in v)
            return f"({items},)" if len(v) == 1 else f"({items})"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{self.value(k)}: {self.value(x)}" for k, x in v.items()) + "}"
        if isinstance(v, set | frozenset):
            return "{" + ", ".join(sorted(self.value(x) for x in v)) + "}" if v else "set()"
        if callable(v):
            return self.function(v)
        msg = (f"cannot write a {type(v).__name__} ({v!r:.80}) as code; pass "
              "plain values, Params or rtnb objects")
        raise self._error(msg)

    def _series(self, series: Any) -> str:
        out = []
        for token in series.code:
            if isinstance(token, str):
                out.append(token)
            elif isinstance(token, _record.Value):
                out.append(self.value(token.value))
            else:
                out.append(self.frame(token))
        return "".join(out)

    def param(self, param: Param) -> str:
        key = id(param)
        if key not in self.parts.params:
            self.parts.params[key] = (self._fresh(param.name), param)
        return self.parts.params[key][0]

    def _path(self, path: Path) -> str:
        from rtnb import datasets

        try:
            if path.resolve() == datasets.path(path.name).resolve():
                return f"rtnb.datasets.path({path.name!r})"
        except Exception:
            pass
        return repr(str(path))

    def _frame_value(self, df: pd.DataFrame) -> str:
        self.parts.imports.add("import pandas as pd")
        if len(df) == 0:
            cols = ", ".join(f"{self.value(str(c))}: pd.Series(dtype={str(t)!r})"
                             for c, t in df.dtypes.items())
            return f"pd.DataFrame({{{cols}}})"
        base = identifier(self.node[-1] if self.node else "data")
        name = f"{base}.parquet"
        i = 2
        while name in self.parts.data_files:
            name, i = f"{base}_{i}.parquet", i + 1
        self.parts.data_files[name] = df
        return f"pd.read_parquet(HERE / {self.data_dir!r} / {name!r})"

    # -- user functions -----------------------------------------------------------------
    def function(self, fn: Any) -> str:
        if isinstance(fn, types.BuiltinFunctionType):
            module = getattr(fn, "__module__", None) or "builtins"
            if module == "builtins":
                return fn.__name__
            self.parts.imports.add(f"from {module} import {fn.__name__}")
            return fn.__name__
        if not isinstance(fn, types.FunctionType):
            msg = (f"{fn!r:.80} is a callable object, not a function; export "
                  "carries over functions defined with `def`")
            raise self._error(msg)
        if fn.__name__ == "<lambda>":
            msg = ("got a lambda; define it with `def` (in the notebook or a module) "
                  "so its source can be written into the exported script")
            raise self._error(msg)
        module = str(fn.__module__ or "__main__")
        if module != "__main__" and not module.startswith("__"):
            try:
                found = importlib.import_module(module)
            except ImportError:
                found = None
            qualname = str(fn.__qualname__)
            if (found is not None and getattr(found, qualname, None) is fn
                    and _installed(found)):
                self.parts.imports.add(f"from {module} import {qualname}")
                return qualname
        return self._carry(fn)

    def _carry(self, fn: types.FunctionType) -> str:
        if fn.__name__ in self.parts.functions:
            return fn.__name__
        if fn.__code__.co_freevars:
            msg = (
    f"function {fn.__name__!r} is a closure over {list(fn.__code__.co_freevars)!r}; "
    "an exported script cannot rebuild captured state: define it at the top level "
    "of the notebook and pass values as Params or default arguments")
            raise self._error(msg)
        if "." in fn.__qualname__ and "<locals>" in fn.__qualname__:
            msg = (f"function {fn.__name__!r} is defined inside another function; "
                  "define it at the top level of the notebook")
            raise self._error(msg)
        try:
            source = textwrap.dedent(inspect.getsource(fn))
        except (OSError, TypeError) as exc:
            msg = (f"the source of function {fn.__name__!r} is not available "
                  f"({exc}); define it in a notebook cell or a module")
            raise self._error(msg) from exc
        self.parts.functions[fn.__name__] = _Function(fn.__name__, source)
        self.taken.add(fn.__name__)
        for name in sorted(set(_global_names(fn.__code__)) | _source_names(source)):
            if name not in fn.__globals__ or name in self.parts.functions:
                continue
            self._global(name, fn.__globals__[name], fn.__name__)
        return fn.__name__

    def _global(self, name: str, value: Any, user: str) -> None:
        if isinstance(value, types.ModuleType):
            if not _installed(value):
                msg = (f"function {user!r} uses the module {value.__name__!r}, which is not "
                       "installed (only importable from here); install it, or define what "
                       "the function needs in the notebook")
                raise self._error(msg)
            real = value.__name__
            if real == name:
                self.parts.imports.add(f"import {real}")
            elif "." in real and real.rsplit(".", 1)[1] == name:
                parent, child = real.rsplit(".", 1)
                self.parts.imports.add(f"from {parent} import {child}")
            else:
                self.parts.imports.add(f"import {real} as {name}")
        elif isinstance(value, types.FunctionType | type | types.BuiltinFunctionType):
            if getattr(value, "__module__", None) == "__main__" and isinstance(
                    value, types.FunctionType):
                self._carry(value)
            else:
                self.function(value) if isinstance(value, types.FunctionType) else (
                    self.parts.imports.add(f"from {value.__module__} import {value.__qualname__}"))
        elif value is None or isinstance(value, bool | int | float | str | tuple | frozenset):
            self.parts.functions[name] = _Function(name, f"{name} = {value!r}\n")
        else:
            msg = (
    f"function {user!r} uses the notebook global {name!r} ({type(value).__name__}), "
    "which export cannot write as code; pass it as an argument or a Param")
            raise self._error(msg)


def _installed(module: types.ModuleType) -> bool:
    """Whether ``module`` is importable wherever rtnb is installed.

    True for the standard library, site-packages and rtnb itself; false for modules found only
    through this process's working directory or test root.
    """
    import sysconfig

    if module.__name__.split(".")[0] in ("rtnb", *sys.builtin_module_names):
        return True
    file = getattr(module, "__file__", None)
    if file is None:
        return False
    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return any(Path(file).resolve().is_relative_to(Path(r).resolve()) for r in roots)


@dataclass(frozen=True)
class _Raw:
    code: str


def _source_names(source: str) -> set[str]:
    """The free names the function's source reads, annotations included."""
    tree = ast.parse(source)
    loaded: set[str] = set()
    local: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else local).add(node.id)
        elif isinstance(node, ast.arg):
            local.add(node.arg)
    return loaded - local


def _global_names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _global_names(const)


# -- the file ---------------------------------------------------------------------------------
_OPTION_TYPES = {"duration": "str", "float": "float", "int": "int", "bool": "bool", "choice": "str"}


def _param_code(var: str, param: Param, writer: _Writer) -> str:
    kwargs = []
    for attr in ("min", "max", "step", "choices"):
        value = getattr(param, attr)
        if value is not None:
            kwargs.append(f"{attr}={writer.value(list(value) if attr == 'choices' else value)}")
    kwargs.append(f"name={param.name!r}")
    if param.doc:
        kwargs.append(f"doc={param.doc!r}")
    kwargs.append(f"kind={param.kind!r}")
    return f"{var} = rtnb.Param(params[{param.name!r}], {', '.join(kwargs)})"


def _param_default(param: Param) -> Any:
    value = param.value
    if isinstance(value, pd.Timedelta):
        return duration_code(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def render_script(pipeline: Pipeline, *, names: Mapping[int, str], title: str, origin: str,
                  data_dir: str, app: bool = False, sinks: bool = True,
                  ) -> tuple[str, dict[str, pd.DataFrame], list[tuple[str, str]]]:
    """The script's text, its data files (name -> frame) and environment variables.

    The code of each piece (node assignments, Params, options, imports) is computed here; the
    templates in ``rtnb/export/templates/`` lay the file out: ``script.py.jinja`` for a
    headless script, ``app.py.jinja`` for a Bokeh server app.

    Parameters
    ----------
    pipeline
        The pipeline to write.
    names
        Node id -> the variable name the user gave it.
    title
        The script's name (an identifier), for its docstring and its ``--help``.
    origin
        Where the pipeline came from, for the docstring.
    data_dir
        The folder, next to the script, that the data files are written to.
    app
        Write a Bokeh server app (``bokeh serve`` / ``rtnb serve``) that also rebuilds the
        pipeline's views and its dashboard layout.
    sinks
        Write the pipeline's sinks (``False``: a copy that delivers nothing, as a shadow
        replay builds; see :meth:`rtnb.Pipeline.replay`).

    Returns
    -------
    tuple
        The text, the data files to write (file name -> frame) and the environment variables
        the script reads secrets from (``(variable, what it holds)``).

    Raises
    ------
    ExportError
        If the pipeline has no source, or a node cannot be written as code.
    """
    if pipeline.root.graph.source is None:
        msg = (f"frame {pipeline.root.name!r} has no source (batches are emitted into it by "
               "hand); an exported script needs one, e.g. rtnb.sources.replay(...)")
        raise ExportError(msg)
    writer = _Writer(pipeline, names, data_dir)
    for frame in pipeline.frames:
        writer.frame(frame)
    for sink in pipeline.sinks if sinks else ():
        call = _record.call_of(sink)
        if call is None:
            continue
        writer.node.append(getattr(sink, "name", "sink"))
        try:
            expr = writer.call(call)
        finally:
            writer.node.pop()
        writer.parts.body.append(expr)
    board_var = _app_layout(writer, pipeline) if app else None
    parts = writer.parts
    params = list(parts.params.values())
    # every piece of code is written before the imports are collected: a value may add one
    statements = [_param_code(var, p, writer) for var, p in params] + parts.body
    leaves = [writer.vars[id(f)] for f in pipeline.leaves() if id(f) in writer.vars]
    # nodes the notebook named go by those names in the script's metrics (``node`` label)
    labelled = [writer.vars[id(f)] for f in pipeline.frames
                if id(f) in names and id(f) in writer.vars]
    labels = (", labels={" + ", ".join(f"{v!r}: {v}" for v in labelled) + "}") if labelled \
        else ""
    options = [_Option(p.name, "--" + identifier(p.name).rstrip("_").replace("_", "-"),
                       _OPTION_TYPES[p.kind], f"PARAMS[{p.name!r}]", _param_help(p))
               for _, p in params]
    overrides = ", ".join(f"{opt.key!r}: {opt.arg}" for opt in options)
    if parts.source_option is not None:
        options.append(parts.source_option)
    if not app:
        taken = set(_SCRIPT_OPTIONS)
        for opt in options:
            if opt.arg in taken:
                msg = (f"Param {opt.key!r} would be the script's option {opt.flag}, which "
                       "the script already has (python <script> --help lists them); give "
                       "the Param another name")
                raise ExportError(msg)
            taken.add(opt.arg)
    stdlib_imports, third_party_imports = _import_block(
        parts.imports, app=app, path=bool(parts.data_files) or not app)
    template = _templates().get_template("app.py.jinja" if app else "script.py.jinja")
    text = template.render(
        title=title, origin=origin, env=parts.env,
        secret_helpers=parts.secret_helpers, url_helper=parts.url_helper,
        stdlib_imports=stdlib_imports, third_party_imports=third_party_imports,
        data_files=bool(parts.data_files),
        param_defaults=[(p.name, _param_default(p)) for _, p in params],
        functions=[fn.source.rstrip() for fn in parts.functions.values()],
        statements=statements,
        pipeline=f"rtnb.Pipeline({', '.join(leaves)}, name={pipeline.name!r}{labels})",
        board=board_var, options=options, overrides=f"{{{overrides}}}",
        source_argument=(parts.source_option.arg if parts.source_option is not None
                         else "None"),
    )
    ast.parse(text)  # a bug here must not produce a script that does not even parse
    return text, parts.data_files, [(e.variable, e.what) for e in parts.env]


@functools.cache
def _templates() -> jinja2.Environment:
    """The templates of the exported files (Jinja2 is imported on the first export only).

    ``trim_blocks`` and ``lstrip_blocks`` let a ``{% for %}`` or ``{% if %}`` stand on a line
    of its own without leaving that line in the output; ``repr`` writes a Python literal.
    """
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("rtnb.export", "templates"),
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
                             autoescape=False, trim_blocks=True, lstrip_blocks=True)
    env.filters["repr"] = repr
    return env


_STDLIB = frozenset({"collections", "datetime", "functools", "itertools", "json", "math",
                     "operator", "os", "pathlib", "random", "re", "statistics", "string",
                     "sys", "time", "typing", "urllib", "zoneinfo"})


def _import_block(extra: set[str], *, app: bool = False,
                  path: bool = True) -> tuple[list[str], list[str]]:
    """Standard-library imports, then third-party ones, each in isort order (as ruff wants)."""
    if app:
        wanted = {"from typing import Any", "import rtnb", "from bokeh.io import curdoc",
                  "from rtnb.export import dashboard", *extra}
        if path:
            wanted.add("from pathlib import Path")
    else:
        wanted = {"from pathlib import Path", "from typing import Annotated, Any",
                  "import rtnb", "import typer", "from rtnb.export import runtime",
                  "import sys", "from rtnb import shadow", *extra}

    def module(line: str) -> str:
        return line.split()[1]

    def order(line: str) -> tuple[int, str]:
        return (0 if line.startswith("import ") else 1, module(line).lower())

    std = sorted((i for i in wanted if module(i).split(".")[0] in _STDLIB), key=order)
    third = sorted((i for i in wanted if module(i).split(".")[0] not in _STDLIB), key=order)
    return std, third


def _app_layout(writer: _Writer, pipeline: Pipeline) -> str:
    """Write the pipeline's views and its dashboard's layout; return the board variable."""
    views = [v for v in pipeline.views if _record.call_of(v) is not None]
    if not views:
        msg = (f"pipeline {pipeline.name!r} has no views to serve; draw some with "
               "frame.plot.line(...) before export_dashboard()")
        raise ExportError(msg)
    ids = {id(v) for v in views}
    boards = [b for b in pipeline.root.graph.boards
              if any(id(v) in ids and not v.closed for v in b.views)]
    if boards:
        board = boards[-1]
        call = _record.call_of(board)
        assert call is not None
        items = [a for a in call.args if _exportable_item(a)]
        skipped = [a for a in call.args if not _exportable_item(a)]
        if skipped:
            writer.parts.body.append(f"# left out of the dashboard (not rtnb objects): "
                                     f"{', '.join(type(a).__name__ for a in skipped)}")
        options = {k: v for k, v in call.kwargs.items() if k in ("ncols",)}
    else:
        items, options = list(views), {}
    rendered = [writer.value(i) for i in items]
    rendered += [f"{k}={writer.value(v)}" for k, v in options.items()]
    var = writer._fresh("board")
    writer.parts.body.append(f"{var} = dashboard.Board({', '.join(rendered)})")
    return var


def _exportable_item(item: Any) -> bool:
    return isinstance(item, Param) or _is_view(item)


def _is_view(obj: Any) -> bool:
    """Whether ``obj`` is a live view or a status widget (``rtnb.viz``).

    Without the view classes loaded no view can exist: exporting never imports the plotting
    layer (``rtnb.viz`` itself is always loaded, its views on first use).
    """
    kinds = tuple(getattr(module, name) for module, name in (
        (sys.modules.get("rtnb.viz._view"), "View"),
        (sys.modules.get("rtnb.viz.status"), "Status")) if module is not None)
    return bool(kinds) and isinstance(obj, kinds)


def _param_help(param: Param) -> str:
    bounds = ""
    if param.min is not None and param.max is not None:
        lo, hi = _param_default_value(param.min), _param_default_value(param.max)
        bounds = f" ({lo} .. {hi})"
    elif param.choices:
        bounds = f" (one of {', '.join(map(str, param.choices))})"
    doc = param.doc or param.name
    return f"{doc}{bounds}"


def _param_default_value(value: Any) -> Any:
    return duration_code(value) if isinstance(value, pd.Timedelta) else value

