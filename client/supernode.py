"""``seqwatch-node``: an institution checks its set-up and starts its Flower SuperNode.

``python -m client.supernode`` works the same. Subcommands:

* ``check``: every prerequisite of a SuperNode, one line per problem
  (``seqwatch-node: error: ...``), exit status 2 when any fails:

  - the CA file (``--ca``) is readable, a PEM certificate, a CA certificate, not expired;
  - the private key (``--key``) is readable, not world-accessible, an OpenSSH ECDSA key;
  - its public key equals the registered one: ``--public-key`` (default ``KEY.pub``)
    and/or the coordinator's ``institutions.json`` entry (``--registry``, ``--name``);
  - ``--data-path`` exists and holds a readable ``train.*`` event table (``test.*`` optional);
  - ``--output-dir`` exists or can be created, and is writable;
  - ``--superlink`` is ``HOST:PORT`` (``--probe``: the SuperLink answers TLS with a
    certificate that the CA signed for that host name);
  - ``--port`` (the SuperNode's local runtime API) is free;
  - the hash key (``--hash-key-file`` or ``--hash-key``, at most one; else ``$SEQWATCH_HASH_KEY_FILE``
    or ``$SEQWATCH_HASH_KEY``) is not empty and its file not world-accessible;

* ``start``: the same checks, then ``exec flower-supernode --root-certificates CA
  --superlink ADDR --auth-supernode-private-key KEY --port PORT --node-config
  "data-path='...' hash-key='...' output-dir='...'"`` (``--dry-run`` prints it;
  ``--node-config-file FILE`` writes the node config to a 0600 TOML file and passes
  that instead, which keeps the hash key out of the process list; with ``--dry-run`` it
  only says what it would write); arguments after ``--`` go to ``flower-supernode`` unchanged;
* ``demo-data``: write synthetic train/test tables for institution *k* of *n*
  (the data of the simulation's ``synthetic`` data set), for trying a deployment out.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import ssl
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.argtypes import Parser
from common.config import DataConfig
from common.errors import ConfigError, SeqwatchError

PROG = "seqwatch-node"
_EXIT_PROBLEMS = 2
HASH_KEY_ENV = "SEQWATCH_HASH_KEY"
HASH_KEY_FILE_ENV = "SEQWATCH_HASH_KEY_FILE"
PORT_ENV = "SEQWATCH_NODE_PORT"


@dataclass
class Report:
    """Results of the checks: ok lines and one error line per problem."""

    ok: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def good(self, text: str) -> None:
        self.ok.append(text)

    def bad(self, text: str) -> None:
        self.errors.append(text)

    def warn(self, text: str) -> None:
        self.warnings.append(text)


# --------------------------------------------------------------------------- checks


def _readable(path: Path, what: str, report: Report) -> bytes | None:
    if not path.exists():
        report.bad(f"{what} {path}: no such file")
        return None
    if not path.is_file():
        report.bad(f"{what} {path}: not a file")
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        report.bad(f"{what} {path}: cannot read ({exc.strerror})")
        return None


def check_ca(path: Path, report: Report) -> None:
    from cryptography import x509

    from common.pki import is_ca_cert

    data = _readable(path, "CA certificate", report)
    if data is None:
        return
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        report.bad(f"CA certificate {path}: not a PEM certificate (expected the federation's ca.crt)")
        return
    if not is_ca_cert(cert):
        report.bad(
            f"CA certificate {path}: '{cert.subject.rfc4514_string()}' is not a CA certificate "
            "(did you get the SuperLink's server.pem instead of ca.crt?)"
        )
        return
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        report.bad(
            f"CA certificate {path}: not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d})"
        )
        return
    report.good(f"CA certificate {path}: {cert.subject.rfc4514_string()}")


def check_key(
    key_path: Path,
    public_key: Path | None,
    registry: Path | None,
    name: str | None,
    report: Report,
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from common.pki import PkiError, load_ssh_public, ssh_fingerprint

    data = _readable(key_path, "private key", report)
    if data is None:
        return
    if data.lstrip().startswith((b"ecdsa-sha2-", b"ssh-")):
        report.bad(
            f"private key {key_path}: this is a public key; give the private key (the file without .pub)"
        )
        return
    mode = stat.S_IMODE(key_path.stat().st_mode)
    if mode & stat.S_IRWXO:
        report.bad(
            f"private key {key_path}: mode {mode:04o} lets every user read it; run 'chmod 600 {key_path}' "
            "(0640 with a dedicated group for containers)"
        )
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_ssh_private_key(data, None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        report.bad(f"private key {key_path}: not an unencrypted OpenSSH private key ({exc})")
        return
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        report.bad(f"private key {key_path}: a {type(key).__name__.lstrip('_')}, not ECDSA (use ECDSA P-384)")
        return
    fp = ssh_fingerprint(key.public_key())
    report.good(f"private key {key_path}: ECDSA {key.curve.name}, {fp}")
    checked = False
    if public_key is not None:
        if not public_key.is_file():
            report.bad(f"public key {public_key}: no such file (the registered NAME.pub; or give --registry)")
        else:
            try:
                registered = load_ssh_public(public_key)
            except PkiError as exc:
                report.bad(f"public key {exc}")
            else:
                checked = True
                if ssh_fingerprint(registered) != fp:
                    report.bad(
                        f"private key {key_path} does not belong to the registered public key {public_key} "
                        f"({ssh_fingerprint(registered)}); the SuperLink would refuse this node"
                    )
                else:
                    report.good(f"public key {public_key}: matches the private key")
    if registry is not None:
        try:
            entries = json.loads(registry.read_text(encoding="utf-8")).get("institutions", {})
        except (OSError, ValueError, AttributeError) as exc:
            report.bad(f"registry {registry}: cannot read it ({exc})")
            return
        checked = True
        if name is not None:
            entry = entries.get(name)
            if entry is None:
                report.bad(
                    f"registry {registry}: no institution {name!r} (known: {', '.join(sorted(entries))})"
                )
            elif entry.get("fingerprint") != fp:
                report.bad(
                    f"private key {key_path} does not match {name!r} in {registry} "
                    f"({entry.get('fingerprint')})"
                )
            else:
                report.good(f"registry {registry}: {name!r} has this key")
        else:
            match = [n for n, e in entries.items() if e.get("fingerprint") == fp]
            if match:
                report.good(f"registry {registry}: this key is {match[0]!r}")
            else:
                report.bad(f"registry {registry}: no institution has this key ({fp})")
    if not checked:
        report.warn(
            "no public key or registry to compare the private key with (give --public-key or --registry)"
        )


def check_data(data_path: Path, report: Report) -> None:
    from client.data import SUFFIXES, _find, infer_columns
    from client.datafiles import beside_column_map, read_header
    from common.events import LABEL

    if not data_path.exists():
        report.bad(f"data-path {data_path}: no such folder")
        return
    if not data_path.is_dir():
        report.bad(f"data-path {data_path}: not a folder (expected a folder with train.<ext> and test.<ext>)")
        return
    try:
        train = _find(data_path, "train")
        test = _find(data_path, "test")
    except Exception as exc:
        report.bad(f"data-path {data_path}: {exc}")
        return
    if train is None:
        report.bad(
            f"data-path {data_path}: no train table ({', '.join('train' + s for s in SUFFIXES)}); "
            "write one with 'seqwatch convert' or common.tableio.write_table"
        )
        return
    for path in (train, test):
        if path is None:
            continue
        if not os.access(path, os.R_OK):
            report.bad(f"data-path {path}: not readable by this user")
            continue
        try:
            cols = infer_columns(path)
        except Exception as exc:
            report.bad(f"data-path {path}: {exc}")
            continue
        header = read_header(path, "utf-8")
        col_map = beside_column_map(path)
        if header is not None and col_map is not None:
            named = (cols.sequence, cols.event, cols.order, *cols.numeric, *cols.context, cols.label)
            # a map may name a column with its spaces (' amount') or without, as read_table reads both
            missing = [c for c in named if c is not None and c not in header and c.strip() not in header]
            if missing:
                report.bad(
                    f"data-path {path}: the column map {col_map} names column(s) {missing} that the file "
                    f"lacks (columns: {header}); fix the map or the file's header"
                )
                continue
        # a map without "label" still reads a column named 'label' (common.tableio)
        label = cols.label or (LABEL if header is not None and LABEL in header else None)
        by_name = " (by name; the column map names none)" if label and not cols.label and col_map else ""
        report.good(
            f"data {path.name}: sequence {cols.sequence!r}, event {cols.event!r}, "
            f"label {label!r}{by_name}, numeric {list(cols.numeric)}, context {list(cols.context)}"
        )
        if path == test and label is None and header is not None:
            fix = (
                f'add "label": "COLUMN" to the column map {col_map}'
                if col_map
                else f"write the labels (0 normal, 1 anomalous) in a {LABEL!r} column"
            )
            report.warn(
                f"data-path {path}: no label column in use; this node will report no detection "
                f"figures ({fix})"
            )
    if test is None:
        report.warn(f"data-path {data_path}: no test table; this node reports no detection figures")
    if not report.errors:
        _check_reading(data_path, report)


#: More of a test table's events unseen in its training table than this: likely not the same data.
_UNSEEN_TEST_EVENTS = 0.5


def _check_reading(data_path: Path, report: Report) -> None:
    """Read the data as the node will (:func:`client.data.deployment_data`): every row checked,
    the test table read with the training table's columns."""
    import pandas as pd

    from client.data import read_deployment_data
    from common.errors import SeqwatchError

    try:
        data = read_deployment_data(str(data_path))
    except SeqwatchError as exc:
        report.bad(f"data-path {data_path}: {exc}")
        return
    train = data.train.grouped()
    line = f"data read as the node reads it: {len(train)} training sequences ({train.n_events} events)"
    if data.test is None:
        report.good(line)
        return
    test = data.test.grouped()
    report.good(f"{line}, {len(test)} test sequences ({test.n_events} events)")
    known = pd.Series(test.events).isin(pd.unique(pd.Series(train.events)))
    unseen = 1.0 - float(known.mean()) if len(known) else 0.0
    if unseen > _UNSEEN_TEST_EVENTS:
        report.warn(
            f"data-path {data_path}: {unseen:.0%} of the test table's events never occur in the training "
            f"table; are both the same kind of data (the same system, the same converter)?"
        )


def check_output_dir(path: Path, report: Report) -> None:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        report.bad(f"output-dir {path}: {probe} is not a folder")
    elif not os.access(probe, os.W_OK | os.X_OK):
        report.bad(f"output-dir {path}: {probe} is not writable by this user")
    else:
        report.good(f"output-dir {path}: writable")


def check_superlink(address: str, ca: Path, probe: bool, report: Report) -> None:
    from common.pki import PkiError, validate_address

    try:
        parsed = validate_address(address)
    except PkiError as exc:  # what is wrong: a scheme, no port, a port out of range ...
        report.bad(f"superlink: {exc}")
        return
    if not probe:
        report.good(f"superlink {address}: address format ok")
        return
    host, port = parsed
    try:
        ctx = ssl.create_default_context(cafile=str(ca))
        with (
            socket.create_connection((host, port), timeout=5) as sock,
            ctx.wrap_socket(sock, server_hostname=host),
        ):
            pass
    except ssl.SSLCertVerificationError as exc:
        report.bad(f"superlink {address}: TLS certificate not accepted with {ca}: {exc.verify_message}")
    except (OSError, ssl.SSLError) as exc:
        report.bad(f"superlink {address}: cannot connect over TLS ({exc})")
    else:
        report.good(f"superlink {address}: TLS handshake ok, certificate valid for {host}")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_port(host: str, port: int, report: Report) -> None:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            report.bad(
                f"--port {port}: cannot listen on {host}:{port} ({exc.strerror}); each SuperNode on a host "
                "needs its own port"
            )
            return
    report.good(f"runtime API {host}:{port}: free")


def node_config_value(value: str, what: str) -> str:
    """A node-config string literal Flower parses back unchanged."""
    if "\n" in value or "\r" in value:
        raise ValueError(f"{what} must be one line")
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value and "\\" not in value:
        return f'"{value}"'
    raise ValueError(f"{what} must not contain both ' and \" (or a backslash with ')")


# --------------------------------------------------------------------------- argv


def port_number(text: str) -> int:
    """argparse type of ``--port``: an integer 1-65535 (:func:`common.pki.validate_port`)."""
    from common.pki import PkiError, validate_port

    try:
        return validate_port(text)
    except PkiError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def node_port(args: argparse.Namespace) -> int | None:
    """``--port``, else ``$SEQWATCH_NODE_PORT`` (unset, empty or 0: None, a free port)."""
    if args.port is not None:
        return int(args.port)
    raw = os.environ.get(PORT_ENV, "").strip()
    if raw in ("", "0"):
        return None
    try:
        return port_number(raw)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"${PORT_ENV}: {exc}; fix or unset it (unset: a free port)") from None


def hash_key_source(args: argparse.Namespace) -> tuple[str, Path | None, str | None] | None:
    """Where the hash key comes from: ``(name, file, value)`` with one of file/value; None: no key.

    A flag wins over the environment; both flags (or, without flags, both variables) are refused.
    """
    if args.hash_key_file is not None and args.hash_key is not None:
        raise ConfigError(
            "--hash-key and --hash-key-file both given; give one (prefer --hash-key-file: "
            "--hash-key shows the key in the process list)"
        )
    if args.hash_key_file is not None:
        return "--hash-key-file", Path(args.hash_key_file).expanduser(), None
    if args.hash_key is not None:
        return "--hash-key", None, str(args.hash_key)
    env_file, env_key = os.environ.get(HASH_KEY_FILE_ENV), os.environ.get(HASH_KEY_ENV)
    if env_file is not None and env_key is not None:
        raise ConfigError(
            f"${HASH_KEY_FILE_ENV} and ${HASH_KEY_ENV} are both set; unset one "
            "(or give --hash-key-file, which wins over both)"
        )
    if env_file is not None:
        if not env_file.strip():
            raise ConfigError(
                f"${HASH_KEY_FILE_ENV} is set but empty; set it to the hash key file or unset it"
            )
        return f"${HASH_KEY_FILE_ENV}", Path(env_file).expanduser(), None
    if env_key is not None:
        return f"${HASH_KEY_ENV}", None, env_key
    return None


def hash_key(args: argparse.Namespace) -> str:
    """The shared hash key ("" when none is given); ConfigError when a given one is empty or unreadable."""
    source = hash_key_source(args)
    if source is None:
        return ""
    name, path, value = source
    if path is not None:
        if not path.is_file():
            problem = "not a file" if path.exists() else "no such file"
            raise ConfigError(f"hash key file {path} ({name}): {problem}")
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"hash key file {path} ({name}): cannot read ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"hash key file {path} ({name}): not UTF-8 text") from None
        if not value:
            raise ConfigError(
                f"hash key file {path} ({name}) is empty; write the institutions' shared hash key into it "
                "(was it written from an unset variable?)"
            )
        return value
    assert value is not None
    if not value.strip():
        raise ConfigError(
            f"{name} is empty; give the institutions' shared hash key (or leave {name} out to run "
            "without one: tokens are then NOT protected)"
        )
    return value


def check_hash_key(args: argparse.Namespace, report: Report) -> str:
    """Check the hash key like the private key (it is a secret too); return it ("" when none or bad)."""
    try:
        source = hash_key_source(args)
        key = hash_key(args)
    except ConfigError as exc:
        report.bad(str(exc))
        return ""
    if source is None:
        report.warn(
            f"no hash key (--hash-key-file, --hash-key, ${HASH_KEY_FILE_ENV} or ${HASH_KEY_ENV}): the run "
            "config's vocab.hash-key must then hold the key, or this node refuses every run (the public "
            "simulation key would let the coordinator read your event tokens)"
        )
        return ""
    name, path, _ = source
    if path is None:
        report.good(f"hash key: given by {name}")
        return key
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & stat.S_IRWXO:
        report.bad(
            f"hash key file {path}: mode {mode:04o} lets every user read the shared secret; run "
            f"'chmod 600 {path}' (0640 with a dedicated group for containers)"
        )
        return ""
    report.good(f"hash key file {path}: mode {mode:04o}")
    return key


def node_config(args: argparse.Namespace) -> dict[str, str]:
    conf = {
        "data-path": str(Path(args.data_path).expanduser().resolve()),
        "output-dir": str(Path(args.output_dir).expanduser().resolve()),
    }
    key = hash_key(args)
    if key:
        conf["hash-key"] = key
    return conf


def supernode_argv(args: argparse.Namespace, port: int, node_conf_arg: str) -> list[str]:
    exe = Path(sys.executable).parent / "flower-supernode"
    argv = [
        str(exe) if exe.is_file() else "flower-supernode",
        "--root-certificates",
        str(Path(args.ca).expanduser().resolve()),
        "--superlink",
        args.superlink,
        "--auth-supernode-private-key",
        str(Path(args.key).expanduser().resolve()),
        "--host",
        args.host,
        "--port",
        str(port),
        "--isolation",
        args.isolation,
        "--node-config",
        node_conf_arg,
    ]
    return argv + list(args.extra or [])


def inline_node_config(conf: dict[str, str]) -> str:
    return " ".join(f"{k}={node_config_value(v, k)}" for k, v in conf.items())


def write_node_config_toml(path: Path, conf: dict[str, str]) -> Path:
    from common.pki import write_private

    text = "".join(f"{json.dumps(k)} = {json.dumps(v)}\n" for k, v in conf.items())
    write_private(path, text.encode("utf-8"))
    return path


def run_checks(args: argparse.Namespace, port: int | None) -> Report:
    report = Report()
    ca = Path(args.ca).expanduser()
    key = Path(args.key).expanduser()
    check_ca(ca, report)
    pub = Path(args.public_key).expanduser() if args.public_key else None
    if pub is None and args.registry is None:
        pub = key.with_name(key.name + ".pub")
    check_key(key, pub, Path(args.registry).expanduser() if args.registry else None, args.name, report)
    check_data(Path(args.data_path).expanduser(), report)
    check_output_dir(Path(args.output_dir).expanduser(), report)
    check_superlink(args.superlink, ca, args.probe and not report.errors, report)
    if port is not None:
        check_port(args.host, port, report)
    key_text = check_hash_key(args, report)
    try:
        inline_node_config(node_config(args) if key_text else {"x": "y"})
    except ValueError as exc:
        report.bad(f"node config: {exc}")
    return report


def print_report(report: Report, *, quiet: bool = False) -> None:
    if not quiet:
        for line in report.ok:
            print(f"ok: {line}")
    for line in report.warnings:
        print(f"{PROG}: warning: {line}", file=sys.stderr)
    for line in report.errors:
        print(f"{PROG}: error: {line}", file=sys.stderr)


# --------------------------------------------------------------------------- commands


def cmd_check(args: argparse.Namespace) -> int:
    report = run_checks(args, node_port(args))
    print_report(report, quiet=args.quiet)
    if report.errors:
        print(
            f"{PROG}: {len(report.errors)} problem(s); fix them before starting the SuperNode",
            file=sys.stderr,
        )
        return _EXIT_PROBLEMS
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    port = node_port(args)
    if port is None:
        port = free_port(args.host)
    report = run_checks(args, port)
    print_report(report, quiet=args.quiet)
    if report.errors:
        print(f"{PROG}: {len(report.errors)} problem(s); SuperNode not started", file=sys.stderr)
        return _EXIT_PROBLEMS
    conf = node_config(args)
    if args.node_config_file:
        conf_path = Path(args.node_config_file).expanduser().resolve()
        if args.dry_run:  # a dry run writes nothing
            keys = ", ".join("hash-key=***" if k == "hash-key" else f"{k}={v}" for k, v in conf.items())
            print(f"would write (mode 0600) {conf_path}: {keys}", flush=True)
            conf_arg = str(conf_path)
        else:
            conf_arg = str(write_node_config_toml(conf_path, conf))
    else:
        conf_arg = inline_node_config(conf)
    argv = supernode_argv(args, port, conf_arg)
    shown = shlex.join(argv)
    if "hash-key" in conf and not args.node_config_file:
        shown = shown.replace(node_config_value(conf["hash-key"], "hash-key"), "'***'")
    print(f"{'would run' if args.dry_run else 'starting'}: {shown}", flush=True)
    if args.dry_run:
        return 0
    sys.stdout.flush()
    sys.stderr.flush()
    if os.path.isabs(argv[0]):
        os.execv(argv[0], argv)
    os.execvp(argv[0], argv)
    return 0  # pragma: no cover


def cmd_demo_data(args: argparse.Namespace) -> int:
    from client.datafiles import COLUMN_FILES
    from common.events import canonical_columns
    from common.tableio import write_table
    from simulations.partition import partition
    from simulations.synthetic import SYNTHETIC_KEYS, SyntheticSpec, load_synthetic

    if not 0 <= args.institution < args.of:
        print(f"{PROG}: error: --institution must be in [0, {args.of})", file=sys.stderr)
        return _EXIT_PROBLEMS
    tables = load_synthetic(
        SyntheticSpec(institutions=args.of, users=max(args.users, args.of), seed=args.seed)
    )
    out = Path(args.out).expanduser()
    for split in ("train", "test"):
        part = partition(tables[split], args.of, "natural", key=SYNTHETIC_KEYS["institution"], seed=args.seed)
        path = write_table(part[args.institution], out / f"{split}.{args.format}")
        print(f"{split}: {len(part[args.institution])} sequences -> {path}")
    # the column map beside the tables: the node and `seqwatch fit` then read the same features
    columns = canonical_columns(tables["train"])
    col_map = out / COLUMN_FILES[0]
    col_map.write_text(json.dumps(columns.to_dict(), indent=1) + "\n", encoding="utf-8")
    features = f"numeric {', '.join(columns.numeric)}; context {', '.join(columns.context)}"
    print(f"column map ({features}) -> {col_map}")
    return 0


# --------------------------------------------------------------------------- parser


def _node_flags(p: argparse.ArgumentParser) -> None:
    env = os.environ.get
    g = p.add_argument_group("SuperNode set-up (defaults from SEQWATCH_* environment variables)")
    g.add_argument(
        "--superlink",
        default=env("SEQWATCH_SUPERLINK"),
        required=not env("SEQWATCH_SUPERLINK"),
        help="SuperLink address HOST:PORT ($SEQWATCH_SUPERLINK)",
    )
    g.add_argument(
        "--ca",
        default=env("SEQWATCH_CA", "ca.crt"),
        help="the federation's CA certificate ($SEQWATCH_CA, default ca.crt)",
    )
    g.add_argument(
        "--key",
        default=env("SEQWATCH_NODE_KEY"),
        required=not env("SEQWATCH_NODE_KEY"),
        help="this institution's OpenSSH ECDSA private key ($SEQWATCH_NODE_KEY)",
    )
    g.add_argument(
        "--public-key",
        default=env("SEQWATCH_NODE_PUBLIC_KEY"),
        help="the registered public key ($SEQWATCH_NODE_PUBLIC_KEY; default: KEY.pub unless --registry "
        "is given)",
    )
    g.add_argument(
        "--registry",
        default=env("SEQWATCH_REGISTRY"),
        help="the coordinator's institutions.json to compare the key with ($SEQWATCH_REGISTRY)",
    )
    g.add_argument(
        "--name",
        default=env("SEQWATCH_NODE_NAME"),
        help="this institution's name in the registry ($SEQWATCH_NODE_NAME)",
    )
    g.add_argument(
        "--data-path",
        default=env("SEQWATCH_DATA_PATH"),
        required=not env("SEQWATCH_DATA_PATH"),
        help="folder with train.<ext> (and test.<ext>) event tables ($SEQWATCH_DATA_PATH)",
    )
    g.add_argument(
        "--output-dir",
        default=env("SEQWATCH_OUTPUT_DIR", "seqwatch-output"),
        help="where the local report is written ($SEQWATCH_OUTPUT_DIR, default ./seqwatch-output)",
    )
    # the hash key and the port are read from the environment when used (hash_key_source, node_port):
    # a flag wins over the variables, and a mistyped variable is one error line, not a --help crash
    g.add_argument(
        "--hash-key-file",
        help=f"file holding the institutions' shared hash key, not world-readable (${HASH_KEY_FILE_ENV})",
    )
    g.add_argument(
        "--hash-key",
        help=f"the shared hash key itself (${HASH_KEY_ENV}; visible in the process list: prefer a file); "
        "give at most one of --hash-key and --hash-key-file",
    )
    g.add_argument(
        "--host",
        default=env("SEQWATCH_NODE_HOST", "127.0.0.1"),
        help="bind address of the SuperNode's runtime API ($SEQWATCH_NODE_HOST, default 127.0.0.1)",
    )
    g.add_argument(
        "--port",
        type=port_number,
        help=f"port 1-65535 of the SuperNode's runtime API (${PORT_ENV}; default: a free port)",
    )
    g.add_argument("--probe", action="store_true", help="also try a TLS handshake with the SuperLink")
    g.add_argument("-q", "--quiet", action="store_true", help="print problems only")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="Check an institution's SuperNode set-up and start it.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser(
        "check",
        help="check the set-up (exit 2 when anything is wrong)",
        description="Check the set-up: CA, key, registration, data, output folder, SuperLink address, "
        "port and hash key; one line per problem, exit 2 when anything is wrong.",
    )
    _node_flags(p)
    p.set_defaults(handler=cmd_check)
    p = sub.add_parser(
        "start",
        help="check, then exec flower-supernode (arguments after -- are passed on)",
        description="Run the checks of 'check', then replace this process with flower-supernode "
        "(--dry-run: print the command and write nothing); arguments after -- are passed on.",
    )
    _node_flags(p)
    p.add_argument(
        "--isolation",
        choices=("subprocess", "process"),
        default="subprocess",
        help="ClientApp isolation (process: a separate flower-superexec serves it)",
    )
    p.add_argument(
        "--node-config-file",
        metavar="FILE",
        help="write the node config to this TOML file (0600) and pass it instead of an inline string",
    )
    p.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    p.set_defaults(handler=cmd_start)
    p = sub.add_parser(
        "demo-data",
        help="synthetic train/test tables for institution K of N",
        description="Write synthetic train/test event tables for institution K of N (the simulation's "
        "synthetic data set) into DIR, to try a deployment out.",
    )
    p.add_argument("--institution", type=int, required=True, metavar="K", help="0-based institution index")
    p.add_argument("--of", type=int, default=3, metavar="N", help="number of institutions (default 3)")
    data_defaults = DataConfig()
    users, seed = data_defaults.synthetic_users, data_defaults.seed
    p.add_argument(
        "--users",
        type=int,
        default=users,
        help=f"users over all institutions (default {users}, as data.synthetic-users in a simulation)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=seed,
        help=f"generator seed (default {seed}, as data.seed in a simulation)",
    )
    p.add_argument(
        "--format", choices=("parquet", "csv"), default="parquet", help="table format (default: parquet)"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="the institution's data-path")
    p.set_defaults(handler=cmd_demo_data)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else _EXIT_PROBLEMS
    args.extra = extra
    try:
        return int(args.handler(args))
    except (OSError, ValueError, SeqwatchError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return _EXIT_PROBLEMS
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
