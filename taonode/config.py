"""Typed node configuration, parsed from TOML and validated as a whole at start-up.

Every section is a frozen dataclass. The parser walks the dataclass fields, so the schema is
written once: a field's type says what TOML value it takes, its metadata says the allowed
range or choices. Unknown keys are rejected, and every problem found is reported at once as
``FILE: dotted.key: problem``. Relative paths are resolved against the config file's folder.

Secrets never live in the config: the keystore password comes from ``password_file`` or the
environment variable named by ``password_env``; an inline ``password`` is refused.
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlparse

import tomli

Role = Literal["prover", "challenger", "voter"]
ROLES: tuple[Role, ...] = ("prover", "challenger", "voter")
SECRET_KEYS = frozenset({"password", "passphrase", "private_key", "secret", "mnemonic"})


class ConfigError(Exception):
    """The configuration is unusable; ``problems`` lists every ``file: key: problem`` line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))

    def report(self, prefix: str = "") -> str:
        """One line for one problem; a header and one line each for several."""
        if len(self.problems) == 1:
            return f"{prefix}invalid configuration: {self.problems[0]}"
        lines = [f"{prefix}invalid configuration ({len(self.problems)} problems):"]
        return "\n".join([*lines, *(f"  {p}" for p in self.problems)])


def _spec(
    *,
    default: Any = dataclasses.MISSING,
    factory: Callable[[], Any] | None = None,
    min: float | None = None,
    max: float | None = None,
    check: Callable[[Any], str | None] | None = None,
    path: bool = False,
    doc: str = "",
) -> Any:
    meta = {"min": min, "max": max, "check": check, "path": path, "doc": doc}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    if default is dataclasses.MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def _check_host(value: str) -> str | None:
    return None if value and " " not in value else "must be a host name or IP address"


def _check_rpc(value: str) -> str | None:
    if value == "embedded":
        return None
    url = urlparse(value)
    if url.scheme in ("http", "https") and url.netloc:
        return None
    return 'must be "embedded" or an http(s):// URL'


def _parse_multiaddr(value: str) -> tuple[list[str], str | None]:
    """(protocol names, problem): parsed by the same library the p2p host uses, so an address
    that passes here cannot fail there (``/ip4/300.0.0.1``, port 99999, a bad peer id)."""
    from multiaddr import Multiaddr

    if not value.startswith("/"):
        return [], f"{value!r} is not a multiaddr (e.g. /ip4/127.0.0.1/tcp/4001)"
    try:
        names = [p.name for p in Multiaddr(value).protocols()]
    except Exception as exc:  # the library raises several types for malformed parts
        reason = str(exc).split(" (string:")[0]
        return [], f"{value!r} is not a valid multiaddr: {reason}"
    return names, None


_HOSTS = ("ip4", "ip6", "dns", "dns4", "dns6")


def _check_listen(value: str) -> str | None:
    names, problem = _parse_multiaddr(value)
    if problem:
        return problem
    if len(names) != 2 or names[0] not in ("ip4", "ip6") or names[1] != "tcp":
        return f"{value!r}: the p2p host listens on /ip4|ip6/<address>/tcp/<port> only"
    return None


def _check_bootstrap(value: str) -> str | None:
    names, problem = _parse_multiaddr(value)
    if problem:
        return problem
    if len(names) != 3 or names[0] not in _HOSTS or names[1] != "tcp" or names[2] != "p2p":
        # Without /p2p/<id> the host cannot authenticate the peer: the daemon used to wait 60 s
        # and then fail with a misleading message.
        return f"{value!r}: a bootstrap address is /ip4|ip6|dns*/<host>/tcp/<port>/p2p/<peer id>"
    return None


def password_file_problem(path: Path) -> str | None:
    """Why ``path`` may not hold a keystore password, or None.

    The docs promise 0600: a password file other users can read hands them the key (with the
    keystore, which is usually next to it), so group/world access is refused, not warned about.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"file not found: {path}"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    if not stat.S_ISREG(mode):
        return f"{path} is not a regular file"
    if mode & 0o077:
        return (
            f"{path} has mode {stat.S_IMODE(mode):04o}: other users can read it; "
            f"run `chmod 600 {path}`"
        )
    return None


def _check_device(value: str) -> str | None:
    if value in ("cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
        return None
    return 'must be "cpu", "cuda" or "cuda:N"'


def _check_env_name(value: str) -> str | None:
    ok = value and (value[0].isalpha() or value[0] == "_")
    return None if ok and value.replace("_", "a").isalnum() else "must be an environment name"


@dataclass(frozen=True)
class NodeSection:
    data_dir: Path = _spec(path=True, doc="folder for the state store, blobs, keys and the lock")
    models_dir: Path | None = _spec(default=None, path=True, doc="default: <data_dir>/models")
    roles: tuple[Role, ...] = _spec(default=(), doc="roles to run unless --role is given")
    name: str = _spec(default="taonode", doc="name used in logs and metrics")
    shutdown_stage_timeout_s: float = _spec(default=10.0, min=0.1, max=300.0)


@dataclass(frozen=True)
class ApiSection:
    host: str = _spec(default="127.0.0.1", check=_check_host)
    port: int = _spec(default=8740, min=0, max=65535)


@dataclass(frozen=True)
class MetricsSection:
    enabled: bool = _spec(default=True)
    loop_lag_interval_s: float = _spec(default=0.25, min=0.01, max=60.0)


@dataclass(frozen=True)
class LogSection:
    format: Literal["json", "console"] = _spec(default="json")
    level: Literal["debug", "info", "warning", "error"] = _spec(default="info")


@dataclass(frozen=True)
class ChainSection:
    rpc: str = _spec(default="embedded", check=_check_rpc)
    chain_id: int = _spec(default=31337, min=1)
    keystore: Path | None = _spec(default=None, path=True)
    password_file: Path | None = _spec(default=None, path=True)
    password_env: str | None = _spec(default=None, check=_check_env_name)
    confirmations: int = _spec(default=1, min=0, max=256)
    deployment: Path | None = _spec(default=None, path=True)
    poll_interval_s: float = _spec(default=1.0, min=0.05, max=60.0)
    tx_timeout_s: float = _spec(default=60.0, min=1.0, max=3600.0)
    max_fee_gwei: float = _spec(default=200.0, min=0.0)


@dataclass(frozen=True)
class P2pSection:
    enabled: bool = _spec(default=True)
    listen: tuple[str, ...] = _spec(default=("/ip4/127.0.0.1/tcp/0",), check=_check_listen)
    bootstrap: tuple[str, ...] = _spec(default=(), check=_check_bootstrap)
    key_file: Path | None = _spec(default=None, path=True)


@dataclass(frozen=True)
class ComputeSection:
    device: str = _spec(default="cpu", check=_check_device)
    threads: int = _spec(default=1, min=1, max=1024)


@dataclass(frozen=True)
class ProverSection:
    max_queue: int = _spec(default=64, min=1, max=100_000)


@dataclass(frozen=True)
class ChallengerSection:
    sample_rate: float = _spec(default=1.0, min=0.0, max=1.0)
    max_concurrent: int = _spec(default=2, min=1, max=1024)


@dataclass(frozen=True)
class VoterSection:
    auto_register: bool = _spec(default=True)
    stake_eth: float = _spec(default=1.0, min=0.0)


@dataclass(frozen=True)
class NodeConfig:
    source: Path
    node: NodeSection
    api: ApiSection
    metrics: MetricsSection
    log: LogSection
    chain: ChainSection
    p2p: P2pSection
    compute: ComputeSection
    prover: ProverSection
    challenger: ChallengerSection
    voter: VoterSection

    def with_roles(self, roles: tuple[Role, ...]) -> NodeConfig:
        return dataclasses.replace(self, node=dataclasses.replace(self.node, roles=roles))

    def redacted(self) -> dict[str, Any]:
        """A JSON-friendly view for logs and ``/v1/status`` (holds no secrets by construction)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "source":
                continue
            section = getattr(self, f.name)
            out[f.name] = {
                k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(section).items()
            }
        return out


SECTIONS: dict[str, type[Any]] = {
    "node": NodeSection,
    "api": ApiSection,
    "metrics": MetricsSection,
    "log": LogSection,
    "chain": ChainSection,
    "p2p": P2pSection,
    "compute": ComputeSection,
    "prover": ProverSection,
    "challenger": ChallengerSection,
    "voter": VoterSection,
}


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(get_args(tp)[0])}"
    if tp is Path:
        return "a path string"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, str(tp)
    )


class _Invalid(Exception):
    pass


def _convert(tp: Any, value: Any, base: Path) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        return _convert(inner[0], value, base)
    if origin is Literal:
        if value not in get_args(tp):
            raise _Invalid(f"must be {_type_name(tp)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise _Invalid(f"must be {_type_name(tp)}, got {type(value).__name__}")
        (item,) = get_args(tp)[:1]
        return tuple(_convert(item, v, base) for v in value)
    if tp is bool:
        if not isinstance(value, bool):
            raise _Invalid(f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(f"must be a number, got {value!r}")
        if not math.isfinite(value):
            raise _Invalid("must be a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _Invalid(f"must be a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise _Invalid(f"must be a path string, got {value!r}")
        path = Path(value).expanduser()
        return path if path.is_absolute() else (base / path)
    raise TypeError(f"unsupported config type {tp!r}")  # a schema bug, not a user error


def _parse_section(
    cls: type[Any], table: Mapping[str, Any], prefix: str, base: Path, errors: list[str]
) -> Any:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key in SECRET_KEYS:
            errors.append(
                f"{prefix}.{key}: secrets are never read from the config; "
                "use password_file or password_env"
            )
        elif key not in fields:
            errors.append(f"{prefix}.{key}: unknown key (allowed: {', '.join(sorted(fields))})")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}"
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                errors.append(f"{key}: missing (required)")
            continue
        try:
            value = _convert(hints[name], table[name], base)
        except _Invalid as exc:
            errors.append(f"{key}: {exc}")
            continue
        meta = f.metadata
        items = value if isinstance(value, tuple) else (value,)
        problem = None
        for item in items:
            if isinstance(item, int | float) and not isinstance(item, bool):
                if meta["min"] is not None and item < meta["min"]:
                    problem = f"must be ≥ {meta['min']}, got {item}"
                elif meta["max"] is not None and item > meta["max"]:
                    problem = f"must be ≤ {meta['max']}, got {item}"
            if problem is None and meta["check"] is not None and isinstance(item, str):
                problem = meta["check"](item)
            if problem:
                break
        if problem:
            errors.append(f"{key}: {problem}")
            continue
        values[name] = value
    if any(e.startswith(prefix + ".") for e in errors):
        return None
    return cls(**values)


def parse_config(
    data: Mapping[str, Any],
    source: Path,
    *,
    environ: Mapping[str, str] | None = None,
    check_files: bool = True,
) -> NodeConfig:
    """Validate a parsed TOML document; raises :class:`ConfigError` listing every problem.

    ``check_files=False`` skips the checks that referenced files and variables exist (for
    validating a config on a machine other than the one it is for).
    """
    errors: list[str] = []
    base = source.parent.resolve()
    for key in data:
        if key not in SECTIONS:
            errors.append(f"{key}: unknown section (allowed: {', '.join(SECTIONS)})")
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            errors.append(f"{name}: must be a table ([{name}])")
            continue
        if name == "node" and name not in data:
            errors.append("node: missing section [node] (data_dir is required)")
            continue
        sections[name] = _parse_section(cls, table, name, base, errors)
    _cross_checks(sections, errors, os.environ if environ is None else environ, check_files)
    if errors:
        raise ConfigError([f"{source}: {e}" for e in errors])
    return NodeConfig(source=source, **sections)


def _cross_checks(
    sections: dict[str, Any], errors: list[str], environ: Mapping[str, str], check_files: bool
) -> None:
    chain: ChainSection | None = sections.get("chain")
    if chain is None:
        return
    if chain.password_file is not None and chain.password_env is not None:
        errors.append("chain.password_env: set password_file or password_env, not both")
    if chain.keystore is not None and chain.password_file is None and chain.password_env is None:
        errors.append("chain.keystore: needs chain.password_file or chain.password_env")
    if not check_files:
        return
    if chain.keystore is not None and not chain.keystore.is_file():
        errors.append(f"chain.keystore: file not found: {chain.keystore}")
    if chain.password_file is not None:
        problem = password_file_problem(chain.password_file)
        if problem is not None:
            errors.append(f"chain.password_file: {problem}")
    if chain.password_env is not None and chain.password_env not in environ:
        errors.append(f"chain.password_env: environment variable {chain.password_env} is not set")
    if chain.deployment is not None and not chain.deployment.is_file():
        errors.append(f"chain.deployment: file not found: {chain.deployment}")


def load_config(
    path: str | Path, *, environ: Mapping[str, str] | None = None, check_files: bool = True
) -> NodeConfig:
    """Read and validate a TOML config file."""
    source = Path(path)
    try:
        raw = source.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{source}: file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read: {exc.strerror}"]) from None
    try:
        data = tomli.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError([f"{source}: not UTF-8 text"]) from None
    except tomli.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: malformed TOML: {exc}"]) from None
    except RecursionError:  # tomli recurses per nesting level of inline arrays and tables
        raise ConfigError([f"{source}: malformed TOML: nested too deeply"]) from None
    return parse_config(data, source, environ=environ, check_files=check_files)


def documented_keys() -> dict[str, list[str]]:
    """Every section and key the schema knows (the example config must cover them all)."""
    return {name: [f.name for f in dataclasses.fields(cls)] for name, cls in SECTIONS.items()}
