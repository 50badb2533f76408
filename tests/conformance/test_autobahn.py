"""RFC 6455 conformance: the Autobahn|Testsuite fuzzing client against plezi's echo server.

The suite (``autobahntestsuite``) runs on Python 2.7 only. This test finds a Python 2.7
(``$PLEZI_PYTHON27``, pyenv's ``versions/2.7*``, or ``python2.7``/``python2`` on ``PATH``),
installs ``autobahntestsuite==25.10.1`` for it once into ``.cache/autobahn/`` (pinned by
``constraints-py27.txt``), starts ``echo_server.py`` in a subprocess and runs
``wstest -m fuzzingclient`` on both of its routes: ``/`` (sync ``on_message``) and ``/async``
(``async def on_message``). Cases 1.* to 7.*, 9.* (all sizes, up to 16 MiB messages) and 10.*,
and permessage-deflate (12.*: the client's usual offers; 13.*: every window size and context
takeover request): in CI, four cases of each of their twelve sub-groups (16 and 256 bytes, just
under and over the compression threshold; 4 KiB; 8 KiB in 256-byte fragments), which adds about
two and a half minutes; the full 216 cases (23 minutes on a busy two-core machine, most of it
in the Python 2 client; all OK for both agents on 2026-12-04) run with
``PLEZI_AUTOBAHN_FULL=1``::

    PLEZI_AUTOBAHN_FULL=1 .venv/bin/python -m pytest -p no:cacheprovider tests/conformance -s

Any FAILED, UNCLEAN or WRONG CODE result fails the test; so do a missing case, a wstest crash,
and an ``ERROR`` or traceback in the server's log. NON-STRICT and INFORMATIONAL results are
listed, not failed. The HTML report's path is printed (and recorded as the ``autobahn_report``
property). It cannot be skipped by a missing Python 2.7 or a failed install: that fails too.
For a quick local run, deselect it: ``pytest -m "not autobahn"``.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import ROOT, UNIT, Script

#: The whole permessage-deflate set (``PLEZI_AUTOBAHN_FULL=1``), not CI's subset.
FULL = bool(os.environ.get("PLEZI_AUTOBAHN_FULL"))

pytestmark = [pytest.mark.autobahn, pytest.mark.timeout(4800 if FULL else 1200)]

AUTOBAHN = "autobahntestsuite==25.10.1"
HERE = Path(__file__).resolve().parent
CONSTRAINTS = HERE / "constraints-py27.txt"
ECHO_SERVER = HERE / "echo_server.py"
CACHE = Path(os.environ.get("PLEZI_AUTOBAHN_CACHE", ROOT / ".cache" / "autobahn"))

#: Every case group (there is no group 8), permessage-deflate's (12.*, 13.*) as a subset in CI:
#: four cases of each sub-group (see the module docstring); all of them with PLEZI_AUTOBAHN_FULL.
_DEFLATE_GROUPS = [f"12.{g}" for g in range(1, 6)] + [f"13.{g}" for g in range(1, 8)]
DEFLATE_CASES = (
    ["12.*", "13.*"]
    if FULL
    else [f"{group}.{case}" for group in _DEFLATE_GROUPS for case in (1, 3, 5, 11)]
)
CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*", *DEFLATE_CASES]
#: The echo server's limits: 9.1.6/9.2.6 send 16 MiB messages, and each echo must fit the
#: outgoing buffer cap (a single message larger than the cap is taken for a slow consumer).
SERVER_FLAGS = ["--max-msg", "16m", "--max-outgoing", "64m"]
AGENTS = {"plezi": "/", "plezi-async": "/async"}
BAD = frozenset({"FAILED", "UNCLEAN", "WRONG CODE"})

#: Loads the suite from the install directory only (``-S``: not the interpreter's own
#: site-packages; ``-E``: no PYTHONPATH from the Python 3 environment running the tests).
WSTEST = (
    "import site, sys; site.addsitedir(sys.argv.pop(1)); sys.argv[0] = 'wstest'; "
    "from autobahntestsuite.wstest import run; run()"
)


def _is_python27(candidate: str) -> bool:
    try:
        out = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2] == (2, 7))"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == b"True"


def _candidates() -> Iterator[str]:
    if os.environ.get("PLEZI_PYTHON27"):
        yield os.environ["PLEZI_PYTHON27"]
    roots = []
    pyenv = shutil.which("pyenv")
    if pyenv:
        out = subprocess.run([pyenv, "root"], capture_output=True, timeout=30, check=False)
        if out.returncode == 0 and out.stdout.strip():
            roots.append(Path(out.stdout.decode().strip()))
    roots.append(Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")))
    for root in roots:
        for version in sorted((root / "versions").glob("2.7*"), reverse=True):
            yield str(version / "bin" / "python2.7")
    for name in ("python2.7", "python2"):
        found = shutil.which(name)
        if found:
            yield found


def find_python27() -> str:
    """A working Python 2.7 interpreter, or a test failure that says where it looked."""
    tried = []
    for candidate in _candidates():
        if _is_python27(candidate):
            return candidate
        tried.append(candidate)
    pytest.fail(
        "the Autobahn|Testsuite needs Python 2.7 and none was found (tried "
        f"{tried or 'nothing'}): install it (pyenv install 2.7.18) or set $PLEZI_PYTHON27",
        pytrace=False,
    )


def install_autobahn(python27: str) -> Path:
    """Install the suite for ``python27`` into the cache, once per pinned set of versions."""
    digest = hashlib.sha256(CONSTRAINTS.read_bytes() + AUTOBAHN.encode()).hexdigest()[:12]
    target = CACHE / f"site-{digest}"
    if (target / ".complete").exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = CACHE / f"partial-{digest}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    cmd = [
        python27,
        "-E",
        "-s",
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-warn-script-location",
        "--target",
        str(partial),
        "-c",
        str(CONSTRAINTS),
        AUTOBAHN,
    ]
    started = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, timeout=900, check=False)
    if out.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        pytest.fail(
            f"installing {AUTOBAHN} for {python27} failed ({' '.join(cmd)}):\n"
            + out.stdout.decode(errors="replace")[-3000:]
            + out.stderr.decode(errors="replace")[-3000:],
            pytrace=False,
        )
    (partial / ".complete").write_text(f"{AUTOBAHN} in {time.monotonic() - started:.0f}s\n")
    try:
        partial.rename(target)
    except OSError:  # another run finished first: use its copy
        shutil.rmtree(partial, ignore_errors=True)
    return target


def run_fuzzing_client(python27: str, site: Path, ws_url: str, outdir: Path) -> str:
    """Run ``wstest -m fuzzingclient`` against both agents; returns its output."""
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    spec = {
        "outdir": str(outdir),
        "servers": [{"agent": agent, "url": ws_url + path} for agent, path in AGENTS.items()],
        "cases": CASES,
        "exclude-cases": [],
        "exclude-agent-cases": {},
    }
    spec_path = outdir / "fuzzingclient.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    cmd = [python27, "-E", "-S", "-c", WSTEST, str(site), "-m", "fuzzingclient"]
    cmd += ["-s", str(spec_path)]
    try:
        out = subprocess.run(
            cmd,
            capture_output=True,
            timeout=(3600 if FULL else 900) * UNIT,
            check=False,
            cwd=str(outdir),
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"wstest did not finish in time: {exc}", pytrace=False)
    text = out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")
    (outdir / "wstest.log").write_text(text)
    assert out.returncode == 0, f"wstest exited with {out.returncode}:\n{text[-3000:]}"
    return text


def _group(case: str) -> int:
    return int(case.split(".", 1)[0])


def summarize(results: dict[str, dict[str, Any]]) -> tuple[str, list[str]]:
    """A per-agent, per-group table of outcomes, and the lines for every bad case."""
    lines: list[str] = []
    bad: list[str] = []
    for agent, cases in results.items():
        per_group: dict[int, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        for case, result in cases.items():
            per_group[_group(case)][result["behavior"]] += 1
            if result["behavior"] in BAD or result["behaviorClose"] in BAD:
                bad.append(
                    f"{agent} {case}: {result['behavior']} / close {result['behaviorClose']} "
                    f"(close code {result.get('remoteCloseCode')}, "
                    f"report {result.get('reportfile')})"
                )
        lines.append(f"{agent}: {len(cases)} cases")
        for group in sorted(per_group):
            counts = ", ".join(f"{k} {v}" for k, v in sorted(per_group[group].items()))
            lines.append(f"  {group}.*: {counts}")
        notes = sorted(
            (case for case, r in cases.items() if r["behavior"] not in ("OK", *BAD)),
            key=lambda c: tuple(map(int, c.split("."))),
        )
        if notes:
            lines.append(
                "  not OK, not failed: " + ", ".join(f"{c} ({cases[c]['behavior']})" for c in notes)
            )
    return "\n".join(lines), bad


def test_autobahn_fuzzingclient(
    script: Callable[..., Script],
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    python27 = find_python27()
    site = install_autobahn(python27)
    server = script(ECHO_SERVER, *SERVER_FLAGS)
    outdir = CACHE / "reports" / "latest"
    started = time.monotonic()
    output = run_fuzzing_client(python27, site, server.ws_url, outdir)
    elapsed = time.monotonic() - started
    code, server_log = server.stop()

    index = outdir / "index.json"
    assert index.exists(), f"wstest wrote no index.json:\n{output[-3000:]}"
    results: dict[str, dict[str, Any]] = json.loads(index.read_text())
    table, bad = summarize(results)
    record_property("autobahn_report", str(outdir / "index.html"))
    with capsys.disabled():
        print(f"\nAutobahn|Testsuite ({elapsed:.0f}s): {outdir / 'index.html'}\n{table}")

    # Every case ran for both agents: a crash or a dropped agent must not pass as success.
    assert set(results) == set(AGENTS), f"agents in the report: {sorted(results)}"
    planned = [line for line in output.splitlines() if line.startswith("Ok, will run")]
    assert planned, f"unexpected wstest output:\n{output[-3000:]}"
    count = int(planned[0].split()[3])
    for agent, cases in results.items():
        assert len(cases) == count, f"{agent}: {len(cases)} results for {count} cases"
        assert {_group(c) for c in cases} == {int(g.split(".")[0]) for g in CASES}
        # permessage-deflate was negotiated: a declined offer would pass 12.* as UNIMPLEMENTED
        assert not [c for c, r in cases.items() if r["behavior"] == "UNIMPLEMENTED"]
    assert not bad, "Autobahn failures:\n" + "\n".join(bad) + f"\n\nreport: {outdir}"

    # The server survived all of it cleanly: no exception, a graceful exit.
    assert code == 0, f"the echo server exited with {code}:\n{server_log[-3000:]}"
    for marker in ("Traceback", " ERROR "):
        assert marker not in server_log, f"{marker!r} in the server log:\n{server_log[-5000:]}"


def test_summarize_flags_every_bad_outcome() -> None:
    """The verdict logic itself can fail: each bad outcome, in either column, is reported."""
    ok = {"behavior": "OK", "behaviorClose": "OK"}
    results = {
        "a": {
            "1.1.1": ok,
            "6.4.3": {"behavior": "NON-STRICT", "behaviorClose": "OK"},
            "7.1.5": {"behavior": "FAILED", "behaviorClose": "WRONG CODE"},
            "7.1.6": {"behavior": "INFORMATIONAL", "behaviorClose": "INFORMATIONAL"},
        },
        "b": {
            "5.1": {"behavior": "OK", "behaviorClose": "UNCLEAN"},
            "9.1.1": {"behavior": "UNCLEAN", "behaviorClose": "OK"},
            "10.1.1": ok,
        },
    }
    table, bad = summarize(results)
    assert [line.split(":")[0] for line in bad] == ["a 7.1.5", "b 5.1", "b 9.1.1"]
    assert "6.4.3 (NON-STRICT)" in table and "7.1.6 (INFORMATIONAL)" in table
    assert "  7.*: FAILED 1, INFORMATIONAL 1" in table


if __name__ == "__main__":  # pragma: no cover - a manual run prints the table
    sys.exit(pytest.main([__file__, "-s", "-p", "no:cacheprovider"]))
