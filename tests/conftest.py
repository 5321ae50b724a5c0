"""Shared fixtures. Tests never touch the network: hub access is off, W&B is disabled, and
tiny models are built from config once per session."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest worker per core (pytest-xdist): each worker, and every process a test
    # launches, then computes on one thread. Two workers with two torch threads each made the suite slower
    # than one process (480 s vs 356 s): OpenMP threads spin-wait for a core another worker holds.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _library_log_handler_bound_outside_any_test():
    """transformers binds its library log handler to whatever ``sys.stderr`` is when it first logs. Bound inside a
    test that captures stderr (``capsys``), the handler keeps that test's stream, which is closed after it, and a
    later warning from transformers then writes "--- Logging error ---" and a traceback into another test's captured
    stderr, failing its check for tracebacks. Binding it here puts it on the session's stream."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # the extras that pull transformers are not installed: nothing to bind
        yield
        return
    hf_logging.get_logger("transformers")
    yield


@pytest.fixture(scope="session", autouse=True)
def _launched_processes_write_scratch_under_pytest(tmp_path_factory):
    """Processes the tests launch (``accelerate launch``, whose torch elastic agent makes a ``torchelastic_*``
    directory per run) write their scratch files under TMPDIR; pointed at this session's pytest directory, which
    pytest prunes, a test run leaves nothing behind in /tmp. The test process itself keeps the directory tempfile
    cached at import; only launched processes read the new value. The paths of the sockets those processes make
    there stay under Linux's 108 characters (about 86 with pytest-xdist's worker directories)."""
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp_path_factory.mktemp("launched"))
    yield
    if before is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = before


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    """Directory of a saved tiny pipeline per family, built once per session: ``tiny_pipeline_dir("sd")``."""
    from pluralign.tiny import save_tiny_pipeline

    cache: dict[str, object] = {}

    def get(family: str):
        if family not in cache:
            cache[family] = save_tiny_pipeline(family, tmp_path_factory.mktemp(f"tiny-{family}"))
        return cache[family]

    return get


@pytest.fixture(scope="session")
def chromium():
    """A Chromium executable for Playwright (from pip; its own browser download cannot run offline): Debian's
    ``chromium`` (``make test`` installs it as root), or PLURALIGN_CHROMIUM. No browser is a failure that says how to get
    one, never a silent skip: the browser tests are the only check of what a user sees."""
    import shutil

    path = os.environ.get("PLURALIGN_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if not path or not os.path.exists(path):
        pytest.fail("no Chromium for the browser tests: install it (as root: apt-get update && apt-get install -y "
                    "chromium) or set PLURALIGN_CHROMIUM to a Chrome/Chromium executable")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[dev]' (it is a dev dependency)")
    return path


def pytest_collection_modifyitems(config, items):
    """Slow tests first (longest-first packing): `make test`'s workers then finish on short tests at about
    the same time, instead of one idling while the other runs a late half-minute test."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
