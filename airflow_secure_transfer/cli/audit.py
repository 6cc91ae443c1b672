"""Static audit of DAG code: find plain FTP and weakened TLS/SSH verification.

Files are read with :mod:`ast` and never imported or run, so auditing a DAG
folder cannot execute its code. Names are resolved through the file's imports
(``import ftplib as f``, ``from ssl import CERT_NONE as N``), so a variable
called ``ftp`` or a comment mentioning ``ftp://`` is not a finding.

A finding can be silenced on its line with a comment
``# secure-transfer: ignore[STX020]`` (several ids separated by commas) or
``# secure-transfer: ignore`` for all rules; the reason belongs in the same comment.

Limits (it is a linter, not a data-flow analysis): a context built in another
module, or an ``FTP_TLS`` subclass, is not followed; ``prot_p()`` is looked for
on the same variable in the same function (or anywhere in the file when the
object leaves the function), not in the order of the calls.
"""

from __future__ import annotations

import ast
import io
import os
import re
import tokenize
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from airflow_secure_transfer.cli.rules import RULES, Finding, Rule

__all__ = ["audit_file", "audit_paths", "audit_source", "iter_python_files"]

# Directories never descended into.
_SKIP_DIRS = frozenset({"__pycache__", "node_modules", "site-packages", ".git", ".venv", "venv", ".tox"})

_IGNORE_RE = re.compile(r"secure-transfer:\s*ignore(?:\[(?P<ids>[A-Za-z0-9_,\s]+)\])?")
# "ftp://" not preceded by a scheme character or "/" (so "sftp://", "ftps://" and an ftp:// inside
# another URL's path, https://archive/ftp://..., do not match) and followed by something that can
# start a host (so prose such as "ftp:// URIs are refused" does not match either).
_FTP_URI_RE = re.compile(
    r"""(?<![A-Za-z0-9+.\-/])ftp://(?=[^\s'"<>),;])""",  # secure-transfer: ignore[STX020] a pattern
    re.IGNORECASE,
)
# In an f-string, "ftp://" may end a literal part that a {placeholder} continues.
_FTP_URI_END_RE = re.compile(r"(?<![A-Za-z0-9+.\-/])ftp://$", re.IGNORECASE)  # secure-transfer: ignore[STX020]
_TRUE_STRINGS = frozenset({"true", "yes", "on", "1"})
# A flag set in JSON/dict text ('"no_host_key_check": true') or a URI query ('?no_host_key_check=true');
# prose ("no_host_key_check = true is refused") is not matched.
_JSON_FLAG_RE = {
    key: re.compile(
        rf"""(?:["']{key}["']\s*:\s*["']?|[?&;]{key}=)(?:true|yes|on|1)\b""",
        re.IGNORECASE,
    )
    for key in ("no_host_key_check", "allow_host_key_change")
}

_STOCK_FTP = frozenset({"FTPHook", "FTPFileTransmitOperator", "FTPSensor", "FTPOperator"})
_STOCK_FTPS = frozenset({"FTPSHook", "FTPSFileTransmitOperator", "FTPSSensor"})
_STOCK_FIX = {
    "FTPHook": "use SecureFTPSHook(ftps_conn_id=...) with a secure_ftps connection",
    "FTPSHook": "use SecureFTPSHook(ftps_conn_id=...) with a secure_ftps connection",
    "FTPFileTransmitOperator": "use SecureUploadOperator(conn_id=..., local_path=..., remote_path=...) "
    "with a secure_ftps connection",
    "FTPSFileTransmitOperator": "use SecureUploadOperator(conn_id=..., local_path=..., remote_path=...) "
    "with a secure_ftps connection",
    "FTPOperator": "use SecureUploadOperator(conn_id=...) with a secure_ftps connection",
    "FTPSensor": "poll with SecureFTPSHook (a secure_ftps connection) in a @task.sensor",
    "FTPSSensor": "poll with SecureFTPSHook (a secure_ftps connection) in a @task.sensor",
}
_PARAMIKO_POLICIES = frozenset(
    {
        "paramiko.AutoAddPolicy",
        "paramiko.WarningPolicy",
        "paramiko.client.AutoAddPolicy",
        "paramiko.client.WarningPolicy",
    }
)
_UNVERIFIED_CTX = frozenset({"ssl._create_unverified_context", "ssl._create_stdlib_context"})
_CERT_NONE = frozenset({"ssl.CERT_NONE", "ssl.VerifyMode.CERT_NONE"})
_WEAK_TLS = frozenset(
    {
        "ssl.PROTOCOL_TLSv1",
        "ssl.PROTOCOL_TLSv1_1",
        "ssl.PROTOCOL_SSLv2",
        "ssl.PROTOCOL_SSLv3",
        "ssl.TLSVersion.SSLv3",
        "ssl.TLSVersion.TLSv1",
        "ssl.TLSVersion.TLSv1_1",
        "ssl.TLSVersion.MINIMUM_SUPPORTED",
        "ssl.OP_NO_TLSv1_2",
    }
)
_WEAK_TLS_STRINGS = frozenset({"tlsv1", "tlsv1.0", "tlsv1.1", "tls1.0", "tls1.1", "1.0", "1.1", "sslv3"})
# Names that "from MODULE import *" brings in, for the modules we look at.
_STAR_NAMES = {
    "ftplib": frozenset({"FTP", "FTP_TLS"}),
    "ssl": frozenset({"CERT_NONE", "SSLContext", "PROTOCOL_TLS", "PROTOCOL_TLS_CLIENT", "wrap_socket"}),
    "paramiko": frozenset({"AutoAddPolicy", "WarningPolicy"}),
}
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.Module)


def _rule(rule_id: str) -> Rule:
    return RULES[rule_id]


class _Analyzer:
    """Walks one module's AST once and collects findings."""

    def __init__(self, tree: ast.Module, source: str, path: str) -> None:
        self.tree = tree
        self.path = path
        self.lines = source.splitlines()
        self.findings: list[Finding] = []
        self._seen: set[tuple[str, int, int]] = set()
        self.parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
        self.aliases: dict[str, str] = {}
        self.star_modules: set[str] = set()
        self._collect_imports()
        self.docstrings = self._docstring_nodes()

    # ------------------------------------------------------------------ helpers

    def _collect_imports(self) -> None:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self.aliases[alias.asname] = alias.name
                    else:
                        # "import a.b" binds "a"; "a.b.X" then resolves through the attribute chain.
                        top = alias.name.split(".")[0]
                        self.aliases[top] = top
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    if alias.name == "*":
                        self.star_modules.add(node.module)
                    else:
                        self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def _docstring_nodes(self) -> set[ast.AST]:
        found: set[ast.AST] = set()
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
                first = node.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                    found.add(first.value)
        return found

    def qualname(self, node: ast.AST) -> str | None:
        """Resolve a Name/Attribute chain to a dotted name through the imports, or None."""
        if isinstance(node, ast.Name):
            if node.id in self.aliases:
                return self.aliases[node.id]
            for module in self.star_modules:
                if node.id in _STAR_NAMES.get(module, ()):
                    return f"{module}.{node.id}"
            return None
        if isinstance(node, ast.Attribute):
            base = self.qualname(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def _column(self, lineno: int, col_offset: int) -> int:
        # ast columns are UTF-8 byte offsets; report 1-based character columns.
        if 1 <= lineno <= len(self.lines):
            prefix = self.lines[lineno - 1].encode("utf-8")[:col_offset]
            return len(prefix.decode("utf-8", errors="replace")) + 1
        return col_offset + 1

    def report(self, rule_id: str, node: ast.AST, message: str, fix: str | None = None) -> None:
        lineno = getattr(node, "lineno", 1)
        col = getattr(node, "col_offset", 0)
        key = (rule_id, lineno, col)
        if key in self._seen:
            return
        self._seen.add(key)
        end_line = getattr(node, "end_lineno", None)
        end_col = getattr(node, "end_col_offset", None)
        rule = _rule(rule_id)
        self.findings.append(
            Finding(
                rule=rule,
                message=message,
                fix=fix or rule.fix,
                path=self.path,
                line=lineno,
                column=self._column(lineno, col),
                end_line=end_line,
                end_column=self._column(end_line, end_col) if end_line is not None and end_col is not None else None,
            )
        )

    def _in_check(self, node: ast.AST) -> bool:
        """Whether a reference is only inspected (isinstance, comparison, except clause), not used."""
        child: ast.AST = node
        parent = self.parents.get(child)
        while isinstance(parent, (ast.Attribute, ast.Tuple, ast.List)) and child is not getattr(parent, "func", None):
            child, parent = parent, self.parents.get(parent)
        if isinstance(parent, ast.Compare):
            return True
        if isinstance(parent, ast.ExceptHandler):
            return True
        if isinstance(parent, ast.Call) and child in parent.args:
            func = parent.func
            if isinstance(func, ast.Name) and func.id in ("isinstance", "issubclass"):
                return True
            if isinstance(func, ast.Attribute) and func.attr in ("startswith", "endswith", "index", "find"):
                return True
        return False

    def _in_annotation(self, node: ast.AST) -> bool:
        """Whether a reference is (part of) a type annotation: naming a type is not using it."""
        child: ast.AST = node
        parent = self.parents.get(child)
        while parent is not None and not isinstance(parent, (ast.stmt, ast.arg)):
            child, parent = parent, self.parents.get(parent)
        if isinstance(parent, ast.arg):
            return child is parent.annotation
        if isinstance(parent, ast.AnnAssign):
            return child is parent.annotation
        if isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return child is parent.returns
        return False

    def _outermost_ref(self, node: ast.AST) -> bool:
        """True unless the node is the inner part of a longer attribute chain (``ssl`` in ``ssl.X``)."""
        return not isinstance(self.parents.get(node), ast.Attribute)

    @staticmethod
    def _kw(call: ast.Call, name: str) -> ast.keyword | None:
        for kw in call.keywords:
            if kw.arg == name:
                return kw
        return None

    @staticmethod
    def _truthy(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool):
                return value
            if isinstance(value, int):
                return value == 1
            if isinstance(value, str):
                return value.strip().lower() in _TRUE_STRINGS
        return False

    @staticmethod
    def _is_false(node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) and node.value is False

    def _scope(self, node: ast.AST) -> ast.AST:
        parent = self.parents.get(node)
        while parent is not None and not isinstance(parent, _SCOPES):
            parent = self.parents.get(parent)
        return parent if parent is not None else self.tree

    # ------------------------------------------------------------------ driver

    def run(self) -> list[Finding]:
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Load):
                self._reference(node)
            if isinstance(node, ast.Call):
                self._call(node)
            elif isinstance(node, ast.Assign):
                self._assign(node)
            elif isinstance(node, ast.Dict):
                self._dict(node)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                self._string(node)
        return self.findings

    # ------------------------------------------------------------------ references

    def _reference(self, node: ast.Name | ast.Attribute) -> None:
        if not self._outermost_ref(node):
            return
        name = self.qualname(node)
        if name is None:
            return
        checked = self._in_check(node) or self._in_annotation(node)
        last = name.rsplit(".", 1)[-1]
        if name == "ftplib.FTP" and not checked:
            self.report("STX001", node, "ftplib.FTP is plain FTP: the password and the files are sent in clear")
        elif name.startswith("airflow.") and last in _STOCK_FTP and not checked:
            self.report(
                "STX010",
                node,
                f"{last} (stock FTP provider) uses plain FTP: the password and the files are sent in clear",
                _STOCK_FIX[last],
            )
        elif name.startswith("airflow.") and last in _STOCK_FTPS and not checked:
            self.report(
                "STX011",
                node,
                f"{last} (stock FTP provider): no private CA or pin, no TLS session reuse (fails on vsftpd), "
                "PBSZ/PROT sent before TLS when no login is set",
                _STOCK_FIX[last],
            )
        elif name in _PARAMIKO_POLICIES and not checked:
            self.report("STX030", node, f"{last} accepts any SSH host key: a man in the middle gets the password")
        elif name in _UNVERIFIED_CTX:
            self.report("STX040", node, f"{name} returns a context that verifies neither certificate nor hostname")
        elif name in _CERT_NONE and not checked:
            self.report("STX041", node, "CERT_NONE: the server's certificate is not verified")
        elif name in _WEAK_TLS and not checked:
            self.report("STX044", node, f"{name} allows TLS below 1.2 (or SSL)")

    # ------------------------------------------------------------------ calls

    def _call(self, call: ast.Call) -> None:
        name = self.qualname(call.func)
        for kw in call.keywords:
            self._keyword(call, kw, name)
        if name == "ftplib.FTP_TLS":
            self._ftp_tls(call)
        elif name in ("ssl.SSLContext", "ssl.wrap_socket"):
            self._ssl_context(call, name)
        elif isinstance(call.func, ast.Attribute) and call.func.attr in ("ccc", "prot_c") and not call.args:
            if any(v == "ftplib" or v.startswith("ftplib.") for v in self.aliases.values()) or (
                "ftplib" in self.star_modules
            ):
                self.report(
                    "STX004",
                    call,
                    f"{call.func.attr}() switches the FTPS "
                    f"{'control' if call.func.attr == 'ccc' else 'data'} channel back to clear text",
                )

    def _keyword(self, call: ast.Call, kw: ast.keyword, func_name: str | None) -> None:
        if kw.arg == "no_host_key_check" and self._truthy(kw.value):
            self.report("STX031", kw.value, "no_host_key_check=True: any SSH server is trusted")
        elif kw.arg == "allow_host_key_change" and self._truthy(kw.value):
            self.report("STX032", kw.value, "allow_host_key_change=True: a changed host key is accepted")
        elif kw.arg == "check_hostname" and self._is_false(kw.value):
            self.report("STX042", kw.value, "check_hostname=False: the certificate may belong to another host")
        elif kw.arg == "known_hosts" and isinstance(kw.value, ast.Constant) and kw.value.value is None:
            if func_name is not None and func_name.startswith("asyncssh."):
                self.report("STX033", kw.value, "known_hosts=None: asyncssh accepts any server host key")
        elif kw.arg in ("cert_reqs", "ssl_cert_reqs") and isinstance(kw.value, ast.Constant):
            if str(kw.value.value).upper() in ("CERT_NONE", "NONE"):
                self.report("STX041", kw.value, f"{kw.arg}={kw.value.value!r}: the certificate is not verified")
        elif kw.arg in ("min_tls_version", "minimum_version", "ssl_version") and isinstance(kw.value, ast.Constant):
            if str(kw.value.value).strip().lower() in _WEAK_TLS_STRINGS:
                self.report("STX044", kw.value, f"{kw.arg}={kw.value.value!r} allows TLS below 1.2")

    def _ftp_tls(self, call: ast.Call) -> None:
        # Python 3.11 signature: FTP_TLS(host, user, passwd, acct, keyfile, certfile, context, timeout, ...)
        context: ast.AST | None = None
        kw = self._kw(call, "context")
        if kw is not None:
            context = kw.value
        elif len(call.args) > 6:
            context = call.args[6]
        unpacked = any(kw.arg is None for kw in call.keywords) or any(isinstance(a, ast.Starred) for a in call.args)
        if unpacked and context is None:
            pass  # FTP_TLS(*args, **options): the context may be in there; do not guess
        elif context is None or (isinstance(context, ast.Constant) and context.value is None):
            self.report(
                "STX002",
                call,
                "FTP_TLS without context=: the server's certificate and hostname are not verified (CERT_NONE)",
            )
        if not self._has_prot_p(call):
            self.report("STX003", call, "no prot_p() on this FTP_TLS: files and listings are sent in clear")

    def _bound_target(self, call: ast.Call) -> ast.expr | None:
        parent = self.parents.get(call)
        if isinstance(parent, ast.Assign) and len(parent.targets) == 1:
            return parent.targets[0]
        if isinstance(parent, (ast.AnnAssign, ast.NamedExpr)):
            return parent.target
        if isinstance(parent, ast.withitem):
            return parent.optional_vars
        return None

    def _prot_p_receivers(self, scope: ast.AST) -> list[str]:
        found: list[str] = []
        for node in ast.walk(scope):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "prot_p":
                found.append(ast.unparse(node.func.value))
        return found

    def _escapes(self, name: str, scope: ast.AST) -> bool:
        """Whether a local name is used bare (returned, passed, stored), not only as ``name.method``."""
        for node in ast.walk(scope):
            if isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Load):
                if not isinstance(self.parents.get(node), ast.Attribute):
                    return True
        return False

    def _has_prot_p(self, call: ast.Call) -> bool:
        target = self._bound_target(call)
        parent = self.parents.get(call)
        if target is None:
            if isinstance(parent, ast.Attribute):
                # FTP_TLS(...).login(): chained on a temporary nobody can call prot_p() on later.
                return False
            # Returned, passed on or stored in a container: accept a prot_p() anywhere in the file.
            return bool(self._prot_p_receivers(self.tree))
        text = ast.unparse(target)
        if isinstance(target, ast.Name):
            scope = self._scope(call)
            if text in self._prot_p_receivers(scope):
                return True
            # The object leaves the function (returned, passed on, stored): a prot_p() anywhere
            # in the file may be the one called on it.
            return (
                not isinstance(scope, ast.Module)
                and self._escapes(target.id, scope)
                and bool(self._prot_p_receivers(self.tree))
            )
        if isinstance(target, ast.Attribute):
            # self.ftp = FTP_TLS(...): look in the whole class (or file), on the same attribute.
            scope = self._scope(call)
            while not isinstance(scope, (ast.ClassDef, ast.Module)):
                scope = self._scope(scope)
            attr = target.attr
            return any(r == text or r.endswith(f".{attr}") for r in self._prot_p_receivers(scope))
        return bool(self._prot_p_receivers(self.tree))

    def _ssl_context(self, call: ast.Call, name: str) -> None:
        if name == "ssl.wrap_socket":
            kw = self._kw(call, "cert_reqs")
            if kw is None or self.qualname(kw.value) != "ssl.CERT_REQUIRED":
                self.report("STX043", call, "ssl.wrap_socket() does not verify the certificate or the hostname")
            return
        protocol: ast.AST | None = call.args[0] if call.args else None
        kw = self._kw(call, "protocol")
        if kw is not None:
            protocol = kw.value
        if protocol is not None and self.qualname(protocol) == "ssl.PROTOCOL_TLS_CLIENT":
            return
        if protocol is not None and self.qualname(protocol) == "ssl.PROTOCOL_TLS_SERVER":
            return  # a server-side context: verification of clients is a different question
        target = self._bound_target(call)
        if target is not None and self._sets_cert_required(ast.unparse(target)):
            return
        self.report(
            "STX043",
            call,
            "ssl.SSLContext() without PROTOCOL_TLS_CLIENT starts with CERT_NONE and no hostname check",
        )

    def _sets_cert_required(self, target: str) -> bool:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    if (
                        isinstance(t, ast.Attribute)
                        and t.attr == "verify_mode"
                        and ast.unparse(t.value) == target
                        and self.qualname(node.value) in ("ssl.CERT_REQUIRED", "ssl.VerifyMode.CERT_REQUIRED")
                    ):
                        return True
        return False

    # ------------------------------------------------------------------ assignments, dicts, strings

    def _assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            if isinstance(target, ast.Attribute) and target.attr == "check_hostname" and self._is_false(node.value):
                self.report("STX042", node, "check_hostname = False: the certificate may belong to another host")

    def _dict(self, node: ast.Dict) -> None:
        for key, value in zip(node.keys, node.values, strict=True):
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                continue
            if key.value == "no_host_key_check" and self._truthy(value):
                self.report("STX031", key, "extra no_host_key_check = true: any SSH server is trusted")
            elif key.value == "allow_host_key_change" and self._truthy(value):
                self.report("STX032", key, "extra allow_host_key_change = true: a changed host key is accepted")
            elif key.value == "check_hostname" and self._is_false(value):
                self.report("STX042", key, "check_hostname: False: the certificate may belong to another host")

    def _string(self, node: ast.Constant) -> None:
        if node in self.docstrings:
            return
        text = node.value
        assert isinstance(text, str)
        in_fstring = isinstance(self.parents.get(node), ast.JoinedStr)
        uri = _FTP_URI_RE.search(text) or (in_fstring and _FTP_URI_END_RE.search(text))
        if uri and not self._in_check(node):
            self.report("STX020", node, "ftp:// URI: plain FTP sends the password and the data in clear")
        for key, pattern in _JSON_FLAG_RE.items():
            if pattern.search(text):
                rule_id = "STX031" if key == "no_host_key_check" else "STX032"
                self.report(rule_id, node, f"{key} = true in a connection string or extra: host key not verified")


def _ignored_lines(source: str) -> dict[int, frozenset[str] | None]:
    """Map line -> rule ids silenced there (None: all rules)."""
    ignored: dict[int, frozenset[str] | None] = {}
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return ignored
    for tok in tokens:
        if tok.type != tokenize.COMMENT:
            continue
        match = _IGNORE_RE.search(tok.string)
        if not match:
            continue
        ids = match.group("ids")
        ignored[tok.start[0]] = (
            None if ids is None else frozenset(i.strip().upper() for i in ids.split(",") if i.strip())
        )
    return ignored


def audit_source(source: str, path: str = "<string>") -> list[Finding]:
    """Audit Python source text; ``path`` is only used in the findings."""
    try:
        tree = ast.parse(source, filename=path)
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None) or 1
        return [
            Finding(
                rule=RULES["STX000"],
                message=f"cannot parse: {getattr(exc, 'msg', str(exc))}",
                fix=RULES["STX000"].fix,
                path=path,
                line=line,
                column=(getattr(exc, "offset", None) or 1),
            )
        ]
    findings = _Analyzer(tree, source, path).run()
    ignored = _ignored_lines(source)
    kept: list[Finding] = []
    for finding in findings:
        silenced = ignored.get(finding.line or 0, frozenset())
        if silenced is None or finding.rule.id in (silenced or ()):
            continue
        kept.append(finding)
    return sorted(kept, key=Finding.sort_key)


def audit_file(path: Path, display: str | None = None) -> list[Finding]:
    """Audit one Python file (read as bytes: the encoding cookie is honoured)."""
    shown = display or str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return [
            Finding(
                rule=RULES["STX000"],
                message=f"cannot read: {exc.strerror or exc}",
                fix=RULES["STX000"].fix,
                path=shown,
                line=1,
                column=1,
            )
        ]
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
        source = raw.decode(encoding)
    except (SyntaxError, LookupError, UnicodeDecodeError) as exc:
        return [
            Finding(
                rule=RULES["STX000"],
                message=f"cannot decode: {exc}",
                fix=RULES["STX000"].fix,
                path=shown,
                line=1,
                column=1,
            )
        ]
    return audit_source(source, shown)


def iter_python_files(paths: Sequence[Path]) -> Iterator[Path]:
    """Yield the ``.py`` files named or under the given paths, sorted, each once."""
    seen: set[Path] = set()
    for root in paths:
        candidates: Iterable[Path]
        if root.is_dir():
            found: list[Path] = []
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
                found.extend(Path(dirpath, f) for f in filenames if f.endswith(".py"))
            candidates = sorted(found)
        else:
            candidates = [root]
        for candidate in candidates:
            key = candidate.resolve()
            if key not in seen:
                seen.add(key)
                yield candidate


def display_path(path: Path) -> str:
    """Show a path relative to the working directory when it is under it (POSIX separators)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def audit_paths(paths: Sequence[Path]) -> tuple[list[Finding], int]:
    """Audit every Python file under ``paths``; return the findings and the number of files read."""
    findings: list[Finding] = []
    count = 0
    for file in iter_python_files(paths):
        count += 1
        findings.extend(audit_file(file, display_path(file)))
    return sorted(findings, key=Finding.sort_key), count
