"""Ray Serve fixtures. No TensorFlow: these tests run in the TensorFlow-free virtualenv, with the [ray] extra."""

import pytest


@pytest.fixture(scope="session")
def serve_export(real_export):
    return real_export
