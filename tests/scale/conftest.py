import pytest


@pytest.fixture(scope="session")
def shelf(tmp_path_factory):
    """A folder of three small synthetic books (about 60 kB each)."""
    from estella.bench.preparing import synthetic_corpus
    return synthetic_corpus(str(tmp_path_factory.mktemp("shelf")), 0.18, 3)
