# Two commands do everything on a fresh machine (see README.md):
#   make demo   - embedded FTPS + SFTP servers, the example DAG through Airflow, the upload records
#   make test   - the whole test suite (unit, contract, security, interop, airflow, ui tiers)
# Fast tiers alone: make test-fast
# The Airflow 3.1 floor: make test-compat (a second venv, .venv-compat, from constraints-airflow-3.1.txt)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-fast test-compat system-deps venv lint typecheck bench bench-smoke clean constraints \
	constraints-compat

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

# The oldest supported Airflow minor (3.1), pinned like constraints.txt, in its own venv.
COMPAT_VENV        ?= .venv-compat
COMPAT_PY          := $(COMPAT_VENV)/bin/python
COMPAT_STAMP       := $(COMPAT_VENV)/.installed
COMPAT_CONSTRAINTS := constraints-airflow-3.1.txt

$(COMPAT_STAMP): pyproject.toml $(COMPAT_CONSTRAINTS)
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_PY) -m pip install --quiet --upgrade pip
	$(COMPAT_PY) -m pip install --quiet -c $(COMPAT_CONSTRAINTS) -e ".[test]"
	touch $(COMPAT_STAMP)

# Debian packages the interop, UI and benchmark tiers use (vsftpd, OpenSSH, chromium, lftp, curl).
# Installed when running as root with apt; otherwise those tiers skip locally (never under CI=true).
system-deps:
	bash scripts/install-system-deps.sh

demo: $(STAMP)
	$(PY) -m airflow_secure_transfer.demo

test: $(STAMP) system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not interop and not slow and not airflow and not ui" $(PYTEST_ARGS)

# On Airflow 3.1: the fast tier and the whole Airflow tier, then the contract suite's interop and slow
# cases and the UI tier's "add + Test a Secure SFTP connection" against a 3.1 api-server in Chromium.
COMPAT_UI_CASE := tests/ui/test_ui_connections.py::test_sftp_add_and_test_succeeds

test-compat: $(COMPAT_STAMP) system-deps
	$(COMPAT_PY) -m pytest -m "not ui and not scale and (airflow or not (interop or slow))" $(PYTEST_ARGS)
	$(COMPAT_PY) -m pytest -m "interop or slow or ui" tests/contract $(COMPAT_UI_CASE) $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check airflow_secure_transfer tests example_dags bench
	$(VENV)/bin/mypy

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# --- benchmarks (bench/run.py, BENCHMARKS.md) -------------------------------------------------
# make bench        full run (< 55 min on 2 idle cores, of which the "wan" group, 50/150 ms round trips through
#                   bench/delay_proxy.py, uploads and downloads, is ~33 min): bench/results/<timestamp>/ + BENCHMARKS.md tables
# make bench-smoke  tiny sizes, 1 repetition (< 2 min; CI): fails only if a case errors unexpectedly
# Both start their own loopback servers (sshd, vsftpd, pyftpdlib) from tests/servers; sshd/vsftpd need
# root and the Debian packages (system-deps installs openssh-client/-server, vsftpd, curl, lftp).
# Extra options: make bench BENCH_ARGS="--size-mib 64 --reps 3"   (see .venv/bin/python bench/run.py -h)
#                make bench BENCH_ARGS="--groups wan --wan-rtts 50 --wan-rate-mbit 200"   (the WAN cases only)
#                make bench BENCH_ARGS="--groups dl_sftp_large,dl_ftps_large,dl_small"   (the downloads only, #13)
BENCH_ARGS ?=

bench: $(STAMP) system-deps
	$(PY) bench/run.py $(BENCH_ARGS)

bench-smoke: $(STAMP) system-deps
	$(PY) bench/run.py --smoke $(BENCH_ARGS)

# Regenerate the pinned versions from the current venv (after changing dependencies).
constraints: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e ' > constraints.txt

constraints-compat: $(COMPAT_STAMP)
	{ echo "# Pinned versions for the Airflow 3.1 floor (make test-compat; .ci/run). Regenerate with: make constraints-compat"; \
	  $(COMPAT_PY) -m pip freeze --exclude-editable | grep -v '^-e '; } > $(COMPAT_CONSTRAINTS)

clean:
	rm -rf $(VENV) $(COMPAT_VENV) .pytest_cache .mypy_cache .ruff_cache test-artifacts .demo
