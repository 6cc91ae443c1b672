"""The audit against the DAG corpus: exact findings (rule id + line) per file.

Every corpus file states what must be found in ``# expect: STXnnn[, STXnnn]`` comments
on the reported lines; a file without such comments must produce no finding (the
look-alikes, ``la_*.py``). Comments are invisible to the audit (it reads the AST), so
the expectations cannot influence it.
"""

from __future__ import annotations

import io
import re
import tokenize
from collections import Counter
from pathlib import Path

import pytest

from airflow_secure_transfer.cli.audit import audit_file, audit_paths
from airflow_secure_transfer.cli.rules import RULES

CORPUS = Path(__file__).parent / "corpus"
CORPUS_FILES = sorted(CORPUS.glob("*.py"))
_EXPECT = re.compile(r"#\s*expect:\s*(?P<ids>STX\d{3}(?:\s*,\s*STX\d{3})*)")


def expected_findings(path: Path) -> Counter[tuple[str, int]]:
    expected: Counter[tuple[str, int]] = Counter()
    source = path.read_text(encoding="utf-8")
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            match = _EXPECT.search(tok.string)
            if match:
                for rule_id in re.split(r"\s*,\s*", match.group("ids")):
                    expected[(rule_id, tok.start[0])] += 1
    return expected


def actual_findings(path: Path) -> Counter[tuple[str, int]]:
    return Counter((f.rule.id, f.line or 0) for f in audit_file(path))


def test_corpus_is_there() -> None:
    assert len(CORPUS_FILES) >= 10
    assert any(p.name.startswith("la_") for p in CORPUS_FILES)
    assert any(p.name.startswith("tp_") for p in CORPUS_FILES)


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_exact_findings(path: Path) -> None:
    expected = expected_findings(path)
    actual = actual_findings(path)
    missed = sorted((expected - actual).elements())
    spurious = sorted((actual - expected).elements())
    assert not missed and not spurious, f"{path.name}: missed (FN) {missed}, spurious (FP) {spurious}"
    if path.name.startswith("la_"):
        assert not actual, f"look-alike file {path.name} must produce no finding"
    else:
        assert actual, f"true-positive file {path.name} must produce findings"


def test_every_code_rule_has_a_true_positive() -> None:
    covered = set()
    for path in CORPUS_FILES:
        covered |= {rule_id for rule_id, _ in expected_findings(path)}
    code_rules = {r for r in RULES if r.startswith("STX0") and r != "STX000"}
    assert code_rules - covered == set(), f"rules without a true positive in the corpus: {code_rules - covered}"


def test_corpus_totals(capsys: pytest.CaptureFixture[str]) -> None:
    """TP/FP/FN over the whole corpus (printed with -s; asserted exact)."""
    findings, files = audit_paths([CORPUS])
    assert files == len(CORPUS_FILES)
    expected: Counter[tuple[str, str, int]] = Counter()
    for path in CORPUS_FILES:
        for (rule_id, line), n in expected_findings(path).items():
            expected[(path.name, rule_id, line)] += n
    actual = Counter((Path(f.path or "").name, f.rule.id, f.line or 0) for f in findings)
    tp = sum((expected & actual).values())
    fp = sum((actual - expected).values())
    fn = sum((expected - actual).values())
    with capsys.disabled():
        print(f"\naudit corpus: {files} files, {tp} true positives, {fp} false positives, {fn} false negatives")
    assert (fp, fn) == (0, 0)
    assert tp == sum(expected.values()) >= 60


def test_columns_are_one_based_characters(tmp_path: Path) -> None:
    path = tmp_path / "cols.py"
    path.write_text('x = "é"; y = "ftp://h/"\nimport ftplib\nftplib.FTP()\n', encoding="utf-8")
    findings = audit_file(path)
    assert [(f.rule.id, f.line, f.column) for f in findings] == [("STX020", 1, 14), ("STX001", 3, 1)]
    assert findings[1].end_line == 3 and findings[1].end_column == 11


def test_unparsable_file_is_a_finding(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("def broken(:\n    pass\n", encoding="utf-8")
    (finding,) = audit_file(path)
    assert finding.rule.id == "STX000" and finding.line == 1
    assert finding.severity.value == "medium"


def test_undecodable_file_is_a_finding(tmp_path: Path) -> None:
    path = tmp_path / "latin.py"
    path.write_bytes(b'x = "\xe9"\n')  # not UTF-8 and no coding cookie
    (finding,) = audit_file(path)
    assert finding.rule.id == "STX000"


def test_coding_cookie_is_honoured(tmp_path: Path) -> None:
    path = tmp_path / "latin.py"
    path.write_bytes(b'# -*- coding: latin-1 -*-\nx = "\xe9 ftp://h/"\n')
    assert [(f.rule.id, f.line) for f in audit_file(path)] == [("STX020", 2)]


def test_files_are_never_imported(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    dag = tmp_path / "dag.py"
    dag.write_text(f"open({str(marker)!r}, 'w').write('x')\nimport ftplib\nftplib.FTP()\n", encoding="utf-8")
    findings, files = audit_paths([tmp_path])
    assert files == 1 and [f.rule.id for f in findings] == ["STX001"]
    assert not marker.exists()


def test_directory_walk_skips_caches_and_hidden(tmp_path: Path) -> None:
    for rel in ("a.py", "sub/b.py", "__pycache__/c.py", ".hidden/d.py", "notes.txt"):
        target = tmp_path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text('U = "ftp://h/"\n', encoding="utf-8")
    findings, files = audit_paths([tmp_path, tmp_path / "a.py"])
    assert files == 2
    assert sorted(Path(f.path or "").name for f in findings) == ["a.py", "b.py"]
