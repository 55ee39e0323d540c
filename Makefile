# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv if needed and install everything; a stamp makes them fast
# when nothing changed.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CRYPTEN := crypten==0.4.1

# `make package`: a PyInstaller bundle, a .deb and a tarball in packaging/dist/ (packaging/build.sh);
# `make check-package`: installs the .deb in a clean Debian root and runs it (packaging/check.sh).
PACKAGING := pyinstaller==6.22.3 pyinstaller-hooks-contrib==2026.9
PKG_STAMP := $(VENV)/.packaging

.PHONY: demo test test-fast install bench screenshots package check-package clean

# crypten is installed without its declared dependencies: Parley uses none of them. pip
# would then print "ERROR: ... crypten 0.4.1 requires pandas, which is not installed" after
# each later install; that is expected, so pip is told not to, and the note below says it once.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and exactly pinned: pip takes the local CPU build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet --no-deps $(CRYPTEN)
	$(BIN)/python -m pip install --quiet --no-warn-conflicts -e '.[test]'
	@echo "note: $(CRYPTEN) is installed without its declared dependencies (pandas, sklearn," \
	      "tensorboard, torchvision, future), which Parley does not use; 'pip check' lists them."
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/parley demo

# Two pytest workers (pytest-xdist): 825 tests in 12 min 50 s here, against 18 min in one.
# Many tests wait on timers (mDNS, a frozen party's detection, handshake timeouts) while the
# other worker computes. TEST_WORKERS=0 runs them in this one process.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

# Only the tests that start no process (about 530, in about 90 s): for the edit-test loop.
# make test runs these and the ones marked real.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not real"

bench: $(STAMP)
	$(BIN)/parley bench

# The app's views on the demo's data, as PNG files under docs/ (rendered offscreen).
screenshots: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m gui.screenshots docs

$(PKG_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet $(PACKAGING)
	touch $(PKG_STAMP)

package: $(PKG_STAMP)
	PY=$(BIN)/python sh packaging/build.sh

check-package: package
	bash packaging/check.sh

clean:
	rm -rf $(VENV) build *.egg-info packaging/build packaging/dist
