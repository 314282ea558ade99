"""Fixtures of the client tests (defined in setups.py, which the tests import helpers from)."""

from tests.client.setups import demo, fake_server  # noqa: F401
