"""``seqwatch-coordinator``: the federation coordinator's tooling (``python -m server.cli`` works too).

Subcommands (all take ``--dir DIR``, before or after the subcommand: the federation folder,
default ``$SEQWATCH_FEDERATION_DIR`` or ``./federation``; see :mod:`common.pki` for its layout):

* ``init-ca``: the federation CA (key + self-signed certificate);
* ``server-cert --san 127.0.0.1 --san superlink.example.org``: the SuperLink's
  TLS certificate and key, signed by the CA;
* ``add-institution NAME [--public-key FILE]``: an ECDSA P-384 SuperNode key pair in
  OpenSSH format (or the institution's own public key), recorded in ``institutions.json``;
* ``list``: the registry;
* ``flwr-config --connection NAME --address HOST:PORT``: write the TLS connection
  ``[superlink.NAME]`` into ``$FLWR_HOME/config.toml`` (what ``flwr run . NAME`` and
  ``flwr supernode register ... NAME`` read);
* ``register [NAME ...] --connection NAME``: run ``flwr supernode register NAME.pub
  CONNECTION --name NAME`` against the running SuperLink for every institution
  (``--print``: only print the commands);
* ``superlink-command``: print the ``flower-superlink`` command line with TLS and
  SuperNode authentication for this folder (``server/scripts/start-superlink.sh`` runs it).

Errors print one line ``seqwatch-coordinator: error: ...`` and exit with status 2. Hosts, ports,
addresses, connection names and ``--days`` are checked when the arguments are parsed, by the same
validators everywhere (:func:`common.pki.validate_host` / ``validate_port`` / ``validate_address`` /
``validate_days``), so ``--print`` variants accept nothing the real commands would refuse.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

from common.argtypes import Parser
from common.errors import SeqwatchError
from common.pki import (
    DEFAULT_SANS,
    Federation,
    PkiError,
    covers,
    issued_by,
    load_cert,
    names_in,
    validate_address,
    validate_days,
    validate_host,
    validate_port,
    validity_problem,
)

PROG = "seqwatch-coordinator"
DEFAULT_DIR_ENV = "SEQWATCH_FEDERATION_DIR"
DEFAULT_PORT = 8000
#: ``show`` flags certificates that expire within this many days.
EXPIRY_WARNING_DAYS = 30


def _flwr_bin(name: str) -> str:
    """A Flower executable: next to this Python first (the venv), else from PATH."""
    here = Path(sys.executable).parent / name
    if here.is_file():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise PkiError(f"'{name}' not found next to {sys.executable} or on PATH; install flwr==1.42.*")
    return found


def flwr_home() -> Path:
    """``$FLWR_HOME`` or ``~/.flwr`` (as Flower resolves it)."""
    return Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr").expanduser()


# --------------------------------------------------------------------------- config.toml


_DEFAULT_CONFIG = """[superlink]
default = "local"

[superlink.local]
address = ":local:"
"""


def validate_connection_name(name: str) -> str:
    """A ``[superlink.NAME]`` connection name of ``$FLWR_HOME/config.toml``."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise PkiError(f"connection name {name!r}: use letters, digits, '_' and '-'")
    return name


def connection_block(name: str, address: str, root_certificates: Path) -> str:
    return (
        f"[superlink.{name}]\n"
        f"address = {json.dumps(address)}\n"
        f"root-certificates = {json.dumps(str(root_certificates))}\n"
    )


def write_flwr_connection(
    home: Path,
    name: str,
    address: str,
    root_certificates: Path,
    *,
    make_default: bool = False,
    force: bool = False,
) -> Path:
    """Add ``[superlink.NAME]`` (TLS, CA file) to ``home/config.toml``; other content is kept verbatim."""
    validate_connection_name(name)
    validate_address(address)
    path = home / "config.toml"
    text = path.read_text(encoding="utf-8") if path.is_file() else _DEFAULT_CONFIG
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PkiError(f"{path}: not valid TOML ({exc}); fix it first") from None
    if name in data.get("superlink", {}):
        if not force:
            raise PkiError(f"{path} already has [superlink.{name}]; use --force to replace it")
        text = (
            re.sub(rf"(?ms)^\[superlink\.{re.escape(name)}\][^\n]*\n.*?(?=^\[|\Z)", "", text).rstrip() + "\n"
        )
    if make_default:
        if re.search(r"(?m)^\[superlink\]\s*$", text):
            block = re.search(r"(?ms)^\[superlink\]\s*\n(.*?)(?=^\[|\Z)", text)
            assert block is not None
            body = block.group(1)
            if re.search(r"(?m)^default\s*=", body):
                body = re.sub(r"(?m)^default\s*=.*$", f"default = {json.dumps(name)}", body)
            else:
                body = f"default = {json.dumps(name)}\n" + body
            text = text[: block.start(1)] + body + text[block.end(1) :]
        else:
            text = f"[superlink]\ndefault = {json.dumps(name)}\n\n" + text
    text = text.rstrip() + "\n\n" + connection_block(name, address, root_certificates)
    tomllib.loads(text)  # still valid
    home.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".config.toml.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- commands


_NOT_THIS_CA = (
    "not signed by this ca.crt (init-ca --force made a new CA): institutions would refuse it; "
    "run server-cert --force with the same --san values and restart the SuperLink"
)


def superlink_argv(
    fed: Federation,
    *,
    host: str = "0.0.0.0",
    port: int = DEFAULT_PORT,
    database: str | None = None,
    log_file: str | None = None,
    isolation: str = "subprocess",
    runtime_dependency_install: bool = False,
) -> list[str]:
    """``flower-superlink`` with TLS on every API and SuperNode authentication."""
    for p in (fed.ca_cert, fed.server_cert, fed.server_key):
        if not p.is_file():
            raise PkiError(f"{p}: missing; run init-ca and server-cert first")
    if not issued_by(load_cert(fed.server_cert), load_cert(fed.ca_cert)):
        raise PkiError(f"{fed.server_cert}: {_NOT_THIS_CA}")
    argv = [
        "flower-superlink",
        "--ssl-ca-certfile",
        str(fed.ca_cert),
        "--ssl-certfile",
        str(fed.server_cert),
        "--ssl-keyfile",
        str(fed.server_key),
        "--enable-supernode-auth",
        "--host",
        host,
        "--port",
        str(port),
        "--isolation",
        isolation,
    ]
    if not runtime_dependency_install:
        argv.append("--disable-runtime-dependency-installation")
    if database:
        argv += ["--database", database]
    if log_file:
        argv += ["--log-file", log_file]
    return argv


def register_argv(fed: Federation, name: str, connection: str) -> list[str]:
    return [
        "flwr",
        "supernode",
        "register",
        str(fed.public_key(name)),
        connection,
        "--name",
        name,
        "--format",
        "json",
    ]


def _register_result(output: str) -> tuple[int | None, str]:
    """(node id or None, error message) from ``flwr supernode register --format json`` output."""
    start, end = output.find("{"), output.rfind("}")
    data = None
    if 0 <= start < end:
        try:
            data = json.loads(output[start : end + 1])
        except ValueError:
            data = None
    if isinstance(data, dict):
        if data.get("node-id") is not None:
            return int(data["node-id"]), ""
        message = str(data.get("error-message", "")).strip()
        return None, " ".join(line.strip() for line in message.splitlines() if line.strip())
    m = re.search(r"SuperNode (\d+) registered", output)
    if m:
        return int(m.group(1)), ""
    return None, " ".join(line.strip() for line in output.strip().splitlines()[-3:])


def register_failure(returncode: int, problem: str, connection: str) -> str:
    """What went wrong with ``flwr supernode register`` and what to check.

    With ``--format json`` flwr 1.42 reports most errors (SuperLink down, TLS failure) as JSON and
    exits 0: the exit status is shown only when it is not 0.
    """
    status = f" (exit status {returncode})" if returncode != 0 else ""
    return (
        f"flwr supernode register failed{status}: {problem.rstrip('.') or 'no error message'}; check that "
        f"the SuperLink is running and reachable through connection '{connection}' "
        f"(flwr supernode list {connection})"
    )


def inside_flower_app(path: Path) -> Path | None:
    """The Flower app folder (pyproject.toml with [tool.flwr.app]) that holds ``path``, if any."""
    for folder in (path, *path.parents):
        project = folder / "pyproject.toml"
        if project.is_file():
            try:
                data = tomllib.loads(project.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError):
                return None
            return folder if "app" in data.get("tool", {}).get("flwr", {}) else None
    return None


def cmd_init_ca(args: argparse.Namespace, fed: Federation) -> int:
    app = inside_flower_app(fed.root)
    if app is not None:
        print(
            f"{PROG}: warning: {fed.root} is inside the Flower app folder {app}: 'flwr run' packs its "
            "*.json files into the FAB unless .gitignore excludes the folder; prefer a folder outside",
            file=sys.stderr,
        )
    path = fed.init_ca(common_name=args.cn, days=args.days, force=args.force)
    print(f"CA certificate: {path}\nCA key:         {fed.ca_key} (0600; keep it offline)")
    print(f"give {path} to every institution (flower-supernode --root-certificates)")
    return 0


def cmd_server_cert(args: argparse.Namespace, fed: Federation) -> int:
    sans = args.san or list(DEFAULT_SANS)
    path = fed.server_cert_issue(sans, days=args.days, force=args.force)
    ends = load_cert(path).not_valid_after_utc
    print(
        f"SuperLink certificate: {path} (SANs: {', '.join(sans)}; valid until {ends:%Y-%m-%d})\n"
        f"SuperLink key:         {fed.server_key}"
    )
    if ends >= load_cert(fed.ca_cert).not_valid_after_utc:  # cut to the CA's end (server_cert_issue)
        print(
            f"{PROG}: warning: the certificate ends with the CA on {ends:%Y-%m-%d}, before the {args.days} "
            "days asked for (a certificate cannot outlive its CA); renew both before then "
            "(init-ca --force, server-cert --force, the new ca.crt to every institution)",
            file=sys.stderr,
        )
    return 0


def cmd_add_institution(args: argparse.Namespace, fed: Federation) -> int:
    before = fed.read_registry()["institutions"].get(args.name) if fed.registry_path.exists() else None
    pub = fed.add_institution(args.name, public_key=args.public_key, force=args.force)
    entry = fed.read_registry()["institutions"][args.name]
    print(f"institution {args.name}: public key {pub} ({entry['fingerprint']})")
    old_node = before.get("node_id") if before else None
    if before is not None and old_node is not None:  # --force replaced a registered key, still admitted
        print(
            f"{PROG}: warning: the replaced key ({before['fingerprint']}) is still registered on the "
            f"SuperLink as node {old_node}, and admitted: remove it (flwr supernode unregister {old_node} "
            f"CONNECTION), then register the new key ({PROG} register {args.name} --connection CONNECTION)",
            file=sys.stderr,
        )
    if args.public_key is None:
        print(
            f"private key {fed.private_key(args.name)} (0600): hand it to {args.name} over a secure "
            "channel, with ca.crt and the SuperLink address"
        )
    return 0


def cmd_list(args: argparse.Namespace, fed: Federation) -> int:
    entries = fed.read_registry()["institutions"]
    if args.json:
        print(json.dumps(entries, indent=1, sort_keys=True))
        return 0
    if not entries:
        print(f"no institutions in {fed.registry_path}")
    for name in sorted(entries):
        e = entries[name]
        node = e.get("node_id")
        print(f"{name:<24} {e['fingerprint']}  node {node if node is not None else '-'}")
    return 0


def cmd_flwr_config(args: argparse.Namespace, fed: Federation) -> int:
    if not fed.ca_cert.is_file():
        raise PkiError(f"{fed.ca_cert}: missing; run init-ca first")
    host, _ = validate_address(args.address)
    if fed.server_cert.is_file() and not covers(cert := load_cert(fed.server_cert), host):
        raise PkiError(
            f"--address {args.address}: {host!r} is not among the names {fed.server_cert.name} is valid "
            f"for ({', '.join(names_in(cert)) or 'none'}), so TLS would refuse the connection; use one of "
            f"them, or re-issue it: server-cert --force --san {host} (with the other names), then restart "
            f"the SuperLink"
        )
    home = Path(args.flwr_home).expanduser() if args.flwr_home else flwr_home()
    if args.print:
        print(connection_block(args.connection, args.address, fed.ca_cert), end="")
        return 0
    path = write_flwr_connection(
        home, args.connection, args.address, fed.ca_cert, make_default=args.default, force=args.force
    )
    print(f"{path}: [superlink.{args.connection}] address {args.address}, root-certificates {fed.ca_cert}")
    return 0


def _check_connection(name: str) -> None:
    """Refuse, once, a connection name that ``$FLWR_HOME/config.toml`` does not define (flwr would
    fail for every institution, and its message blames the network)."""
    path = flwr_home() / "config.toml"
    try:
        defined = tomllib.loads(path.read_text(encoding="utf-8")).get("superlink", {})
    except (OSError, tomllib.TOMLDecodeError):
        defined = {}
    names = sorted(k for k, v in defined.items() if isinstance(v, dict))
    if name not in names:
        raise PkiError(
            f"--connection {name}: no [superlink.{name}] in {path} (connections: "
            f"{', '.join(names) or 'none'}); write it with: {PROG} flwr-config --connection {name} "
            f"--address HOST:PORT"
        )


def cmd_register(args: argparse.Namespace, fed: Federation) -> int:
    names = args.names or fed.institution_names()
    known = set(fed.institution_names())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise PkiError(f"not in {fed.registry_path}: {', '.join(unknown)} (add-institution first)")
    if not names:
        raise PkiError(f"no institutions in {fed.registry_path}; add-institution first")
    if not args.print:
        _check_connection(args.connection)
    failed = 0
    for name in names:
        argv = register_argv(fed, name, args.connection)
        if args.print:
            print(shlex.join(argv))
            continue
        argv[0] = _flwr_bin("flwr")
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
        node, problem = _register_result(proc.stdout + proc.stderr)
        if proc.returncode == 0 and node is not None:
            fed.record_node_id(name, node)
            print(f"{name}: registered as SuperNode {node}")
        elif "already in use" in problem:
            print(f"{name}: already registered (public key already in use)")
        else:
            failed += 1
            why = register_failure(proc.returncode, problem, args.connection)
            print(f"{PROG}: error: {name}: {why}", file=sys.stderr)
    return 2 if failed else 0


def cmd_superlink_command(args: argparse.Namespace, fed: Federation) -> int:
    print(
        shlex.join(
            superlink_argv(
                fed,
                host=args.host,
                port=args.port,
                database=args.database,
                log_file=args.log_file,
                isolation=args.isolation,
                runtime_dependency_install=args.runtime_dependency_install,
            )
        )
    )
    return 0


def cmd_show(args: argparse.Namespace, fed: Federation) -> int:
    """Subjects, SANs and expiry of the CA and SuperLink certificates (expired or expiring soon: said so)."""
    renew = {
        fed.ca_cert: "renew: init-ca --force, server-cert --force, new ca.crt to every institution",
        fed.server_cert: "renew: server-cert --force with the same --san values, restart the SuperLink",
    }
    for p in (fed.ca_cert, fed.server_cert):
        if not p.is_file():
            print(f"{p}: missing")
            continue
        cert = load_cert(p)
        try:
            from cryptography import x509

            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            san_text = ", ".join(str(getattr(s, "value", s)) for s in sans)
        except Exception:
            san_text = "-"
        problem = validity_problem(cert, within_days=EXPIRY_WARNING_DAYS)
        status = ""
        if problem is not None:
            status = f"  ** certificate {problem}" + (f"; {renew[p]}" if "expire" in problem else "") + " **"
        elif p == fed.server_cert and fed.ca_cert.is_file() and not issued_by(cert, load_cert(fed.ca_cert)):
            status = f"  ** {_NOT_THIS_CA} **"
        print(
            f"{p.name}: {cert.subject.rfc4514_string()}  valid until {cert.not_valid_after_utc:%Y-%m-%d}  "
            f"SANs: {san_text}{status}"
        )
    return 0


# --------------------------------------------------------------------------- parser


def arg_type(check: Callable[[str], object], name: str) -> Callable[[str], str]:
    """An argparse ``type=`` from a :mod:`common.pki` validator: the text if ``check`` accepts it."""

    def parse(text: str) -> str:
        try:
            check(text)
        except SeqwatchError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    parse.__name__ = name
    return parse


def int_arg_type(check: Callable[[str], int], name: str) -> Callable[[str], int]:
    """An argparse ``type=`` returning the validator's integer (ports, days)."""

    def parse(text: str) -> int:
        try:
            return check(text)
        except SeqwatchError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = name
    return parse


#: The argparse types every subcommand uses for these values: one validator each (common.pki,
#: validate_connection_name above), so every subcommand, --print or not, checks them alike.
HOST = arg_type(validate_host, "host")
ADDRESS = arg_type(validate_address, "address")
CONNECTION = arg_type(validate_connection_name, "connection")
PORT = int_arg_type(validate_port, "port")
DAYS = int_arg_type(validate_days, "days")


def _dir_flag() -> Parser:
    """``--dir``, accepted after the subcommand too (the value given there wins)."""
    p = Parser(add_help=False)
    p.add_argument(
        "--dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help=f"federation folder (default: ${DEFAULT_DIR_ENV} or ./federation); keep it out of the app "
        "folder that 'flwr run' packs",
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Federation coordinator tooling: CA, SuperLink certificate, institution keys, "
        "SuperNode registration, flwr connection.",
    )
    parser.add_argument(
        "--dir",
        metavar="DIR",
        default=os.environ.get(DEFAULT_DIR_ENV, "federation"),
        help=f"federation folder (default: ${DEFAULT_DIR_ENV} or ./federation); keep it out of the app "
        "folder that 'flwr run' packs; also accepted after the subcommand",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = [_dir_flag()]

    p = sub.add_parser(
        "init-ca", parents=common, help="create the federation CA (key + self-signed certificate)"
    )
    p.add_argument("--cn", default="seqwatch federation CA", help="CA common name")
    p.add_argument("--days", type=DAYS, default=3650, help="validity in days, 1-36500 (default: 3650)")
    p.add_argument("--force", action="store_true", help="replace an existing CA")
    p.set_defaults(handler=cmd_init_ca)

    p = sub.add_parser("server-cert", parents=common, help="SuperLink TLS certificate + key signed by the CA")
    p.add_argument(
        "--san",
        action="append",
        metavar="ADDR",
        help="IP address or DNS name the SuperLink is reached at (repeat; default: 127.0.0.1, localhost)",
    )
    p.add_argument(
        "--days",
        type=DAYS,
        default=825,
        help="validity in days, 1-36500, never beyond the CA's (default: 825)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing certificate and key")
    p.set_defaults(handler=cmd_server_cert)

    p = sub.add_parser(
        "add-institution", parents=common, help="SuperNode key pair (OpenSSH ECDSA P-384) + registry entry"
    )
    p.add_argument("name", help="institution name (also the key file name and the SuperNode name)")
    p.add_argument(
        "--public-key",
        type=Path,
        metavar="FILE",
        help="register the institution's own OpenSSH ECDSA public key instead of generating a key pair "
        "(refused if another institution has it)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing institution's key")
    p.set_defaults(handler=cmd_add_institution)

    p = sub.add_parser("list", parents=common, help="list the registered institutions")
    p.add_argument(
        "--json",
        action="store_true",
        help="print every entry as JSON (public key, SHA256 fingerprint, key files, date added, node id)",
    )
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser(
        "flwr-config", parents=common, help="write the TLS connection into $FLWR_HOME/config.toml"
    )
    p.add_argument(
        "--connection", type=CONNECTION, default="seqwatch", help="connection name (default: seqwatch)"
    )
    p.add_argument(
        "--address",
        type=ADDRESS,
        required=True,
        help="SuperLink address HOST:PORT as in the certificate's SANs",
    )
    p.add_argument("--flwr-home", help="Flower home (default: $FLWR_HOME or ~/.flwr)")
    p.add_argument("--default", action="store_true", help="make it the default connection")
    p.add_argument("--force", action="store_true", help="replace an existing connection of that name")
    p.add_argument("--print", action="store_true", help="only print the TOML snippet")
    p.set_defaults(handler=cmd_flwr_config)

    p = sub.add_parser(
        "register", parents=common, help="flwr supernode register every institution with the SuperLink"
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="institutions (default: all in the registry)")
    p.add_argument(
        "--connection", type=CONNECTION, default="seqwatch", help="flwr connection name (default: seqwatch)"
    )
    p.add_argument("--print", action="store_true", help="only print the commands")
    p.set_defaults(handler=cmd_register)

    p = sub.add_parser(
        "superlink-command", parents=common, help="print the flower-superlink command (TLS + node auth)"
    )
    p.add_argument("--host", type=HOST, default="0.0.0.0", help="bind address (default: 0.0.0.0)")
    p.add_argument("--port", type=PORT, default=DEFAULT_PORT, help=f"port 1-65535 (default: {DEFAULT_PORT})")
    p.add_argument("--database", help="SQLite state file (default: in memory; registrations are lost)")
    p.add_argument("--log-file", help="SuperLink log file")
    p.add_argument(
        "--isolation",
        choices=("subprocess", "process"),
        default="subprocess",
        help="subprocess (default): the SuperLink starts the ServerApp itself; process: a separate "
        "flower-superexec (e.g. a container) does",
    )
    p.add_argument(
        "--runtime-dependency-install",
        action="store_true",
        help="let the SuperLink 'uv sync' the app's dependencies per run (default: off, use this env)",
    )
    p.set_defaults(handler=cmd_superlink_command)

    p = sub.add_parser(
        "show",
        parents=common,
        help=f"show the CA and SuperLink certificates (flags expired ones and those expiring within "
        f"{EXPIRY_WARNING_DAYS} days)",
    )
    p.set_defaults(handler=cmd_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(args.handler(args, Federation.at(args.dir)))
    except (SeqwatchError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
