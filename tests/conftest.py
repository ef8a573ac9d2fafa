"""pytest fixtures shared by the test modules: real roostd daemons (see conftest_daemon)."""
from conftest_daemon import fresh_roostd, roostd  # noqa: F401  (fixtures)
